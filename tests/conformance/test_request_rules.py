"""(c) The rules that turn a request away, computed by the real sglang 0.5.23 code, against ours.

Context length and ``max_new_tokens``: three real functions decide, in this order, and run here
against stub state: ``TokenizerManager._validate_one_request`` (400 when the input reaches the
context length, or input + ``max_new_tokens`` exceeds it; ``--allow-auto-truncate`` cuts instead),
``Scheduler.init_req_max_new_tokens`` (``max_new_tokens`` cut to ``max_req_len - input - 1``, via
the allocator's ``max_new_tokens_for_memory``) and ``managers.utils.validate_input_length`` (an
input of ``max_req_input_len`` tokens or more is aborted with status 400). The two lengths come
from ``TpModelWorker`` (tp_worker.py, ``get_worker_info``): ``max_req_len = min(context_len - 1,
kv_capacity - 1)`` and ``max_req_input_len = max_req_len - 5``; here the KV pool holds a full
request. Our engines answer over HTTP; outcomes must be identical, messages included.

Duplicate rid: ``TokenizerManager._init_req_state`` runs here against a stub holding the rid in
flight; our engine must answer the same text, with a 400 for a plain request and an in-band error
for a streaming one (``http_server.serve_generate_request``), also while the first request waits
behind a pause (the rid is registered before the pause wait in ``generate_request``).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.conformance import real_sglang
from tests.conftest import TINY_MODEL
from tests.engines.helpers import EngineClient

TM = "srt/managers/tokenizer_manager.py"
CTX = 64
ABSENT = object()


class _Stub(types.SimpleNamespace):
    pass


@pytest.fixture(scope="module")
def real_pipeline(real_sampling: Any) -> Any:
    """The real admission of one request: ('400', message) or ('ok', input tokens, max_new_tokens)."""
    validate_one = real_sglang.real_function(TM, "_validate_one_request", {
        "get_exec": lambda: _Stub(features=_Stub(enable_encoder_swa_bounded_replay=False)),
        "logger": _Stub(warning=lambda *a, **k: None),
        "EmbeddingReqInput": type("EmbeddingReqInput", (), {}),
        "GenerateReqInput": type("GenerateReqInput", (), {}),
    }, cls="TokenizerManager")
    for_memory = real_sglang.real_function("srt/mem_cache/allocator/base.py", "max_new_tokens_for_memory", {},
                                           cls="BaseTokenToKVPoolAllocator")
    init_max_new = real_sglang.real_function("srt/managers/scheduler.py", "init_req_max_new_tokens",
                                             {"logger": _Stub(warning=lambda *a, **k: None)}, cls="Scheduler")
    validate_input_length = real_sglang.real_function("srt/managers/utils.py", "validate_input_length",
                                                      {"logger": _Stub(warning=lambda *a, **k: None)})

    def run(n: int, max_new: Any, truncate: bool) -> tuple[Any, ...]:
        tm = _Stub(context_len=CTX, num_reserved_tokens=0, allow_auto_truncate=truncate, validate_total_tokens=True,
                   is_generation=True, _validate_joint_schema_request=lambda obj, ids: None)
        obj = _Stub(sampling_params={} if max_new is ABSENT else {"max_new_tokens": max_new})
        ids = [5] * n
        try:
            validate_one(tm, obj, ids)
        except ValueError as e:
            return "400", str(e)
        params = real_sampling.SamplingParams(**obj.sampling_params)
        allocator = _Stub(page_size=1)
        allocator.max_new_tokens_for_memory = lambda *a, **k: for_memory(allocator, *a, **k)
        max_req_len = min(CTX - 1, 1_000_000 - 1)
        scheduler = _Stub(max_new_tokens_limit=None, max_req_len=max_req_len, max_total_num_tokens=1_000_000,
                          kv_shard_widening=1, page_size=1, token_to_kv_pool_allocator=allocator,
                          sliding_window_size=None, chunked_prefill_size=8192)
        req = _Stub(origin_input_ids=list(ids), sampling_params=params, rid="r")
        init_max_new(scheduler, req)
        error = validate_input_length(req, max_req_len - 5, truncate)
        if error:
            return "400", error
        return "ok", len(req.origin_input_ids), req.sampling_params.max_new_tokens

    return run


@pytest.fixture(scope="module")
def truncating_engine() -> Iterator[Any]:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    cfg = SimEngineConfig(tokenizer=str(TINY_MODEL), context_length=CTX, allow_auto_truncate=True, answer_mode="none")
    handle = start_sim_engine_thread(cfg)
    try:
        yield handle.value
    finally:
        handle.stop()


async def our_outcome(client: EngineClient, url: str, n: int, max_new: Any) -> tuple[Any, ...]:
    sp: dict[str, Any] = {"ignore_eos": True}
    if max_new is not ABSENT:
        sp["max_new_tokens"] = max_new
    status, body = await client.post(url + "/generate", {"input_ids": [5] * n, "sampling_params": sp})
    if status == 400:
        assert set(body) == {"error"} and set(body["error"]) == {"message"}, body
        return "400", body["error"]["message"]
    assert status == 200, body
    meta = body["meta_info"]
    assert meta["finish_reason"]["type"] == "length", meta
    return "ok", meta["prompt_tokens"], meta["finish_reason"]["length"]


GRID = [(n, m) for n in (10, 57, 58, 59, 63, 64, 70) for m in (ABSENT, None, 0, 1, 4, 54, 55, 60)]


@pytest.mark.parametrize("truncate", [False, True], ids=["strict", "allow-auto-truncate"])
async def test_context_length_outcomes_match_real(truncate: bool, sim_engine: Any, truncating_engine: Any,
                                                  real_pipeline: Any) -> None:
    url = (truncating_engine if truncate else sim_engine).url
    kinds = set()
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        for n, max_new in GRID:
            want = real_pipeline(n, max_new, truncate)
            kinds.add(want[0])
            got = await our_outcome(client, url, n, max_new)
            assert got == want, (n, "absent" if max_new is ABSENT else max_new)
    assert kinds == ({"ok"} if truncate else {"ok", "400"})


@pytest.fixture(scope="module")
def real_duplicate_message() -> str:
    init_req_state = real_sglang.real_function(TM, "_init_req_state", {
        "APIServerReqTimeStats": lambda **k: _Stub(set_created_time=lambda t: None),
        "ReqState": lambda *a: a,
        "asyncio": asyncio,
    }, cls="TokenizerManager")
    tm = _Stub(rid_to_state={"dup-1": object()}, enable_trace=False, disaggregation_mode="null")
    obj = _Stub(rid="dup-1", is_single=True, received_time=0.0, bootstrap_room=None)
    with pytest.raises(ValueError) as err:
        init_req_state(tm, obj)
    return str(err.value)


async def test_duplicate_rid_in_flight(sim_engine: Any, real_duplicate_message: str) -> None:
    url = sim_engine.url
    body = {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 40, "ignore_eos": True}, "rid": "dup-1"}
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        first = asyncio.create_task(client.post(url + "/generate", body))
        await client.wait_running(url, 1)
        assert await client.post(url + "/generate", body) == (400, {"error": {"message": real_duplicate_message}})
        events = await client.stream(url, body)  # streaming: HTTP 200, then the error in-band
        assert events == [{"error": {"message": real_duplicate_message, "type": "invalid_request_error", "code": 400,
                                     "retryable": False}}, "[DONE]"]
        status, out = await first
        assert status == 200 and out["meta_info"]["finish_reason"]["type"] == "length"
        status, _ = await client.post(url + "/generate", body)  # free again once the first is done
        assert status == 200


async def test_duplicate_rid_while_waiting_behind_pause(sim_engine: Any, real_duplicate_message: str) -> None:
    url = sim_engine.url
    body = {"input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4}, "rid": "dup-1"}
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        assert (await client.post(url + "/pause_generation", {"mode": "abort"}))[0] == 200
        try:
            waiting = asyncio.create_task(client.post(url + "/generate", body))
            await asyncio.sleep(0.2)
            assert not waiting.done(), "a new request waits while paused"
            assert await client.post(url + "/generate", body) == (400, {"error": {"message": real_duplicate_message}})
        finally:
            await client.post(url + "/continue_generation", {})
        status, _ = await waiting
        assert status == 200
