"""SGLangPool: desired children and observed status, as a pure function of what the operator sees.

Readiness: the pool is Ready when at least one server passes its readiness probe and the router
(if enabled) is available, so a RolloutJob can start while the rest of the pool is still
loading its model; `ServersReady` tells whether every replica is up and on the current spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from rollout_operator.builders import pool as build
from rollout_operator.builders.common import Manifest
from rollout_operator.conditions import ConditionSet
from rollout_operator.reconcile.common import Event, condition, to_int
from rollout_operator.reconcile.pods import summarize
from rollout_operator.settings import OperatorConfig


@dataclass
class PoolObserved:
    body: dict[str, Any]
    server: dict[str, Any] | None = None  # the server Deployment
    router: dict[str, Any] | None = None  # the router Deployment
    pods: list[dict[str, Any]] = field(default_factory=list)  # server and router pods
    now: datetime | None = None


@dataclass
class PoolPlan:
    apply: list[Manifest] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)  # (apiVersion, kind, name)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def _deploy_counts(deploy: dict[str, Any] | None) -> dict[str, int]:
    st = (deploy or {}).get("status") or {}
    return {k: to_int(st.get(k), 0) or 0 for k in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas")}


def _rolled_out(deploy: dict[str, Any] | None) -> bool:
    if not deploy:
        return False
    gen = (deploy.get("metadata") or {}).get("generation")
    observed = (deploy.get("status") or {}).get("observedGeneration")
    return gen is None or (observed is not None and observed >= gen)


def decide_pool(obs: PoolObserved, config: OperatorConfig) -> PoolPlan:
    body = obs.body
    meta = body["metadata"]
    name = meta["name"]
    old = body.get("status") or {}
    now = obs.now or datetime.now().astimezone()
    conds = ConditionSet(old.get("conditions"), meta.get("generation"), now)
    plan = PoolPlan()
    try:
        spec = build.parse(body).spec
        plan.apply, plan.delete = build.children(body, config)
    except (ValidationError, ValueError) as exc:
        message = f"invalid spec: {exc}"
        if conds.set("Ready", False, "InvalidSpec", message) or old.get("message") != message:
            plan.events.append(Event("Warning", "InvalidSpec", message))
        plan.status = {**old, "phase": "Failed", "message": message, "observedGeneration": meta.get("generation"),
                       "conditions": conds.as_list()}
        return plan

    servers = _deploy_counts(obs.server)
    desired = spec.replicas
    ready = servers["readyReplicas"]
    server_pods = [p for p in obs.pods if (p.get("metadata") or {}).get("labels", {}).get("kuberollout.io/role") == "server"]
    router_pods = [p for p in obs.pods if (p.get("metadata") or {}).get("labels", {}).get("kuberollout.io/role") == "router"]

    # ServersReady: every replica ready and on the current spec.
    failure = condition(obs.server, "ReplicaFailure")
    problem = summarize(server_pods)
    if desired == 0:
        conds.set("ServersReady", False, "ScaledToZero", "spec.replicas is 0")
    elif obs.server is None:
        conds.set("ServersReady", False, "Creating", "creating the server Deployment")
    elif ready >= desired and servers["updatedReplicas"] >= desired and _rolled_out(obs.server):
        conds.set("ServersReady", True, "AllServersReady", f"{ready}/{desired} servers ready")
    else:
        detail = (failure or {}).get("message") if failure and failure.get("status") == "True" else problem
        reason = "ServersProgressing" if ready else "NoServerReady"
        conds.set("ServersReady", False, reason, f"{ready}/{desired} servers ready" + (f"; {detail}" if detail else ""))

    # RouterReady.
    if not spec.router.enabled:
        conds.set("RouterReady", True, "RouterDisabled", "no router: the endpoint is the headless server Service")
    elif spec.router.replicas == 0:
        conds.set("RouterReady", False, "ScaledToZero", "spec.router.replicas is 0")
    elif _deploy_counts(obs.router)["availableReplicas"] >= 1:
        conds.set("RouterReady", True, "RouterAvailable", "the router is available")
    else:
        detail = summarize(router_pods)
        conds.set("RouterReady", False, "RouterNotAvailable",
                  "waiting for the router to become available" + (f"; {detail}" if detail else ""))

    endpoint = build.endpoint(body, spec)
    if ready >= 1 and conds.is_true("RouterReady"):
        became = conds.set("Ready", True, "PoolReady", f"{ready}/{desired} servers ready behind {endpoint}")
        phase, message = "Ready", ""
        if became:
            plan.events.append(Event("Normal", "PoolReady", f"{ready}/{desired} servers ready; endpoint {endpoint}"))
    else:
        why = conds.get("ServersReady") if ready < 1 else conds.get("RouterReady")
        assert why is not None
        was_ready = conds.is_true("Ready")
        conds.set("Ready", False, why["reason"], why.get("message") or "")
        phase, message = "Pending", str(why.get("message") or "")
        if was_ready:
            plan.events.append(Event("Warning", "PoolNotReady", why.get("message") or why["reason"]))

    plan.status = {
        "phase": phase,
        "replicas": servers["replicas"],
        "readyReplicas": ready,
        "availableReplicas": servers["availableReplicas"],
        "updatedReplicas": servers["updatedReplicas"],
        "endpoint": endpoint,
        "selector": build.selector_string(name),
        "observedGeneration": meta.get("generation"),
        "conditions": conds.as_list(),
    }
    if message:
        plan.status["message"] = message
    return plan
