"""The weight-update orchestration against servers that follow SGLang 0.5.23's contract.

Each test starts real HTTP servers (tests/weights/contract_server.py) and checks what reached
them, in which order, and what the report says: success, a 400 naming the tensor, a timeout, a
server gone mid-update, retries, and that a paused server is always continued.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from rollout_runtime.weights import (
    CallFailed,
    WeightsTarget,
    new_session,
    resolve_servers,
    sync_servers,
    update_weights,
)
from tests.weights.contract_server import ContractServer, Router

PATH = "/ckpt/step_1"
UPDATE = "/update_weights_from_disk"
SEQUENCE = ["/pause_generation", UPDATE, "/continue_generation", "/model_info"]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., asyncio.Future[list[ContractServer]]]]:
    started: list[ContractServer] = []

    async def make(n: int, **kw: object) -> list[ContractServer]:
        out = []
        for _ in range(n):
            s = ContractServer(weights={PATH: None}, **kw)  # type: ignore[arg-type]
            await s.start()
            started.append(s)
            out.append(s)
        return out

    yield make  # type: ignore[misc]
    for s in started:
        await s.stop()


async def test_every_server_is_paused_loaded_and_continued_concurrently(servers) -> None:
    fleet = await servers(3, load_seconds=0.4)
    report = await update_weights([s.url for s in fleet], PATH, 1)
    assert report.ok, report.summary()
    for s in fleet:
        assert s.paths() == SEQUENCE
        pause, update, cont = s.calls[0].body, s.calls[1].body, s.calls[2].body
        assert pause == {"mode": "retract"}
        assert update == {"model_path": PATH, "weight_version": "1", "abort_all_requests": False, "flush_cache": True}
        assert cont == {}
        assert s.version == "1" and s.paused_mode is None
    # Concurrent: every load started before any finished (sequential would take 1.2 s or more).
    starts = [s.calls[1].at for s in fleet]
    ends = [s.calls[1].done for s in fleet]
    assert max(starts) < min(ends)  # type: ignore[type-var]
    assert report.duration_seconds < 1.0
    assert all(o.version_after == 1 and o.pause_seconds is not None and o.pause_seconds >= 0.4
               for o in report.outcomes)
    assert 0.4 <= report.slowest_update_seconds < 1.0


async def test_in_place_pause_loads_without_flushing_the_cache(servers) -> None:
    (s,) = await servers(1)
    report = await update_weights([s.url], PATH, 2, pause_mode="in_place", load_format="safetensors")
    assert report.ok, report.summary()
    assert s.calls[0].body == {"mode": "in_place"}
    assert s.calls[1].body["flush_cache"] is False
    assert s.calls[1].body["load_format"] == "safetensors"


async def test_a_flush_after_in_place_is_what_real_sglang_refuses(servers) -> None:
    """Why in_place sends flush_cache=false: the contract server refuses it, as WeightUpdater does."""
    (s,) = await servers(1)
    async with new_session() as session:
        await session.post(s.url + "/pause_generation", json={"mode": "in_place"})
        resp = await session.post(s.url + UPDATE, json={"model_path": PATH, "weight_version": "1"})
        assert resp.status == 400 and "cache was not flushed" in (await resp.json())["message"]


async def test_a_400_names_the_server_and_its_message_and_the_others_still_update(servers) -> None:
    good, bad = await servers(2)
    bad.weights[PATH] = "Failed to load weights: size mismatch for model.layers.0.mlp.up_proj.weight"
    report = await update_weights([good.url, bad.url], PATH, 1)
    assert not report.ok
    (failure,) = report.failures
    assert failure.url == bad.url and failure.failed_step == "update"
    assert "HTTP 400" in failure.message and "model.layers.0.mlp.up_proj.weight" in failure.message
    assert bad.paths() == SEQUENCE[:3]  # continued after the failed load, not verified
    assert bad.version == "default" and bad.paused_mode is None  # keeps serving the old weights
    assert good.version == "1"
    assert bad.url in report.summary() and "up_proj" in report.summary()


async def test_a_missing_path_is_the_servers_own_400(servers) -> None:
    (s,) = await servers(1)
    report = await update_weights([s.url], "/no/such/dir", 1)
    assert not report.ok and "/no/such/dir" in report.failures[0].message
    assert s.paused_mode is None


async def test_a_load_past_the_timeout_fails_is_not_resent_and_the_server_is_continued(servers) -> None:
    (s,) = await servers(1, load_seconds=3.0)
    report = await update_weights([s.url], PATH, 1, timeout=0.5, retries=3)
    (o,) = report.outcomes
    assert not o.ok and o.failed_step == "update" and "no answer within 0.5s" in o.message
    assert s.paths().count(UPDATE) == 1  # never resent: a second load would run next to the first
    assert "/continue_generation" in s.paths()
    assert s.paused_mode is None


async def test_a_server_gone_mid_update_is_reported_and_the_rest_succeed(servers) -> None:
    ok, doomed = await servers(2, load_seconds=0.3)
    doomed.drop_update = True

    async def kill_during_load() -> None:
        while UPDATE not in doomed.paths():
            await asyncio.sleep(0.01)
        await doomed.stop()

    killer = asyncio.create_task(kill_during_load())
    report = await update_weights([ok.url, doomed.url], PATH, 1, retries=1)
    await killer
    assert [o.url for o in report.failures] == [doomed.url]
    failure = report.failures[0]
    assert failure.failed_step == "update"
    assert "cannot connect" in failure.message  # the version read after the lost call found nobody
    assert ok.version == "1"


async def test_a_lost_answer_after_a_successful_load_counts_as_loaded(servers) -> None:
    (s,) = await servers(1)
    s.drop_update_after_load = True
    report = await update_weights([s.url], PATH, 3)
    assert report.ok, report.summary()
    assert s.paths().count(UPDATE) == 1 and s.version == "3"


async def test_transient_pause_failures_are_retried_within_the_bound(servers) -> None:
    (s,) = await servers(1)
    s.pause_503s = 2
    report = await update_weights([s.url], PATH, 1, retries=2)
    assert report.ok and s.paths()[:3] == ["/pause_generation"] * 3

    (t,) = await servers(1)
    t.pause_503s = 2
    report = await update_weights([t.url], PATH, 1, retries=1)
    (o,) = report.outcomes
    assert not o.ok and o.failed_step == "pause" and "503" in o.message
    assert UPDATE not in t.paths()
    assert t.paths()[-1] == "/continue_generation"  # a pause that failed may have paused: continued anyway


async def test_skip_current_leaves_servers_on_the_version_alone(servers) -> None:
    current, stale = await servers(2)
    current.version = "4"
    async with new_session() as session:
        report = await sync_servers(session, [current.url, stale.url], WeightsTarget(PATH, 4), skip_current=True)
    assert report.ok
    assert current.paths() == ["/model_info"]
    assert stale.paths() == ["/model_info", *SEQUENCE]
    assert [o.skipped for o in report.outcomes] == [True, False]


async def test_default_counts_as_version_zero(servers) -> None:
    (s,) = await servers(1)
    async with new_session() as session:
        report = await sync_servers(session, [s.url], WeightsTarget(PATH, 0), skip_current=True)
    assert report.outcomes[0].skipped and s.paths() == ["/model_info"]


async def test_servers_without_traffic_are_loaded_without_a_pause(servers) -> None:
    serving, fresh = await servers(2)
    async with new_session() as session:
        report = await sync_servers(session, [serving.url, fresh.url], WeightsTarget(PATH, 1), no_pause={fresh.url})
    assert report.ok
    assert fresh.paths() == [UPDATE, "/model_info"]
    assert serving.paths() == SEQUENCE
    assert report.outcomes[1].pause_seconds is None


async def test_a_router_url_stands_for_its_workers(servers) -> None:
    fleet = await servers(2)
    router = Router([s.url + "/" for s in fleet])
    await router.start()
    try:
        async with new_session() as session:
            assert await resolve_servers(session, [router.url, fleet[0].url]) == [s.url for s in fleet]
        report = await update_weights([router.url], PATH, 5)
        assert report.ok and [s.version for s in fleet] == ["5", "5"]
    finally:
        await router.stop()


async def test_a_router_without_workers_is_an_error() -> None:
    router = Router([])
    await router.start()
    try:
        with pytest.raises(CallFailed, match="lists no workers"):
            await update_weights([router.url], PATH, 1)
    finally:
        await router.stop()


async def test_a_lower_version_is_loaded_a_rollback_is_the_callers_right(servers) -> None:
    (s,) = await servers(1)
    s.version = "7"
    report = await update_weights([s.url], PATH, 6)
    assert report.ok and s.version == "6"


def test_bad_targets_name_the_field() -> None:
    with pytest.raises(ValueError, match="version"):
        WeightsTarget(PATH, -1)
    with pytest.raises(ValueError, match="pause mode"):
        WeightsTarget(PATH, 1, pause_mode="sleep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        WeightsTarget("", 1)
