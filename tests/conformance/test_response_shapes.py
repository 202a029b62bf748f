"""(c) What our engines serve and answer, held against real sglang 0.5.23's route table and schemas.

* Routes: every route our engines serve exists in real SGLang (``http_server.py`` and
  ``v1_loads.py``, read with ``ast``; ``/metrics`` is the Prometheus app that
  ``utils/common.py`` mounts with ``--enable-metrics``), and the ones real SGLang lacks
  (``/get_weight_version``, ``/get_load``) are 404.
* ``/model_info``: the keys the real ``model_info`` handler returns (run against stub state).
* ``/v1/loads``: the core keys of ``load_snapshot.LoadSnapshot`` and nothing else (no
  ``num_total_reqs``), and sections the snapshot has.
* /generate responses (finished, streamed, aborted while running, aborted while queued) decode with
  the real response schema (``api_types.GenerateResponse``); an aborted-while-queued response has
  exactly the keys the real ``TokenizerManager._handle_abort_req`` builds, plus the
  ``response_sent_to_client_ts`` that ``_stream_one_response`` adds to every finished output.
* Weight-version spans and the weight-update lock behave as ``utils/weight_versions.py`` and
  ``utils/aio_rwlock.py`` do (both loaded and run here).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from rollout_runtime.engines import spans as our_spans
from rollout_runtime.engines.locks import RWLock
from tests.conformance import real_sglang
from tests.conformance.stubs import HTTP, TM, NS, handler
from tests.conftest import TINY_MODEL
from tests.engines.helpers import EngineClient

FINISHED_META_KEYS = {  # tokenizer_manager._handle_batch_output + _stream_one_response, text model, no logprobs
    "id", "finish_reason", "prompt_tokens", "weight_version", "num_retractions", "reasoning_tokens",
    "completion_tokens", "cached_tokens", "weight_versions", "e2e_latency", "response_sent_to_client_ts",
}


@pytest.fixture(scope="module")
def one_slot_engine() -> Iterator[Any]:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    cfg = SimEngineConfig(tokenizer=str(TINY_MODEL), token_latency=0.01, length_dist="fixed", length_median=200,
                          answer_mode="none", max_running_requests=1)
    handle = start_sim_engine_thread(cfg)
    try:
        yield handle.value
    finally:
        handle.stop()


def _normalise(path: str) -> str:
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


async def test_routes_exist_in_real_sglang(sim_engine: Any) -> None:
    real = real_sglang.routes(HTTP) | real_sglang.routes("srt/entrypoints/v1_loads.py", app="router")
    real |= {("GET", "/metrics")}
    real = {(m, _normalise(p)) for m, p in real}
    served = {(r.method, _normalise(r.resource.canonical)) for r in sim_engine.server.app.router.routes()
              if r.method != "HEAD"}
    assert served <= real, served - real
    for missing in ("/get_weight_version", "/get_load"):
        assert not any(p == missing for _, p in real)
        async with aiohttp.ClientSession() as session, session.get(sim_engine.url + missing) as r:
            assert r.status == 404


async def test_model_info_keys(sim_engine: Any) -> None:
    tm = NS(model_config=NS(is_image_understandable_model=False, is_audio_understandable_model=False,
                            hf_config=NS(model_type="m", architectures=["A"])),
            model_path="p", served_model_name="s", is_generation=True, config_value=lambda name: None)
    real = await handler("model_info", tm, get_serving=lambda: NS(tokenizer_path="t", preferred_sampling_params=None),
                         msgspec_to_builtins=lambda x: x)()
    async with aiohttp.ClientSession() as session:
        for path in ("/model_info", "/get_model_info"):
            status, ours = await EngineClient(session).get(sim_engine.url + path)
            assert status == 200 and set(ours) == set(real)


async def test_loads_keys(sim_engine: Any) -> None:
    fields = real_sglang.class_fields("srt/managers/load_snapshot.py", "LoadSnapshot")
    sections = {"memory", "speculative", "lora", "disaggregation", "queues"}
    assert sections <= set(fields)
    core = [f for f in fields if f not in sections]
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        _, body = await client.get(sim_engine.url + "/v1/loads?include=core")
        assert list(body["loads"][0]) == core
        _, body = await client.get(sim_engine.url + "/v1/loads")
        assert set(body) == {"timestamp", "version", "accelerator", "num_accelerators", "loads"}
        assert set(body["loads"][0]) - set(core) <= sections
        status, body = await client.get(sim_engine.url + "/v1/loads?include=nope")
        assert status == 400 and body["object"] == "error" and "Invalid include sections" in body["message"]


def _real_queued_abort_keys(weight_versions: Any) -> set[str]:
    """Run the real ``_handle_abort_req`` for a request aborted in the waiting queue."""
    is_health = real_sglang.real_function("srt/managers/utils.py", "is_health_check_generate_req",
                                          {"HEALTH_CHECK_RID_PREFIX": "HEALTH_CHECK"})
    fn = real_sglang.real_function(TM, "_handle_abort_req", {
        "is_health_check_generate_req": is_health, "logger": NS(info=lambda *a: None),
        "add_weight_versions_to_meta_info": weight_versions.add_weight_versions_to_meta_info,
        "get_serving": lambda: NS(skip_tokenizer_init=False)}, cls="TokenizerManager")
    state = NS(finished=False, time_stats=NS(set_finished_time=lambda: None, get_e2e_latency=lambda: 0.1),
               obj=NS(stream=False, return_logprob=False), output_ids=[], get_text=lambda: "", prompt_token_ids=None,
               out_list=[], event=NS(set=lambda: None))
    tm = NS(rid_to_state={"q": state}, config_value=lambda name: "default", incremental_streaming_output=False,
            _release_lora_once=lambda s: None)
    spans = weight_versions.compute_weight_version_spans([], current_version="default", num_output_tokens=0)
    fn(tm, NS(rid="q", abort_message=None, finished_reason=None, weight_versions=spans))
    out = state.out_list[0]
    assert set(out) == {"text", "output_ids", "meta_info"}
    return set(out["meta_info"]) | {"response_sent_to_client_ts"}


async def test_generate_responses_decode_with_real_schema(one_slot_engine: Any, real_api: Any) -> None:
    url = one_slot_engine.url
    body = {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 300, "ignore_eos": True}}
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        finished = await client.generate(url, {**body, "sampling_params": {"max_new_tokens": 3}})
        chunks = await client.stream(url, {**body, "sampling_params": {"max_new_tokens": 5, "ignore_eos": True}})
        running = asyncio.create_task(client.generate(url, body))
        queued = asyncio.create_task(client.generate(url, body))
        await client.wait_running(url, 2)
        while not any(st.out_ids for st in one_slot_engine.server.core.active):  # the running one has output
            await asyncio.sleep(0.005)
        await client.post(url + "/abort_request", {"abort_all": True})
        aborted, waiting = await running, await queued
    for out in [finished, aborted, waiting, *chunks[:-1]]:
        real_api.GenerateResponse.from_json_value(out)
    assert chunks[-1] == "[DONE]" and all(c["meta_info"]["finish_reason"] is None for c in chunks[:-2])
    assert set(finished["meta_info"]) == FINISHED_META_KEYS
    assert aborted["meta_info"]["finish_reason"] == {"type": "abort", "message": "Aborted", "status_code": None,
                                                      "err_type": None}
    assert set(aborted["meta_info"]) == FINISHED_META_KEYS and aborted["output_ids"]
    assert waiting["meta_info"]["finish_reason"] == {"type": "abort", "message": "Abort in waiting queue"}
    assert set(waiting["meta_info"]) == _real_queued_abort_keys(real_sglang.load_weight_versions())


def test_weight_version_spans_match_real() -> None:
    real = real_sglang.load_weight_versions()
    rng = random.Random(0)
    for _ in range(500):
        n_out = rng.randint(0, 30)
        events = sorted((rng.choice("abc"), rng.randint(0, 35)) for _ in range(rng.randint(0, 4)))
        events.sort(key=lambda e: e[1])
        current = rng.choice("abcd")
        want = real.compute_weight_version_spans([real.WeightVersionEvent(old_version=v, num_output_tokens=n)
                                                  for v, n in events], current, n_out)
        got = our_spans.compute_spans(events, current, n_out)
        assert got == [[s.version, s.start, s.end] for s in want]
        meta_real: dict[str, Any] = {}
        meta_ours: dict[str, Any] = {}
        real.add_weight_versions_to_meta_info(meta_real, want, n_out)
        our_spans.add_to_meta_info(meta_ours, got, n_out)
        assert meta_ours == meta_real


async def _lock_trace(lock: Any, acquire_read: Any, release_read: Any, acquire_write: Any, release_write: Any) -> list[str]:
    """A reader holds; a writer queues; a later reader must wait behind the writer (writer preference)."""
    trace: list[str] = []

    async def reader(name: str, hold: float) -> None:
        await acquire_read()
        trace.append(f"{name}+")
        await asyncio.sleep(hold)
        trace.append(f"{name}-")
        await release_read()

    async def writer() -> None:
        await acquire_write()
        trace.append("w+")
        await asyncio.sleep(0.02)
        trace.append("w-")
        await release_write()

    first = asyncio.create_task(reader("r1", 0.05))
    await asyncio.sleep(0.01)
    w = asyncio.create_task(writer())
    await asyncio.sleep(0.01)
    second = asyncio.create_task(reader("r2", 0.0))
    await asyncio.gather(first, w, second)
    return trace


async def test_update_lock_matches_real_rwlock() -> None:
    real = real_sglang.load_module("srt/utils/aio_rwlock.py").RWLock()
    ours = RWLock()

    async def aw(fn: Any) -> None:
        fn()

    want = await _lock_trace(real, real.acquire_reader, real.release_reader, real.acquire_writer, real.release_writer)
    got = await _lock_trace(ours, ours.acquire_read, lambda: aw(ours.release_read), ours.acquire_write,
                            lambda: aw(ours.release_write))
    assert got == want == ["r1+", "r1-", "w+", "w-", "r2+", "r2-"]
