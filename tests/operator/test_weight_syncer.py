"""The controller's weight syncer against servers that follow SGLang's contract (no cluster).

It runs an order in the background, reports each server as it finishes (the pool is enqueued),
keeps one sync per pool, refuses an order older than one it ran, and continues paused servers
when the pool goes away mid-update.
"""

from __future__ import annotations

import asyncio

import pytest
from rollout_operator.controller.weights import WeightSyncer
from rollout_operator.reconcile.sglangpool_weights import ServerRef, SyncOrder, TargetKey

from rollout_runtime.weights import WeightsTarget
from tests.weights.contract_server import ContractServer

pytestmark = pytest.mark.timeout(60)
PATH = "/ckpt/step_1"


def order(servers: list[ContractServer], version: int = 1, *, pause: bool = True) -> SyncOrder:
    return SyncOrder(TargetKey(version, PATH), WeightsTarget(PATH, version),
                     tuple(ServerRef(f"pod-{i}", f"uid-{i}", 0, s.url, pause) for i, s in enumerate(servers)))


async def until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_sync_runs_in_the_background_and_reports_each_server() -> None:
    good, bad = ContractServer(weights={PATH: None}, load_seconds=0.2), ContractServer(weights={PATH: "bad tensor w"})
    for s in (good, bad):
        await s.start()
    changes: list[tuple[str, str]] = []
    syncer = WeightSyncer(lambda ns, name: changes.append((ns, name)), timeout=5)
    try:
        assert syncer.start("ns", "pool", order([good, bad]))
        observed = syncer.observe("ns", "pool")
        assert observed.in_flight is not None and observed.in_flight.pods == ("pod-0", "pod-1")
        assert not syncer.start("ns", "pool", order([good, bad], 2))  # one at a time: the newer one waits
        await until(lambda: not syncer.running("ns", "pool"))
        observed = syncer.observe("ns", "pool")
        assert observed.in_flight is None
        ok, failed = observed.servers["uid-0"], observed.servers["uid-1"]
        assert (ok.ok, ok.version, ok.key) == (True, 1, TargetKey(1, PATH))
        assert not failed.ok and failed.version == 0 and "bad tensor w" in failed.message and bad.url in failed.message
        assert observed.last is not None and observed.last.loaded == 1
        assert observed.last.failures[0][0] == "pod-1"
        assert observed.last.max_pause_seconds is not None and observed.last.max_pause_seconds >= 0.2
        assert observed.last.max_load_seconds is not None and 0.2 <= observed.last.max_load_seconds
        assert observed.last.max_load_seconds <= observed.last.max_pause_seconds
        assert len(changes) >= 3 and set(changes) == {("ns", "pool")}  # per server, and at the end
        # A sync that finds every server current leaves no new record (no event for a mere read).
        before = observed.last
        assert syncer.start("ns", "pool", order([good]))
        await until(lambda: not syncer.running("ns", "pool"))
        assert syncer.observe("ns", "pool").last is before and good.paths()[-1] == "/model_info"
        # An older version than one already ordered is refused (a decision from a stale view).
        assert not syncer.start("ns", "pool", order([good], 0))
    finally:
        await syncer.close()
        for s in (good, bad):
            await s.stop()


async def test_forgetting_a_pool_mid_update_still_continues_its_servers() -> None:
    slow = ContractServer(weights={PATH: None}, load_seconds=5)
    await slow.start()
    syncer = WeightSyncer(lambda ns, name: None, timeout=30)
    try:
        syncer.start("ns", "pool", order([slow]))
        await until(lambda: "/update_weights_from_disk" in slow.paths())
        syncer.forget("ns", "pool")
        await until(lambda: slow.paused_mode is None and "/continue_generation" in slow.paths())
        assert syncer.observe("ns", "pool").servers == {}
    finally:
        await syncer.close()
        await slow.stop()
