"""An SGLangPool's live weights: which servers to update, which pods to let in, and WeightsSynced.

The updates themselves are I/O and run in the background (`controller/weights.py`, one task per
pool at a time); this module only reads what that task reported (`WeightsObserved`) and the
server pods, and decides:

- **What to sync.** Every running server (containers ready, an IP) not known to serve the target
  (`spec.weights`: version, path, load format) is synced in one order, concurrently: servers that
  may take traffic (their readiness gate is True) are paused first, new ones are loaded without a
  pause. A server whose version is unknown (a new pod, a restarted container, an operator restart)
  is in the order too: the task reads its version first and leaves it alone if it is current. A
  new order waits until the running task has finished: one update at a time per pool, and a newer
  version queues behind the running one. A server that failed for this target is retried after
  `RETRY_FAILED_S`, or at once when the target changes.
- **The readiness gate** (`kuberollout.io/weights-synced`). True once the server serves the target
  in this container's life (the gate's message records the container's restart count); False for a
  container that restarted since (it came back with the model's own weights). Servers keep the gate
  through later updates, failed ones included: they keep serving their old weights rather than
  leaving the pool. Without `spec.weights` every gate is True at once (version 0).
- **Status.** `weightVersion` is set only when every Ready server is known to serve one version;
  `weightsUpdatedReplicas` counts running servers on the target; `lastWeightUpdate` is the last
  completed update that loaded or failed something; `WeightsSynced` is True only when every running
  server is known to serve the target, so it is never True while a Ready server serves another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rollout_operator.api.sglangpool_status import PoolConditionType, PoolReason, WeightUpdateRecord
from rollout_operator.api.sglangpool_types import SGLangPool
from rollout_operator.constants import WEIGHTS_GATE
from rollout_operator.reconcile.common import Event, condition, deleting
from rollout_operator.reconcile.conditions import ConditionSet
from rollout_runtime.contract import format_time
from rollout_runtime.weights.target import WeightsTarget

#: A server that failed for the current target is tried again after this long.
RETRY_FAILED_S = 60.0
#: Failures named in the condition message (the rest are counted).
NAMED_FAILURES = 3
_RESTARTS = re.compile(r"container restarts: (\d+)")


@dataclass(frozen=True)
class TargetKey:
    """What "current" means: the same version from the same place. No `path` means the model's own weights."""

    version: int
    path: str | None = None
    load_format: str | None = None


@dataclass(frozen=True)
class ServerState:
    """What the last sync learned about one server pod (by uid), in one container's life (`restarts`)."""

    pod: str
    restarts: int
    version: int | None
    key: TargetKey
    ok: bool
    message: str
    at: datetime


@dataclass(frozen=True)
class SyncInFlight:
    """The sync task running for the pool (`probe_only`: it only reads versions the operator did not know)."""

    key: TargetKey
    pods: tuple[str, ...]
    started: datetime
    probe_only: bool = False


@dataclass(frozen=True)
class SyncRecord:
    """A finished sync that loaded or failed something (syncs that only found servers current leave none)."""

    key: TargetKey
    started: datetime
    finished: datetime
    loaded: int
    failures: tuple[tuple[str, str], ...]  # (pod, message)
    max_pause_seconds: float | None
    max_load_seconds: float | None = None


@dataclass
class WeightsObserved:
    """What the controller's weight syncer knows about one pool."""

    servers: dict[str, ServerState] = field(default_factory=dict)  # pod uid -> state
    in_flight: SyncInFlight | None = None
    last: SyncRecord | None = None


@dataclass(frozen=True)
class ServerRef:
    """One server of a sync order."""

    pod: str
    uid: str
    restarts: int
    url: str
    pause: bool


@dataclass(frozen=True)
class SyncOrder:
    """Bring these servers to `target` (the controller starts it as a background task).

    `probe_only`: no server in it is known to serve another version (after an operator restart, or
    a new pod): most likely it only reads versions, so it is not announced as an update.
    """

    key: TargetKey
    target: WeightsTarget
    servers: tuple[ServerRef, ...]
    probe_only: bool = False


@dataclass(frozen=True)
class GatePatch:
    """Set a server pod's readiness gate condition."""

    pod: str
    uid: str
    status: bool
    reason: str
    message: str


