"""Pause modes, weight updates and weight-version spans, run against both engines.

What real SGLang 0.5.23 does (tokenizer_manager.pause_generation / continue_generation /
update_weights_from_disk, scheduler.pause_generation / record_weight_version_change):

* ``abort``: every running request is aborted and returns (HTTP 200, partial output); the reply
  comes once they have drained;
* ``retract``: decoding stops, running requests go back to the waiting queue (``num_retractions``
  + 1, their KV cache dropped), ``/flush_cache`` is allowed;
* ``in_place``: decoding stops, requests stay in the running batch with their KV cache,
  ``/flush_cache`` fails; an abort lands only once generation continues;
* new requests wait while paused; ``/continue_generation`` resumes, and a request that lived
  through a weight update reports a span per version in ``meta_info.weight_versions``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from rollout_runtime.engines.sim import SimEngine, SimEngineConfig
from tests.engines.helpers import TINY_MODEL, EngineClient, EngineHandle, Stream

PAUSED = {"message": "Generation paused successfully.", "status": "ok"}
CONTINUED = {"message": "Generation continued successfully.", "status": "ok"}


def long_body(engine: EngineHandle, n: int = 120) -> dict[str, Any]:
    return {"text": engine.chat_prompt("What is 37+45?"), "sampling_params": {"max_new_tokens": n, "ignore_eos": True}}


async def loads(client: EngineClient, url: str) -> tuple[int, int]:
    _, body = await client.get(url + "/v1/loads?include=core")
    load = body["loads"][0]
    return load["num_running_reqs"], load["num_waiting_reqs"]


async def stream_then_pause(client: EngineClient, engine: EngineHandle, mode: str) -> Stream:
    """A long streaming request that has produced a few tokens, then the pause."""
    await client.wait_idle(engine.url)
    stream = Stream(client, engine.url, long_body(engine))
    await stream.wait_produced(3)
    assert await client.post(engine.url + "/pause_generation", {"mode": mode}) == (200, PAUSED)
    return stream


@pytest.mark.parametrize("mode", ["retract", "in_place"])
async def test_pause_stops_decoding_and_continue_resumes(engine: EngineHandle, client: EngineClient, mode: str) -> None:
    url = engine.url
    stream = await stream_then_pause(client, engine, mode)
    try:
        await asyncio.sleep(0.15)  # what was decoded before the pause has arrived
        frozen = stream.produced
        assert 0 < frozen < 120
        assert await loads(client, url) == ((0, 1) if mode == "retract" else (1, 0))
        status, text = await client.get(url + "/flush_cache")
        assert (status == 200) == (mode == "retract"), text
        waiting = asyncio.create_task(client.generate(url, {"input_ids": [5, 6], "sampling_params": {"max_new_tokens": 2}}))
        await asyncio.sleep(0.4)
        assert stream.produced == frozen, "no decoding while paused"
        assert not waiting.done(), "new requests wait while paused"
    finally:
        assert await client.post(url + "/continue_generation", {}) == (200, CONTINUED)
    await stream.task
    meta = stream.final["meta_info"]  # type: ignore[index]
    assert meta["finish_reason"] == {"type": "length", "length": 120} and meta["completion_tokens"] == 120
    assert meta["num_retractions"] == (1 if mode == "retract" else 0)
    assert (await waiting)["meta_info"]["completion_tokens"] == 2


async def test_pause_abort_drains_then_replies(engine: EngineHandle, client: EngineClient) -> None:
    url = engine.url
    await client.wait_idle(url)
    running = [Stream(client, url, long_body(engine)) for _ in range(2)]
    for stream in running:
        await stream.wait_produced()
    try:
        assert await client.post(url + "/pause_generation", {}) == (200, PAUSED)  # mode defaults to abort
        assert await loads(client, url) == (0, 0), "the reply comes after the running requests drained"
    finally:
        await client.post(url + "/continue_generation", {})
    for stream in running:
        await stream.task
        meta = stream.final["meta_info"]  # type: ignore[index]
        assert meta["finish_reason"]["type"] == "abort" and 0 < meta["completion_tokens"] < 120


@pytest.mark.parametrize("mode", ["retract", "in_place"])
async def test_abort_while_paused(engine: EngineHandle, client: EngineClient, mode: str) -> None:
    """retract: the request is in the waiting queue, so an abort returns it at once ("Abort in waiting
    queue", partial output kept); in_place: it is in the running batch, and the abort only lands at
    its next decode step, after /continue_generation."""
    url = engine.url
    await client.wait_idle(url)
    stream = Stream(client, url, long_body(engine))
    await stream.wait_produced()
    await client.post(url + "/pause_generation", {"mode": mode})
    try:
        await client.post(url + "/abort_request", {"abort_all": True})
        await asyncio.sleep(0.3)
        assert stream.task.done() == (mode == "retract")
    finally:
        await client.post(url + "/continue_generation", {})
    await stream.task
    meta = stream.final["meta_info"]  # type: ignore[index]
    if mode == "retract":
        assert meta["finish_reason"] == {"type": "abort", "message": "Abort in waiting queue"}
        assert "prompt_tokens" not in meta and 0 < meta["completion_tokens"] < 120
    else:
        assert meta["finish_reason"] == {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}


@pytest.mark.parametrize("mode", ["retract", "in_place"])
async def test_weight_update_while_paused_records_spans(engine: EngineHandle, client: EngineClient, mode: str) -> None:
    url = engine.url
    stream = await stream_then_pause(client, engine, mode)
    try:
        await asyncio.sleep(0.1)
        before = stream.produced
        # in_place keeps requests in the running batch, so the cache flush that follows a weight update
        # by default would fail: skip it, as a client of real SGLang must.
        status, body = await client.post(url + "/update_weights_from_disk", {
            "model_path": str(TINY_MODEL), "weight_version": "v2", "flush_cache": mode == "retract"})
        assert status == 200 and body["success"], body
        assert body == {"success": True, "num_paused_requests": 0,
                        "message": "Succeeded to update model weights. Weight version updated to v2."}
        assert (await client.get(url + "/model_info"))[1]["weight_version"] == "v2"
    finally:
        await client.post(url + "/continue_generation", {})
    await stream.task
    meta = stream.final["meta_info"]  # type: ignore[index]
    assert meta["weight_version"] == "v2" and meta["completion_tokens"] == 120
    k = meta["weight_versions"][0]["end"]
    assert 0 < before <= k < 120, "every token decoded before the pause counts under the old version"
    assert meta["weight_versions"] == [{"version": "default", "start": 0, "end": k},
                                       {"version": "v2", "start": k, "end": 120}]
    await client.post(url + "/update_weight_version", {"new_version": "default"})


async def test_in_place_update_with_cache_flush_fails(engine: EngineHandle, client: EngineClient) -> None:
    """Real SGLang loads the weights, then refuses to flush the cache of the requests in the running
    batch: the call fails (400) and /model_info keeps the old version, though the scheduler's
    requests already count their next tokens under the new one."""
    url = engine.url
    await client.wait_idle(url)
    stream = Stream(client, url, long_body(engine, n=60))
    await stream.wait_produced()
    await client.post(url + "/pause_generation", {"mode": "in_place"})
    try:
        status, body = await client.post(url + "/update_weights_from_disk",
                                         {"model_path": str(TINY_MODEL), "weight_version": "v3"})
        assert status == 400 and body["success"] is False
        assert body["message"].startswith("Weights were updated, but the cache was not flushed")
        assert (await client.get(url + "/model_info"))[1]["weight_version"] == "default"
    finally:
        await client.post(url + "/continue_generation", {})
    await stream.task
    meta = stream.final["meta_info"]  # type: ignore[index]
    assert [s["version"] for s in meta["weight_versions"]] == ["default", "v3"]
    await client.post(url + "/update_weight_version", {"new_version": "default"})


async def test_update_waits_for_requests_and_holds_new_ones(client: EngineClient, tmp_path: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Not paused, /update_weights_from_disk takes the writer side of the update lock: it waits for
    the requests in flight, and new requests and health checks wait behind it."""
    monkeypatch.setenv("SGLANG_HEALTH_CHECK_TIMEOUT", "1")
    cfg = SimEngineConfig(token_latency=0.01, length_dist="fixed", length_median=40, answer_mode="none",
                          weight_load_seconds=2.5)
    async with SimEngine(cfg) as eng:
        url = eng.url
        first = asyncio.create_task(client.generate(url, {"text": "a", "sampling_params": {"max_new_tokens": 40}}))
        await client.wait_running(url, 1)
        update = asyncio.create_task(client.post(url + "/update_weights_from_disk",
                                                 {"model_path": str(tmp_path), "weight_version": "v2"}))
        await asyncio.sleep(0.1)
        later = asyncio.create_task(client.generate(url, {"text": "b", "sampling_params": {"max_new_tokens": 3}}))
        out = await first
        assert out["meta_info"]["finish_reason"]["type"] != "abort" and not update.done()
        t0 = time.monotonic()
        status, _ = await client.get(url + "/health")
        assert status == 503 and time.monotonic() - t0 < 2.5, "health waits behind the update, then fails"
        assert not later.done()
        status, body = await update
        assert status == 200 and body["success"]
        late = await later
        assert late["meta_info"]["weight_version"] == "v2"
        assert late["meta_info"]["weight_versions"] == [{"version": "v2", "start": 0, "end": 3}]


async def test_version_change_counts_tokens_the_model_computed_but_the_handler_has_not_taken() -> None:
    """The dev engine's model thread computes tokens that the request's handler takes later. A weight
    update landing in between must attribute them to the version that computed them (SGLang's scheduler
    counts req.output_ids, which the decode step extends), not to the new one: the RL loop's parity check
    found them off by one token at each update before."""
    from types import SimpleNamespace

    from rollout_runtime.engines.backend import RequestState
    from rollout_runtime.engines.core import EngineCore
    from rollout_runtime.engines.params import GenerateItem, SamplingParams
    from rollout_runtime.engines.spans import compute_spans

    core = EngineCore(SimpleNamespace(codec=None, model_path="m"), weight_version="default",  # type: ignore[arg-type]
                      served_model_name="m", context_length=64)
    st = RequestState(GenerateItem(rid="r", index=0, text=None, input_ids=[1, 2], sampling={}), [1, 2],
                      SamplingParams(), core.pause)
    core.active.add(st)
    st.out_ids = [7, 8, 9]  # taken by the handler
    st.produced = 5  # two more computed by the old weights, not yet taken
    core.set_version("v1")
    st.out_ids += [10, 11, 12]  # the two old ones, then one from v1
    assert compute_spans(st.events, core.scheduler_version, len(st.out_ids)) == [["default", 0, 5], ["v1", 5, 6]]
