"""Where an SGLangPool's status is decided: desired children and readiness, from what the operator sees.

The pool's phases, condition types and reasons are the enums of `api/sglangpool_status.py`
(which explains when a pool is Ready); this module is the only place that sets them. Each
condition has its own function below, and `decide_pool` combines them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from rollout_operator.api.common import validation_message
from rollout_operator.api.sglangpool_status import PoolConditionType, PoolPhase, PoolReason, SGLangPoolStatus
from rollout_operator.api.sglangpool_types import SGLangPool
from rollout_operator.builders import sglangpool as build
from rollout_operator.builders.common import Manifest
from rollout_operator.builders.field_routes import Route, router_routes, server_routes
from rollout_operator.constants import LABEL_POOL_ROLE
from rollout_operator.reconcile.common import Event, condition, to_int
from rollout_operator.reconcile.conditions import ConditionSet
from rollout_operator.reconcile.policy import pool_refusal
from rollout_operator.reconcile.pods import summarize
from rollout_operator.reconcile.rejection import Rejection, explain
from rollout_operator.reconcile.sglangpool_weights import GatePatch, SyncOrder, WeightsObserved, decide_weights
from rollout_operator.settings import OperatorConfig


@dataclass
class PoolObserved:
    """One SGLangPool as the operator sees it (slim dicts, as kept in kopf's indexes)."""

    body: dict[str, Any]
    server: dict[str, Any] | None = None  # the server Deployment
    router: dict[str, Any] | None = None  # the router Deployment
    pods: list[dict[str, Any]] = field(default_factory=list)  # server and router pods
    now: datetime | None = None
    rejection: Rejection | None = None  # the API server's last refusal of a child
    weights: WeightsObserved = field(default_factory=WeightsObserved)  # what the weight syncer reported

    def pods_of(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_POOL_ROLE) == role]


@dataclass
class PoolPlan:
    """What the controller does for one SGLangPool: apply, delete, write status, post events."""

    apply: list[Manifest] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)  # (apiVersion, kind, name)
    status: SGLangPoolStatus = field(default_factory=SGLangPoolStatus)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    # Live weights (reconcile/sglangpool_weights.py): a background sync to start, readiness gates to set.
    weights_sync: SyncOrder | None = None
    gates: list[GatePatch] = field(default_factory=list)


