"""SGLangPool status from its Deployments and pods (no cluster)."""

from __future__ import annotations

from typing import Any

from rollout_operator.reconcile.sglangpool import PoolObserved, PoolPlan, decide_pool
from rollout_operator.settings import OperatorConfig

from tests.operator.conftest import sglangpool


def deployment(replicas: int, ready: int, *, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"generation": generation},
            "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
                       "updatedReplicas": replicas, "observedGeneration": observed}}


def wire(plan: PoolPlan) -> dict[str, Any]:
    """The status as the controller patches it (camelCase, unset fields left out)."""
    return plan.status.wire()


def cond(plan: Any, type_: str) -> dict[str, Any]:
    return next(c for c in wire(plan)["conditions"] if c["type"] == type_)


def test_new_pool_is_pending_with_its_endpoint_and_selector(config: OperatorConfig) -> None:
    plan = decide_pool(PoolObserved(body=sglangpool(replicas=2)), config)
    st = wire(plan)
    assert st["phase"] == "Pending" and st["endpoint"] == "http://qwen-router.ns.svc:30000"
    assert st["selector"] == "kuberollout.io/pool=qwen,kuberollout.io/role=server"
    assert cond(plan, "Ready")["status"] == "False" and len(plan.apply) == 7 and not plan.events


def test_ready_when_a_server_and_the_router_are(config: OperatorConfig) -> None:
    body = sglangpool(replicas=2)
    plan = decide_pool(PoolObserved(body=body, server=deployment(2, 1), router=deployment(1, 0)), config)
    assert cond(plan, "Ready")["status"] == "False" and cond(plan, "RouterReady")["status"] == "False"
    plan = decide_pool(PoolObserved(body=body, server=deployment(2, 1), router=deployment(1, 1)), config)
    assert wire(plan)["phase"] == "Ready" and cond(plan, "Ready")["status"] == "True"
    assert cond(plan, "ServersReady")["status"] == "False" and "1/2" in cond(plan, "ServersReady")["message"]
    assert [e.reason for e in plan.events] == ["PoolReady"]
    body["status"] = wire(plan)
    plan2 = decide_pool(PoolObserved(body=body, server=deployment(2, 2), router=deployment(1, 1)), config)
    assert cond(plan2, "ServersReady")["status"] == "True" and not plan2.events
    assert wire(plan2)["readyReplicas"] == 2 and wire(plan2)["replicas"] == 2
    # Losing every server: NotReady with a Warning.
    body["status"] = wire(plan2)
    plan3 = decide_pool(PoolObserved(body=body, server=deployment(2, 0), router=deployment(1, 1)), config)
    assert wire(plan3)["phase"] == "Pending" and [e.reason for e in plan3.events] == ["PoolNotReady"]


def test_without_router_the_servers_are_enough(config: OperatorConfig) -> None:
    body = sglangpool(replicas=1, router={"enabled": False})
    plan = decide_pool(PoolObserved(body=body, server=deployment(1, 1)), config)
    assert wire(plan)["phase"] == "Ready" and cond(plan, "RouterReady")["reason"] == "RouterDisabled"
    assert wire(plan)["endpoint"] == "http://qwen-server.ns.svc:30000"


def test_pod_problems_surface_in_the_condition(config: OperatorConfig) -> None:
    pods = [{"metadata": {"name": "qwen-server-abc", "labels": {"kuberollout.io/role": "server"}},
             "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}},
            {"metadata": {"name": "qwen-server-def", "labels": {"kuberollout.io/role": "server"}},
             "status": {"containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                                                       "message": "no such image"}}}]}}]
    plan = decide_pool(PoolObserved(body=sglangpool(replicas=2), server=deployment(2, 0), pods=pods), config)
    message = cond(plan, "ServersReady")["message"]
    assert "Insufficient nvidia.com/gpu" in message and "(and 1 more)" in message
    assert wire(plan)["message"] == message


def test_rollout_in_progress_is_not_servers_ready(config: OperatorConfig) -> None:
    plan = decide_pool(PoolObserved(body=sglangpool(replicas=2), server=deployment(2, 2, generation=2, observed=1),
                                    router=deployment(1, 1)), config)
    assert cond(plan, "ServersReady")["status"] == "False" and wire(plan)["phase"] == "Ready"


def test_scaled_to_zero(config: OperatorConfig) -> None:
    plan = decide_pool(PoolObserved(body=sglangpool(replicas=0), server=deployment(0, 0), router=deployment(1, 1)),
                       config)
    assert cond(plan, "ServersReady")["reason"] == "ScaledToZero" and wire(plan)["phase"] == "Pending"