@dataclass
class WeightsDecision:
    """The weights part of a pool's plan and status."""

    order: SyncOrder | None = None
    gates: list[GatePatch] = field(default_factory=list)
    weight_version: int | None = None
    updated_replicas: int = 0
    last_update: WeightUpdateRecord | None = None
    requeue_after: float | None = None


@dataclass(frozen=True)
class _Server:
    """A server pod as the decision needs it."""

    pod: str
    uid: str
    ip: str | None
    restarts: int
    running: bool  # containers ready
    ready: bool  # the pod's Ready (containers and gate)
    gate: dict[str, Any] | None

    @property
    def gate_true(self) -> bool:
        return bool(self.gate and self.gate.get("status") == "True")

    @property
    def gate_restarts(self) -> int | None:
        found = _RESTARTS.search((self.gate or {}).get("message") or "")
        return int(found.group(1)) if found else None


def _servers(pods: list[dict[str, Any]]) -> list[_Server]:
    out = []
    for p in pods:
        meta, st = p.get("metadata") or {}, p.get("status") or {}
        if deleting(p) or not meta.get("uid"):
            continue
        restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
        out.append(_Server(pod=meta["name"], uid=meta["uid"], ip=st.get("podIP"), restarts=restarts,
                           running=st.get("phase") == "Running" and _true(p, "ContainersReady"),
                           ready=_true(p, "Ready"), gate=condition(p, WEIGHTS_GATE)))
    return sorted(out, key=lambda s: s.pod)


def _true(pod: dict[str, Any], type_: str) -> bool:
    c = condition(pod, type_)
    return bool(c and c.get("status") == "True")


def target_key(pool: SGLangPool) -> TargetKey:
    w = pool.spec.weights
    return TargetKey(0) if w is None else TargetKey(w.version, w.path, w.load_format)


def gate_message(version: int, restarts: int) -> str:
    return f"serves weights version {version} (container restarts: {restarts})"


def decide_weights(pool: SGLangPool, pods: list[dict[str, Any]], observed: WeightsObserved, conds: ConditionSet,
                   events: list[Event], now: datetime) -> WeightsDecision:
    """The weights part of `decide_pool` (pods: the pool's server pods, slim)."""
    servers = _servers(pods)
    key = target_key(pool)
    decision = WeightsDecision()
    if pool.spec.weights is None:
        return _no_weights(servers, conds, decision)

    def state(s: _Server) -> ServerState | None:
        known = observed.servers.get(s.uid)
        return known if known is not None and known.restarts == s.restarts else None

    def current(s: _Server) -> bool:
        known = state(s)
        return known is not None and known.ok and known.key == key

    for s in servers:
        if s.gate_true and s.gate_restarts not in (None, s.restarts):
            decision.gates.append(GatePatch(s.pod, s.uid, False, "ContainerRestarted",
                                            f"container restarted (restarts: {s.restarts}): loading weights "
                                            f"version {key.version} before it takes traffic"))
        elif not s.gate_true and s.running and current(s):
            decision.gates.append(GatePatch(s.pod, s.uid, True, PoolReason.SYNCED, gate_message(key.version,
                                                                                                 s.restarts)))
    running = [s for s in servers if s.running]
    failed = [(s, st) for s in running if (st := state(s)) is not None and not st.ok and st.key == key]
    decision.updated_replicas = sum(1 for s in running if current(s))
    decision.weight_version = _common_version([state(s) for s in servers if s.ready])
    decision.last_update = _record(observed.last, pool, events)

    if observed.in_flight is None:
        retry_at = {s.uid: st.at + timedelta(seconds=RETRY_FAILED_S) for s, st in failed}
        todo = [s for s in running if s.ip and not current(s) and retry_at.get(s.uid, now) <= now]
        if todo:
            weights = pool.spec.weights
            target = WeightsTarget(path=weights.path, version=weights.version, load_format=weights.load_format,
                                   pause_mode=weights.pause_mode)
            decision.order = SyncOrder(key, target, tuple(
                ServerRef(s.pod, s.uid, s.restarts, f"http://{s.ip}:{pool.spec.port}", pause=s.gate_true)
                for s in todo), probe_only=all(state(s) is None for s in todo))
        pending = [t for t in retry_at.values() if t > now]
        if pending:
            decision.requeue_after = max(0.0, (min(pending) - now).total_seconds())
    _condition(pool, key, running, failed, decision, observed, conds, events)
    return decision