def _deploy_counts(deploy: dict[str, Any] | None) -> dict[str, int]:
    st = (deploy or {}).get("status") or {}
    return {k: to_int(st.get(k), 0) or 0 for k in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas")}


def _rolled_out(deploy: dict[str, Any] | None) -> bool:
    if not deploy:
        return False
    gen = (deploy.get("metadata") or {}).get("generation")
    observed = (deploy.get("status") or {}).get("observedGeneration")
    return gen is None or (observed is not None and observed >= gen)


def servers_ready(conds: ConditionSet, pool: SGLangPool, obs: PoolObserved, servers: dict[str, int]) -> None:
    """ServersReady: every replica ready and on the current spec."""
    desired, ready = pool.spec.replicas, servers["readyReplicas"]
    failure = condition(obs.server, "ReplicaFailure")
    problem = summarize(obs.pods_of("server"))
    if desired == 0:
        conds.set(PoolConditionType.SERVERS_READY, False, PoolReason.SCALED_TO_ZERO, "spec.replicas is 0")
    elif obs.server is None:
        conds.set(PoolConditionType.SERVERS_READY, False, PoolReason.CREATING, "creating the server Deployment")
    elif ready >= desired and servers["updatedReplicas"] >= desired and _rolled_out(obs.server):
        conds.set(PoolConditionType.SERVERS_READY, True, PoolReason.ALL_SERVERS_READY,
                  f"{ready}/{desired} servers ready")
    else:
        detail = (failure or {}).get("message") if failure and failure.get("status") == "True" else problem
        reason = PoolReason.SERVERS_PROGRESSING if ready else PoolReason.NO_SERVER_READY
        conds.set(PoolConditionType.SERVERS_READY, False, reason,
                  f"{ready}/{desired} servers ready" + (f"; {detail}" if detail else ""))


def router_ready(conds: ConditionSet, pool: SGLangPool, obs: PoolObserved) -> None:
    """RouterReady: the router is available (or there is none)."""
    router = pool.spec.router
    if not router.enabled:
        conds.set(PoolConditionType.ROUTER_READY, True, PoolReason.ROUTER_DISABLED,
                  "no router: the endpoint is the headless server Service")
    elif router.replicas == 0:
        conds.set(PoolConditionType.ROUTER_READY, False, PoolReason.SCALED_TO_ZERO, "spec.router.replicas is 0")
    elif _deploy_counts(obs.router)["availableReplicas"] >= 1:
        conds.set(PoolConditionType.ROUTER_READY, True, PoolReason.ROUTER_AVAILABLE, "the router is available")
    else:
        detail = summarize(obs.pods_of("router"))
        conds.set(PoolConditionType.ROUTER_READY, False, PoolReason.ROUTER_NOT_AVAILABLE,
                  "waiting for the router to become available" + (f"; {detail}" if detail else ""))


def ready(conds: ConditionSet, pool: SGLangPool, servers: dict[str, int], events: list[Event]
          ) -> tuple[PoolPhase, str]:
    """Ready (and the phase): one server ready behind an available router; else why not."""
    desired, ready_servers = pool.spec.replicas, servers["readyReplicas"]
    endpoint = build.endpoint(pool)
    if ready_servers >= 1 and conds.is_true(PoolConditionType.ROUTER_READY):
        became = conds.set(PoolConditionType.READY, True, PoolReason.POOL_READY,
                           f"{ready_servers}/{desired} servers ready behind {endpoint}")
        if became:
            events.append(Event("Normal", PoolReason.POOL_READY,
                                f"{ready_servers}/{desired} servers ready; endpoint {endpoint}"))
        return PoolPhase.READY, ""
    why = conds.get(PoolConditionType.SERVERS_READY if ready_servers < 1 else PoolConditionType.ROUTER_READY)
    assert why is not None and why.reason is not None
    was_ready = conds.is_true(PoolConditionType.READY)
    conds.set(PoolConditionType.READY, False, why.reason, why.message or "")
    if was_ready:
        events.append(Event("Warning", PoolReason.POOL_NOT_READY, why.message or why.reason))
    return PoolPhase.PENDING, why.message or ""


def refused(pool: SGLangPool, obs: PoolObserved, config: OperatorConfig, apply: list[Manifest]
            ) -> tuple[PoolConditionType, PoolReason, str] | None:
    """Admitted / ConfigValid: the pod policy's refusal, or the API server's of this generation's child.

    Either way nothing more is created for this generation, and the message names the spec field
    (the API server's path in the child, mapped back through `builders/field_routes.py`).
    """
    refusal = pool_refusal(pool, config.policy)
    if refusal:
        return PoolConditionType.ADMITTED, PoolReason.NOT_ALLOWED, refusal
    rejection = obs.rejection
    if rejection is None or rejection.generation != pool.metadata.generation:
        return None
    child = next((m for m in apply if (m["kind"], m["metadata"]["name"]) == (rejection.kind, rejection.name)), None)
    routes: list[Route] = []
    if child is not None and rejection.name == build.server_name(pool.name):
        routes = server_routes(pool, child)
    elif child is not None and rejection.name == build.router_name(pool.name):
        routes = router_routes(pool, child)
    return (PoolConditionType.CONFIG_VALID, PoolReason.SPEC_REJECTED,
            f"the API server rejected {rejection.kind} {rejection.name}: {explain(rejection, routes)}")


def accepted(conds: ConditionSet, events: list[Event]) -> None:
    """ConfigValid and Admitted are True again (a Normal event when either was False)."""
    was_refused = any((c := conds.get(t)) is not None and c.status == "False"
                      for t in (PoolConditionType.CONFIG_VALID, PoolConditionType.ADMITTED))
    conds.set(PoolConditionType.CONFIG_VALID, True, PoolReason.VALID, "the API server accepts the children")
    conds.set(PoolConditionType.ADMITTED, True, PoolReason.ALLOWED, "the pod policy allows the server and router pods")
    if was_refused:
        events.append(Event("Normal", PoolReason.SPEC_FIXED, "the spec is valid and allowed again; continuing"))


def decide_pool(obs: PoolObserved, config: OperatorConfig) -> PoolPlan:
    """The whole SGLangPool reconcile decision. Parses the object once."""
    meta = obs.body["metadata"]
    generation = meta.get("generation")
    now = obs.now or datetime.now().astimezone()
    plan = PoolPlan()
    try:
        pool = SGLangPool.from_body(obs.body)
        plan.apply, plan.delete = build.children(pool, config)
    except ValidationError as exc:
        return _failed(obs, plan, generation, now, (PoolConditionType.CONFIG_VALID, PoolReason.INVALID_SPEC,
                                                    f"invalid spec: {validation_message(exc)}"))
    except ValueError as exc:
        return _failed(obs, plan, generation, now, (PoolConditionType.CONFIG_VALID, PoolReason.INVALID_SPEC,
                                                    f"invalid spec: {exc}"))
    problem = refused(pool, obs, config, plan.apply)
    if problem is not None:
        return _failed(obs, plan, generation, now, problem)

    conds = ConditionSet(pool.status.conditions, generation, now)
    accepted(conds, plan.events)
    servers = _deploy_counts(obs.server)
    servers_ready(conds, pool, obs, servers)
    router_ready(conds, pool, obs)
    phase, message = ready(conds, pool, servers, plan.events)
    weights = decide_weights(pool, obs.pods_of("server"), obs.weights, conds, plan.events, now)
    plan.weights_sync, plan.gates, plan.requeue_after = weights.order, weights.gates, weights.requeue_after
    plan.status = SGLangPoolStatus(
        phase=phase,
        replicas=servers["replicas"],
        ready_replicas=servers["readyReplicas"],
        available_replicas=servers["availableReplicas"],
        updated_replicas=servers["updatedReplicas"],
        endpoint=build.endpoint(pool),
        selector=build.selector_string(pool.name),
        message=message or None,
        observed_generation=generation,
        weight_version=weights.weight_version,
        weights_updated_replicas=weights.updated_replicas,
        last_weight_update=weights.last_update,
        conditions=conds.as_list(),
    )
    return plan


def _failed(obs: PoolObserved, plan: PoolPlan, generation: int | None, now: datetime,
            problem: tuple[PoolConditionType, PoolReason, str]) -> PoolPlan:
    """Failed, creating nothing more: the reason in its condition and in Ready, and a Warning once.

    Children that exist stay as they are (a pool whose new spec is refused keeps serving with the
    old one); the pool continues when its spec (or the policy) changes.
    """
    type_, reason, message = problem
    old = SGLangPoolStatus.model_validate(obs.body.get("status") or {})
    conds = ConditionSet(old.conditions, generation, now)
    conds.set(type_, False, reason, message)
    if conds.set(PoolConditionType.READY, False, reason, message) or old.message != message:
        plan.events.append(Event("Warning", reason, message))
    plan.apply, plan.delete = [], []
    plan.status = old.model_copy(update={"phase": PoolPhase.FAILED, "message": message,
                                         "observed_generation": generation, "conditions": conds.as_list()})
    return plan
