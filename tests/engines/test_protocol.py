"""SGLang native protocol suite, run against both engines (simulated and dev/tiny-model).

Same requests, same response shapes: what a client written against real SGLang 0.5.23 relies on.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from tests.engines.helpers import EngineClient, EngineHandle, Stream

QUESTION = "What is 37+45?"
META_KEYS = {"id", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens", "weight_version", "e2e_latency"}


def long_body(engine: EngineHandle, n: int = 150, **extra: Any) -> dict[str, Any]:
    """A request that runs for ``n`` tokens (EOS ignored), long enough to be aborted mid-way."""
    return {
        "text": engine.chat_prompt(QUESTION),
        "sampling_params": {"max_new_tokens": n, "ignore_eos": True, "temperature": 1.0},
        "return_logprob": True,
        **extra,
    }


def greedy_body(engine: EngineHandle, **sp: Any) -> dict[str, Any]:
    return {
        "text": engine.chat_prompt(QUESTION),
        "sampling_params": {"max_new_tokens": 64, "temperature": 0.0, **sp},
    }


async def test_generate_text_and_input_ids(engine: EngineHandle, client: EngineClient) -> None:
    prompt = engine.chat_prompt(QUESTION)
    ids = engine.tokenizer.encode(prompt, add_special_tokens=False)
    by_text = await client.generate(engine.url, {"text": prompt, "sampling_params": {"max_new_tokens": 32}})
    by_ids = await client.generate(engine.url, {"input_ids": ids, "sampling_params": {"max_new_tokens": 32}, "rid": "r-ids"})
    for out in (by_text, by_ids):
        assert set(out) >= {"text", "output_ids", "meta_info"}
        meta = out["meta_info"]
        assert META_KEYS <= set(meta)
        assert meta["prompt_tokens"] == len(ids)
        assert meta["completion_tokens"] == len(out["output_ids"]) > 0
        assert meta["weight_version"] == "default"
        assert meta["finish_reason"]["type"] in ("stop", "length")
        assert isinstance(out["text"], str)
        assert "output_token_logprobs" not in meta
    assert by_ids["meta_info"]["id"] == "r-ids"
    assert len(by_text["meta_info"]["id"]) == 32  # uuid4 hex by default


async def test_finish_stop_on_eos(engine: EngineHandle, client: EngineClient) -> None:
    out = await client.generate(engine.url, greedy_body(engine, max_new_tokens=200))
    fr = out["meta_info"]["finish_reason"]
    assert fr["type"] == "stop"
    eos_id = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert fr["matched"] == eos_id == out["output_ids"][-1]
    assert "<|im_end|>" not in out["text"]
    # Text is the decoded output without the matched stop token.
    assert out["text"] == engine.tokenizer.decode(out["output_ids"][:-1], skip_special_tokens=True)
    assert "\\boxed{" in out["text"]


async def test_finish_length_and_max_new_tokens(engine: EngineHandle, client: EngineClient) -> None:
    for n in (1, 5, 17):
        body = {"text": engine.chat_prompt(QUESTION), "sampling_params": {"max_new_tokens": n, "ignore_eos": True}}
        out = await client.generate(engine.url, body)
        assert out["meta_info"]["finish_reason"] == {"type": "length", "length": n}
        assert len(out["output_ids"]) == out["meta_info"]["completion_tokens"] == n
    out = await client.generate(engine.url, {"text": "What is 1+2?", "sampling_params": {"max_new_tokens": 0}})
    assert out["output_ids"] == [] and out["text"] == ""
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 0}


async def test_min_new_tokens(engine: EngineHandle, client: EngineClient) -> None:
    out = await client.generate(engine.url, greedy_body(engine, max_new_tokens=60, min_new_tokens=30))
    assert out["meta_info"]["completion_tokens"] >= 30


async def test_stop_token_ids(engine: EngineHandle, client: EngineClient) -> None:
    ref = await client.generate(engine.url, greedy_body(engine))
    ids = ref["output_ids"]
    assert len(ids) >= 4
    target = ids[2]
    first = ids.index(target)
    out = await client.generate(engine.url, greedy_body(engine, stop_token_ids=[target]))
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": target}
    assert out["output_ids"] == ids[: first + 1]
    assert out["text"] == engine.tokenizer.decode(ids[:first], skip_special_tokens=True)


async def test_stop_strings_trim_and_no_stop_trim(engine: EngineHandle, client: EngineClient) -> None:
    ref = await client.generate(engine.url, greedy_body(engine))
    full = ref["text"]
    assert len(full) >= 6
    stop = full[2:5]
    cut = full.find(stop)
    out = await client.generate(engine.url, greedy_body(engine, stop=[stop, "never-appears"]))
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    assert out["text"] == full[:cut]
    # output_ids keep the token that completed the stop string; it is a prefix of the free run.
    assert out["output_ids"] == ref["output_ids"][: len(out["output_ids"])]
    kept = await client.generate(engine.url, greedy_body(engine, stop=stop, no_stop_trim=True))
    assert kept["text"].startswith(full[:cut] + stop)
    assert kept["meta_info"]["finish_reason"]["matched"] == stop


async def test_contract_gate_errors(engine: EngineHandle, client: EngineClient) -> None:
    base = {"text": "What is 1+2?"}
    status, body = await client.post(engine.url + "/generate", {**base, "sampling_params": {"max_tokens": 8}})
    assert status == 400 and isinstance(body["error"], str)
    assert "unknown field `max_tokens`" in body["error"]
    status, body = await client.post(engine.url + "/generate", {**base, "sampling_params": {"temperature": "0.5"}})
    assert status == 400 and "invalid type" in body["error"] and "f64" in body["error"]
    status, body = await client.post(engine.url + "/generate", {**base, "sampling_params": {"top_p": 1.5}})
    assert status == 400 and "top_p" in body["error"]["message"]
    # Unknown top-level keys are ignored, like SGLang.
    status, body = await client.post(engine.url + "/generate", {**base, "no_such_field": 1, "sampling_params": {"max_new_tokens": 2}})
    assert status == 200
    status, body = await client.post(engine.url + "/generate", {"sampling_params": {}})
    assert status == 400


async def test_logprobs_shape(engine: EngineHandle, client: EngineClient) -> None:
    body = {"text": engine.chat_prompt(QUESTION), "sampling_params": {"max_new_tokens": 12}, "return_logprob": True}
    out = await client.generate(engine.url, body)
    lps = out["meta_info"]["output_token_logprobs"]
    assert len(lps) == out["meta_info"]["completion_tokens"] == len(out["output_ids"])
    for (lp, tid, text), oid in zip(lps, out["output_ids"]):
        assert isinstance(lp, float) and lp <= 0.0
        assert tid == oid
        assert text is None
    out = await client.generate(engine.url, {**body, "return_text_in_logprobs": True})
    assert all(isinstance(t, str) for _, _, t in out["meta_info"]["output_token_logprobs"])
    # Prompt logprobs from position 0: the first has no context (None).
    out = await client.generate(engine.url, {**body, "logprob_start_len": 0, "sampling_params": {"max_new_tokens": 0}})
    ilps = out["meta_info"]["input_token_logprobs"]
    assert len(ilps) == out["meta_info"]["prompt_tokens"]
    assert ilps[0][0] is None and all(isinstance(x[0], float) and x[0] <= 0 for x in ilps[1:])


async def test_streaming_cumulative_chunks(engine: EngineHandle, client: EngineClient) -> None:
    body = long_body(engine, n=40)
    events = await client.stream(engine.url, body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) >= 2, "a 40-token generation with latency streams more than one chunk"
    for prev, cur in itertools.pairwise(chunks):
        assert cur["output_ids"][: len(prev["output_ids"])] == prev["output_ids"]
        assert len(cur["meta_info"]["output_token_logprobs"]) == len(cur["output_ids"])
    assert all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    final = chunks[-1]
    assert final["meta_info"]["finish_reason"] == {"type": "length", "length": 40}
    assert len(final["output_ids"]) == 40 and "e2e_latency" in final["meta_info"]
    # Greedy streaming equals greedy non-streaming.
    g = greedy_body(engine)
    plain = await client.generate(engine.url, g)
    streamed = await client.stream(engine.url, g)
    assert streamed[-2]["text"] == plain["text"] and streamed[-2]["output_ids"] == plain["output_ids"]


async def test_abort_by_rid_returns_partial(engine: EngineHandle, client: EngineClient) -> None:
    """``/abort_request`` takes a rid the server tracks; the scheduler then aborts every request whose
    rid starts with it (tokenizer_manager.abort_request + scheduler.abort_request). A rid the server
    does not track, even a prefix of one it does, is ignored."""
    target = Stream(client, engine.url, long_body(engine, rid="abortme"))
    sibling = Stream(client, engine.url, long_body(engine, rid="abortme-2"))
    other = asyncio.create_task(client.generate(engine.url, long_body(engine, n=30, rid="keep-1")))
    await target.wait_produced()
    await sibling.wait_produced()
    status, body = await client.post(engine.url + "/abort_request", {"rid": "kee"})  # untracked: ignored
    assert status == 200 and body is None
    status, body = await client.post(engine.url + "/abort_request", {"rid": "abortme"})
    assert status == 200 and body is None  # empty body
    for stream in (target, sibling):
        await stream.task
        out = stream.final
        assert out is not None
        meta = out["meta_info"]
        assert meta["finish_reason"] == {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}
        assert 0 < meta["completion_tokens"] < 150
        assert len(out["output_ids"]) == len(meta["output_token_logprobs"]) == meta["completion_tokens"]
        assert out["text"] == engine.tokenizer.decode(out["output_ids"], skip_special_tokens=True)
    kept = await other
    assert kept["meta_info"]["finish_reason"]["type"] == "length"
    # The body is required (FastAPI's 400 validation error when it is missing).
    async with client.session.post(engine.url + "/abort_request") as r:
        assert r.status == 400 and (await r.json())["object"] == "error"


async def test_abort_all_and_loads(engine: EngineHandle, client: EngineClient) -> None:
    await client.wait_idle(engine.url)
    tasks = [asyncio.create_task(client.generate(engine.url, long_body(engine))) for _ in range(3)]
    streamed = asyncio.create_task(client.stream(engine.url, long_body(engine)))
    await client.wait_running(engine.url, 4)
    status, loads = await client.get(engine.url + "/v1/loads?include=core")
    assert status == 200
    load = loads["loads"][0]
    assert load["num_running_reqs"] + load["num_waiting_reqs"] == 4
    assert "num_total_reqs" not in load  # load_snapshot.LoadSnapshot has no such key
    await asyncio.sleep(0.05)
    status, _ = await client.post(engine.url + "/abort_request", {"abort_all": True})
    assert status == 200
    for out in await asyncio.gather(*tasks):
        assert out["meta_info"]["finish_reason"]["type"] == "abort"
        assert out["meta_info"]["completion_tokens"] < 150
    events = await streamed
    assert events[-1] == "[DONE]" and events[-2]["meta_info"]["finish_reason"]["type"] == "abort"
    await client.wait_idle(engine.url, timeout=5)


async def test_client_disconnect_aborts(engine: EngineHandle, client: EngineClient) -> None:
    await client.wait_idle(engine.url)
    task = asyncio.create_task(client.generate(engine.url, long_body(engine, n=200)))
    await client.wait_running(engine.url, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.wait_idle(engine.url, timeout=5)


async def test_concurrent_requests_interleave(engine: EngineHandle, client: EngineClient) -> None:
    """A short request sent after a long one finishes first: requests are served concurrently."""
    long_task = asyncio.create_task(client.generate(engine.url, long_body(engine, n=120)))
    await client.wait_running(engine.url, 1)
    short = await client.generate(engine.url, long_body(engine, n=3))
    assert short["meta_info"]["completion_tokens"] == 3
    assert not long_task.done()
    many = await asyncio.gather(*(client.generate(engine.url, long_body(engine, n=8)) for _ in range(8)))
    assert all(m["meta_info"]["completion_tokens"] == 8 for m in many)
    assert (await long_task)["meta_info"]["completion_tokens"] == 120


async def test_batch_and_parallel_sampling(engine: EngineHandle, client: EngineClient) -> None:
    ids = engine.tokenizer.encode(engine.chat_prompt(QUESTION), add_special_tokens=False)
    outs = await client.generate(
        engine.url, {"input_ids": [ids, ids[:-1]], "rid": "batch", "sampling_params": {"max_new_tokens": 4, "ignore_eos": True}}
    )
    assert isinstance(outs, list) and len(outs) == 2
    assert [o["meta_info"]["id"] for o in outs] == ["batch_0", "batch_1"]
    assert [o["meta_info"]["prompt_tokens"] for o in outs] == [len(ids), len(ids) - 1]
    outs = await client.generate(engine.url, {"input_ids": ids, "sampling_params": {"max_new_tokens": 4, "n": 3}})
    assert isinstance(outs, list) and len(outs) == 3
    assert len({o["meta_info"]["id"] for o in outs}) == 3


async def test_info_and_health_endpoints(engine: EngineHandle, client: EngineClient) -> None:
    url = engine.url
    for path in ("/health", "/health_generate"):
        status, body = await client.get(url + path)
        assert status == 200 and body == ""
    status, _ = await client.get(url + "/ready")
    assert status == 200
    for path in ("/model_info", "/get_model_info"):
        status, info = await client.get(url + path)
        assert status == 200
        assert {"model_path", "served_model_name", "tokenizer_path", "is_generation", "weight_version"} <= set(info)
    for path in ("/server_info", "/get_server_info"):
        status, info = await client.get(url + path)
        assert status == 200 and info["tp_size"] == 1 and info["dp_size"] == 1 and info["version"]
    status, models = await client.get(url + "/v1/models")
    assert status == 200 and models["object"] == "list" and models["data"][0]["object"] == "model"
    status, loads = await client.get(url + "/v1/loads")
    assert status == 200 and {"num_running_reqs", "num_waiting_reqs"} <= set(loads["loads"][0])
    await client.wait_idle(url)
    status, text = await client.get(url + "/flush_cache")
    assert status == 200 and text.startswith("Cache flushed")
    status, _ = await client.get(url + "/get_load")
    assert status == 404  # sglang 0.5.23 has no /get_load either


async def test_weight_version(engine: EngineHandle, client: EngineClient) -> None:
    status, body = await client.post(engine.url + "/update_weight_version", {"new_version": "v7"})
    assert status == 200 and body["success"]
    try:
        out = await client.generate(engine.url, {"text": "What is 1+1?", "sampling_params": {"max_new_tokens": 2}})
        assert out["meta_info"]["weight_version"] == "v7"
        status, info = await client.get(engine.url + "/model_info")
        assert info["weight_version"] == "v7"
    finally:
        await client.post(engine.url + "/update_weight_version", {"new_version": "default"})


async def test_recorded_payloads(engine: EngineHandle, client: EngineClient) -> None:
    body = {"input_ids": [1, 286, 201], "sampling_params": {"max_new_tokens": 1}, "rid": "recorded-1", "extra": {"x": 1}}
    await client.generate(engine.url, body)
    assert engine.engine.recorded_requests[-1] == body


async def test_context_length_reported_and_enforced(engine: EngineHandle, client: EngineClient) -> None:
    """The context length is /v1/models' max_model_len (and /server_info's max_req_input_len is it
    minus 6); a request that does not fit is SGLang's 400, in-band for a streaming request."""
    url = engine.url
    _, models = await client.get(url + "/v1/models")
    ctx = models["data"][0]["max_model_len"]
    _, info = await client.get(url + "/server_info")
    assert info["max_req_input_len"] == ctx - 6
    too_long = {"input_ids": [5] * (ctx - 10), "sampling_params": {"max_new_tokens": 20}}
    status, body = await client.post(url + "/generate", too_long)
    assert status == 400 and body["error"]["message"] == (
        f"Requested token count exceeds the model's maximum context length of {ctx} tokens. You requested a total of "
        f"{ctx + 10} tokens: {ctx - 10} tokens from the input messages and 20 tokens for the completion. Please reduce "
        "the number of tokens in the input messages or the completion to fit within the limit.")
    events = await client.stream(url, too_long)
    assert events[-1] == "[DONE]" and events[0]["error"]["message"] == body["error"]["message"]
    status, body = await client.post(url + "/generate", {"input_ids": [5] * ctx, "sampling_params": {"max_new_tokens": 1}})
    assert status == 400 and body["error"]["message"] == (
        f"The input ({ctx} tokens) is longer than the model's context length ({ctx} tokens).")
    # Fits: the scheduler still keeps two positions free (max_new_tokens <= context - 2 - input).
    out = await client.generate(url, {"input_ids": [5] * (ctx - 10),
                                      "sampling_params": {"max_new_tokens": 10, "ignore_eos": True}})
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 8}