def _no_weights(servers: list[_Server], conds: ConditionSet, decision: WeightsDecision) -> WeightsDecision:
    message = "no spec.weights: the servers serve the model's own weights (version 0)"
    decision.gates = [GatePatch(s.pod, s.uid, True, PoolReason.SYNCED, gate_message(0, s.restarts))
                      for s in servers if not s.gate_true]
    decision.updated_replicas = sum(1 for s in servers if s.running)
    decision.weight_version = 0 if any(s.ready for s in servers) else None
    conds.set(PoolConditionType.WEIGHTS_SYNCED, True, PoolReason.SYNCED, message)
    return decision


def _common_version(states: list[ServerState | None]) -> int | None:
    versions = {st.version if st is not None else None for st in states}
    return versions.pop() if len(versions) == 1 else None


def _condition(pool: SGLangPool, key: TargetKey, running: list[_Server], failed: list[tuple[_Server, ServerState]],
               decision: WeightsDecision, observed: WeightsObserved, conds: ConditionSet, events: list[Event]) -> None:
    weights = pool.spec.weights
    assert weights is not None
    old = conds.get(PoolConditionType.WEIGHTS_SYNCED)
    in_flight = observed.in_flight
    order = decision.order
    probing = in_flight.probe_only if in_flight is not None else order is not None and order.probe_only
    if probing and old is not None and old.observed_generation == conds.generation:
        return  # reading versions only, the spec unchanged (an operator restart): the condition stands
    if in_flight is not None or order is not None:
        pods = in_flight.pods if in_flight is not None else tuple(s.pod for s in order.servers) if order else ()
        version = in_flight.key.version if in_flight is not None else key.version
        message = (f"updating {len(pods)} server(s) to weights version {version} (pause mode {weights.pause_mode}): "
                   f"{', '.join(pods)}")
        conds.set(PoolConditionType.WEIGHTS_SYNCED, False, PoolReason.UPDATING, message)
        if old is None or old.reason != PoolReason.UPDATING:
            events.append(Event("Normal", PoolReason.UPDATING, message))
    elif failed:
        named = "; ".join(f"server {s.pod}: {st.message}" for s, st in failed[:NAMED_FAILURES])
        more = f"; and {len(failed) - NAMED_FAILURES} more" if len(failed) > NAMED_FAILURES else ""
        conds.set(PoolConditionType.WEIGHTS_SYNCED, False, PoolReason.UPDATE_FAILED,
                  f"{len(failed)}/{len(running)} server(s) failed to load weights version {key.version} from "
                  f"{key.path}: {named}{more}")
    elif not running:
        conds.set(PoolConditionType.WEIGHTS_SYNCED, False, PoolReason.WAITING_FOR_SERVERS,
                  f"no running server to load weights version {key.version} into")
    else:
        conds.set(PoolConditionType.WEIGHTS_SYNCED, True, PoolReason.SYNCED,
                  f"{decision.updated_replicas}/{len(running)} running servers serve weights version {key.version}")


def _record(last: SyncRecord | None, pool: SGLangPool, events: list[Event]) -> WeightUpdateRecord | None:
    """status.lastWeightUpdate, and the one event per update when a new one is first reported."""
    old = pool.status.last_weight_update
    if last is None:
        return old
    pauses = f"; longest pause {last.max_pause_seconds:.2f}s" if last.max_pause_seconds is not None else ""
    record = WeightUpdateRecord(
        version=last.key.version, start_time=format_time(last.started), completion_time=format_time(last.finished),
        duration_seconds=round((last.finished - last.started).total_seconds(), 3), servers=last.loaded,
        failed=len(last.failures), max_pause_seconds=_rounded(last.max_pause_seconds),
        max_load_seconds=_rounded(last.max_load_seconds))
    if old != record:
        took = f"in {record.duration_seconds:.2f}s"
        if last.failures:
            named = "; ".join(f"server {pod}: {message}" for pod, message in last.failures[:NAMED_FAILURES])
            events.append(Event("Warning", PoolReason.UPDATE_FAILED,
                                f"weights version {last.key.version}: {len(last.failures)} server(s) failed "
                                f"({last.loaded} loaded {took}{pauses}): {named}"))
        else:
            events.append(Event("Normal", PoolReason.WEIGHTS_UPDATED,
                                f"weights version {last.key.version} from {last.key.path} loaded into {last.loaded} "
                                f"server(s) {took}{pauses}"))
    return record


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
