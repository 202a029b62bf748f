"""An SGLangPool's live weights, decided without a cluster: orders, readiness gates, status and events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rollout_operator.reconcile.sglangpool import PoolObserved, PoolPlan, decide_pool
from rollout_operator.reconcile.sglangpool_weights import (
    RETRY_FAILED_S,
    ServerState,
    SyncInFlight,
    SyncRecord,
    TargetKey,
    WeightsObserved,
    gate_message,
)
from rollout_operator.settings import OperatorConfig

from tests.operator.conftest import sglangpool

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
GATE = "kuberollout.io/weights-synced"
WEIGHTS = {"path": "/ckpt/step_1", "version": 1}
KEY1 = TargetKey(1, "/ckpt/step_1")


def server(name: str, *, ip: str | None = "10.0.0.1", running: bool = True, gate: bool | None = True,
           restarts: int = 0, gate_restarts: int | None = 0, gate_version: int = 0) -> dict[str, Any]:
    conds = [{"type": "ContainersReady", "status": "True" if running else "False"},
             {"type": "Ready", "status": "True" if running and gate else "False"}]
    if gate is not None:
        message = gate_message(gate_version, gate_restarts) if gate_restarts is not None else "set by hand"
        conds.append({"type": GATE, "status": "True" if gate else "False", "message": message})
    status: dict[str, Any] = {"phase": "Running", "conditions": conds,
                              "containerStatuses": [{"name": "server", "restartCount": restarts}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": {"kuberollout.io/role": "server"}},
            "status": status}


def known(name: str, version: int | None, *, ok: bool = True, key: TargetKey = KEY1, restarts: int = 0,
          message: str = "", at: datetime = NOW) -> tuple[str, ServerState]:
    return f"uid-{name}", ServerState(name, restarts, version, key, ok, message, at)


def decide(config: OperatorConfig, pods: list[dict[str, Any]], observed: WeightsObserved | None = None,
           status: dict[str, Any] | None = None, **spec: Any) -> PoolPlan:
    body = sglangpool(replicas=len(pods), status=status, **spec)
    return decide_pool(PoolObserved(body=body, pods=pods, now=NOW, weights=observed or WeightsObserved()), config)


def cond(plan: PoolPlan) -> dict[str, Any]:
    return next(c for c in plan.status.wire()["conditions"] if c["type"] == "WeightsSynced")


def test_without_weights_every_gate_opens_at_once_and_the_pool_serves_version_zero(config: OperatorConfig) -> None:
    pods = [server("a", gate=None), server("b", gate=False), server("c", gate=True)]
    plan = decide(config, pods)
    assert [(g.pod, g.status) for g in plan.gates] == [("a", True), ("b", True)]
    assert plan.weights_sync is None
    st = plan.status.wire()
    assert st["weightVersion"] == 0 and st["weightsUpdatedReplicas"] == 3
    assert cond(plan)["status"] == "True" and cond(plan)["reason"] == "Synced"


def test_a_new_version_orders_every_running_server_paused_and_new_pods_unpaused(config: OperatorConfig) -> None:
    pods = [server("a", ip="10.0.0.1"), server("b", ip="10.0.0.2"), server("new", ip="10.0.0.3", gate=None),
            server("starting", ip="10.0.0.4", running=False, gate=None), server("no-ip", ip=None, gate=None)]
    observed = WeightsObserved(servers=dict([known("a", 0, key=TargetKey(0)), known("b", 0, key=TargetKey(0))]))
    plan = decide(config, pods, observed, weights={**WEIGHTS, "pauseMode": "in_place", "loadFormat": "safetensors"})
    order = plan.weights_sync
    assert order is not None and order.key == TargetKey(1, "/ckpt/step_1", "safetensors") and not order.probe_only
    assert [(s.pod, s.url, s.pause) for s in order.servers] == [
        ("a", "http://10.0.0.1:30000", True), ("b", "http://10.0.0.2:30000", True), ("new", "http://10.0.0.3:30000",
                                                                                     False)]
    assert order.target.pause_mode == "in_place" and order.target.load_format == "safetensors"
    c = cond(plan)
    assert c["status"] == "False" and c["reason"] == "Updating" and "a, b, new" in c["message"]
    assert [e.reason for e in plan.events] == ["Updating"]
    assert not plan.gates  # the new pod stays out until it serves version 1
    assert plan.status.wire()["weightVersion"] == 0  # a and b (the Ready ones) still serve 0


def test_one_sync_at_a_time_a_newer_version_waits(config: OperatorConfig) -> None:
    pods = [server("a"), server("b")]
    observed = WeightsObserved(servers=dict([known("a", 1), known("b", 0, key=TargetKey(0))]),
                               in_flight=SyncInFlight(KEY1, ("b",), NOW))
    plan = decide(config, pods, observed, weights={"path": "/ckpt/step_2", "version": 2})
    assert plan.weights_sync is None
    c = cond(plan)
    assert c["reason"] == "Updating" and "version 1" in c["message"]  # what runs, not what waits
    # Once it finished, the newer version is ordered for both.
    observed = WeightsObserved(servers=dict([known("a", 1), known("b", 1)]))
    plan = decide(config, pods, observed, weights={"path": "/ckpt/step_2", "version": 2})
    assert plan.weights_sync is not None and [s.pod for s in plan.weights_sync.servers] == ["a", "b"]
    assert plan.weights_sync.target.version == 2


def test_synced_only_when_every_running_server_serves_the_target(config: OperatorConfig) -> None:
    pods = [server("a"), server("b")]
    plan = decide(config, pods, WeightsObserved(servers=dict([known("a", 1), known("b", 1)])), weights=WEIGHTS)
    assert cond(plan)["status"] == "True" and cond(plan)["reason"] == "Synced" and "2/2" in cond(plan)["message"]
    assert plan.status.wire()["weightVersion"] == 1 and plan.status.wire()["weightsUpdatedReplicas"] == 2
    assert plan.weights_sync is None
    # A Ready server whose version is unknown (say, just after an operator restart) is never Synced.
    plan = decide(config, pods, WeightsObserved(servers=dict([known("a", 1)])), weights=WEIGHTS)
    assert "weightVersion" not in plan.status.wire()
    assert plan.weights_sync is not None and plan.weights_sync.probe_only
    assert [s.pod for s in plan.weights_sync.servers] == ["b"]


def test_reading_unknown_versions_does_not_announce_an_update(config: OperatorConfig) -> None:
    """After an operator restart nothing is known; reading the versions back is not an update."""
    synced = {"conditions": [{"type": "WeightsSynced", "status": "True", "reason": "Synced", "message": "2/2",
                              "lastTransitionTime": "2026-05-01T11:00:00Z", "observedGeneration": 1}]}
    plan = decide(config, [server("a"), server("b")], weights=WEIGHTS, status=synced)
    assert plan.weights_sync is not None and plan.weights_sync.probe_only
    assert cond(plan)["reason"] == "Synced" and not plan.events


def test_the_first_weights_on_a_pool_are_an_update(config: OperatorConfig) -> None:
    """Servers without a record, but the spec changed (spec.weights set): announced as an update."""
    body = sglangpool(replicas=2, weights=WEIGHTS, status={"conditions": [
        {"type": "WeightsSynced", "status": "True", "reason": "Synced", "message": "no spec.weights",
         "lastTransitionTime": "2026-05-01T11:00:00Z", "observedGeneration": 1}]})
    body["metadata"]["generation"] = 2
    plan = decide_pool(PoolObserved(body=body, pods=[server("a"), server("b")], now=NOW), config)
    assert plan.weights_sync is not None and cond(plan)["reason"] == "Updating"
    assert [e.reason for e in plan.events] == ["Updating"]


def test_a_failed_server_is_named_with_its_message_keeps_its_gate_and_is_retried_later(config: OperatorConfig) -> None:
    pods = [server("a"), server("b")]
    message = "update failed: POST http://10.0.0.2:30000/update_weights_from_disk -> HTTP 400: size mismatch for w1"
    observed = WeightsObserved(servers=dict([known("a", 1), known("b", 0, ok=False, message=message)]),
                               last=SyncRecord(KEY1, NOW - timedelta(seconds=3), NOW, 1, (("b", message),), 2.5))
    plan = decide(config, pods, observed, weights=WEIGHTS)
    c = cond(plan)
    assert c["status"] == "False" and c["reason"] == "UpdateFailed"
    assert "server b" in c["message"] and "size mismatch for w1" in c["message"] and "/ckpt/step_1" in c["message"]
    assert plan.weights_sync is None and plan.requeue_after == RETRY_FAILED_S
    assert not plan.gates  # b keeps serving its old weights; it does not leave the pool
    st = plan.status.wire()
    assert "weightVersion" not in st and st["weightsUpdatedReplicas"] == 1
    assert st["lastWeightUpdate"] == {"version": 1, "startTime": "2026-05-01T11:59:57Z",
                                      "completionTime": "2026-05-01T12:00:00Z", "durationSeconds": 3.0,
                                      "servers": 1, "failed": 1, "maxPauseSeconds": 2.5}
    (event,) = plan.events
    assert event.type == "Warning" and event.reason == "UpdateFailed" and "size mismatch" in event.message
    # The event is posted once: the next pass finds the record in status.
    again = decide(config, pods, observed, weights=WEIGHTS, status=st)
    assert not again.events
    # After RETRY_FAILED_S it is tried again; a new path is tried at once.
    later = decide_pool(PoolObserved(body=sglangpool(replicas=2, weights=WEIGHTS, status=st), pods=pods, weights=observed,
                                     now=NOW + timedelta(seconds=RETRY_FAILED_S)), config)
    assert later.weights_sync is not None and [s.pod for s in later.weights_sync.servers] == ["b"]
    fixed = decide(config, pods, observed, weights={"path": "/ckpt/step_1_fixed", "version": 1}, status=st)
    assert fixed.weights_sync is not None and [s.pod for s in fixed.weights_sync.servers] == ["a", "b"]


def test_a_successful_update_is_one_event_with_its_duration(config: OperatorConfig) -> None:
    observed = WeightsObserved(servers=dict([known("a", 1), known("b", 1)]),
                               last=SyncRecord(KEY1, NOW - timedelta(seconds=2), NOW, 2, (), 1.75))
    plan = decide(config, [server("a"), server("b")], observed, weights=WEIGHTS)
    (event,) = plan.events
    assert event.reason == "WeightsUpdated" and "2 server(s) in 2.00s" in event.message and "1.75s" in event.message


def test_a_new_server_is_let_in_once_it_serves_the_version(config: OperatorConfig) -> None:
    pods = [server("a"), server("new", gate=None)]
    observed = WeightsObserved(servers=dict([known("a", 1), known("new", 1)]))
    plan = decide(config, pods, observed, weights=WEIGHTS)
    (gate,) = plan.gates
    assert (gate.pod, gate.uid, gate.status) == ("new", "uid-new", True)
    assert gate.message == gate_message(1, 0)


def test_a_restarted_container_is_shut_out_and_synced_again(config: OperatorConfig) -> None:
    # The gate was opened for restart 0; the container restarted (it serves the model's own weights again).
    pods = [server("a"), server("b", restarts=1, gate=True, gate_restarts=0, gate_version=1)]
    observed = WeightsObserved(servers=dict([known("a", 1), known("b", 1)]))  # b's record is of restart 0
    plan = decide(config, pods, observed, weights=WEIGHTS)
    (gate,) = plan.gates
    assert (gate.pod, gate.status, gate.reason) == ("b", False, "ContainerRestarted")
    assert plan.weights_sync is not None and [(s.pod, s.restarts) for s in plan.weights_sync.servers] == [("b", 1)]
    assert cond(plan)["status"] == "False"  # never Synced while b may serve version 0
    # Once loaded in restart 1, its gate opens again.
    observed = WeightsObserved(servers=dict([known("a", 1), known("b", 1, restarts=1)]))
    pods[1] = server("b", restarts=1, gate=False, gate_restarts=None)
    plan = decide(config, pods, observed, weights=WEIGHTS)
    assert [(g.pod, g.status) for g in plan.gates] == [("b", True)] and cond(plan)["reason"] == "Synced"


def test_no_running_server_waits(config: OperatorConfig) -> None:
    plan = decide(config, [server("a", running=False, gate=None)], weights=WEIGHTS)
    assert cond(plan)["reason"] == "WaitingForServers" and plan.weights_sync is None
