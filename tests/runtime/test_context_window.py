"""Prompts near and past the context length, against a stand-in that enforces SGLang 0.5.23's context check.

Real SGLang refuses (400) a request whose input plus `max_new_tokens` exceeds the context length,
and one whose input reaches `max_req_input_len` (context − 6). The client caps `max_new_tokens` to
the room left, learning the context from the server; a sample with no room ends TRUNCATED without
a request; and no 400 of that kind ends a rollout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSourceWithBuffer
from rollout_runtime.http_client import EngineRequestError, HttpClient
from rollout_runtime.output import read_batch
from rollout_runtime.rollout.context import context_overflow, discover_limits
from rollout_runtime.rollout.generate import generate
from rollout_runtime.runner import Runner
from rollout_runtime.sglang_rollout import generate_rollout
from rollout_runtime.types import Sample
from tests.conftest import TINY_MODEL, write_jsonl

CTX = 256
MAX_RESPONSE = 128


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_MODEL))


def start_engine(context_length: int = CTX) -> Any:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    # Every answer runs to the cap: a response ends only when max_new_tokens (or the room) is used up.
    cfg = SimEngineConfig(tokenizer=str(TINY_MODEL), context_length=context_length, length_dist="fixed",
                          length_median=4 * CTX, answer_mode="none", record_requests=10_000)
    return start_sim_engine_thread(cfg)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    handle = start_engine()
    try:
        yield handle.value
    finally:
        handle.stop()


def prompt_of(tokenizer: Any, n: int) -> str:
    """A prompt of exactly `n` tokens."""
    ids = tokenizer.encode(" ".join(f"w{i}" for i in range(n)), add_special_tokens=False)[:n]
    text = tokenizer.decode(ids)
    assert len(tokenizer.encode(text, add_special_tokens=False)) == n
    return text


#: prompt lengths: short; longer than context − max_response_len (capped); one past SGLang's
#: longest input (context − 6); one past the context itself
LENGTHS = {"short": 20, "capped": 200, "capped_more": 240, "past_max_input": CTX - 5, "past_context": CTX + 30}


def long_prompt_rows(tokenizer: Any) -> list[dict[str, Any]]:
    return [{"prompt": prompt_of(tokenizer, n), "label": "0", "metadata": {"kind": kind}} for kind, n in LENGTHS.items()]


def args_for(url: str, data: str, **kw: Any) -> RolloutConfig:
    base = dict(prompt_data=data, input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
                sglang_router_url=url, rollout_batch_size=len(LENGTHS), n_samples_per_prompt=2,
                rollout_max_response_len=MAX_RESPONSE, rm_type="math", sglang_server_concurrency=8)
    base.update(kw)
    return RolloutConfig(**base)


def check_long_prompt_samples(samples: list[Sample], context: int = CTX) -> None:
    by_kind: dict[str, list[Sample]] = {}
    for s in samples:
        by_kind.setdefault(s.metadata["kind"], []).append(s)
    assert set(by_kind) == set(LENGTHS)
    for kind, group in by_kind.items():
        n = LENGTHS[kind]
        for s in group:
            assert s.status == Sample.Status.TRUNCATED, (kind, s.status)
            assert len(s.tokens) == n + s.response_length
            if kind == "short":
                assert s.response_length == MAX_RESPONSE and "context_overflow" not in s.metadata
            elif kind.startswith("capped"):
                # cut short by the room left: SGLang generates up to context − 2 − input (max_req_len − input − 1)
                assert s.response_length == context - 2 - n and "context_overflow" not in s.metadata
            else:  # no room at all: not sent, nothing generated, and the reason recorded
                assert s.response_length == 0 and s.metadata["context_overflow"]["input_tokens"] == n


def check_sent_requests_fit(recorded: list[dict[str, Any]], context: int = CTX) -> None:
    assert recorded
    for body in recorded:
        n, max_new = len(body["input_ids"]), body["sampling_params"]["max_new_tokens"]
        assert n < context - 6 and n + max_new <= context, (n, max_new)


def test_a_dataset_of_long_prompts_runs_to_completion(engine: Any, tokenizer: Any, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "long.jsonl", long_prompt_rows(tokenizer))
    out = tmp_path / "out"
    engine.clear_recorded()
    args = args_for(engine.url, data, num_rollout=1, output_dir=str(out))
    summary = Runner(args).run()
    assert summary.completed == 2 * len(LENGTHS)
    samples = [s for p in sorted(out.glob("rollout_*")) for s in read_batch(str(p))]
    check_long_prompt_samples(samples)
    check_sent_requests_fit(engine.recorded_requests)
    # the two kinds that do not fit were never sent: 3 kinds x 2 samples reached the engine
    assert len(engine.recorded_requests) == 6


def test_configured_context_length_wins_over_the_servers(engine: Any, tokenizer: Any, tmp_path: Path) -> None:
    """rollout_max_context_len smaller than the server's: requests are capped to it."""
    data = write_jsonl(tmp_path / "long.jsonl", long_prompt_rows(tokenizer)[:2])  # short (20) and capped (200)
    engine.clear_recorded()
    args = args_for(engine.url, data, rollout_batch_size=2, rollout_max_context_len=210)
    samples = [s for g in generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples for s in g]
    assert sorted(s.response_length for s in samples) == [10, 10, MAX_RESPONSE, MAX_RESPONSE]
    assert sorted(p["sampling_params"]["max_new_tokens"] for p in engine.recorded_requests) == \
        [10, 10, MAX_RESPONSE, MAX_RESPONSE]


def test_context_400s_from_the_server_are_per_sample(engine: Any, tokenizer: Any, tmp_path: Path) -> None:
    """A configured context the server does not have: its 400s never end the rollout. "Requested token count
    exceeds": asked again for the room the server counts; "input longer than the context": that sample ends
    TRUNCATED with nothing generated."""
    rows = [r for r in long_prompt_rows(tokenizer) if r["metadata"]["kind"] in ("short", "capped", "past_context")]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    engine.clear_recorded()
    args = args_for(engine.url, data, rollout_batch_size=3, rollout_max_context_len=4 * CTX)
    samples = [s for g in generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples for s in g]
    kinds = {k: [s for s in samples if s.metadata["kind"] == k] for k in ("short", "capped", "past_context")}
    assert [s.response_length for s in kinds["short"]] == [MAX_RESPONSE] * 2
    assert [s.response_length for s in kinds["capped"]] == [CTX - 2 - LENGTHS["capped"]] * 2
    for s in kinds["past_context"]:
        assert s.status == Sample.Status.TRUNCATED and s.response_length == 0
        assert "is longer than the model's context length (256 tokens)" in s.metadata["context_overflow"]["message"]
    capped_asks = sorted(p["sampling_params"]["max_new_tokens"] for p in engine.recorded_requests
                         if len(p["input_ids"]) == LENGTHS["capped"])
    assert capped_asks == [CTX - LENGTHS["capped"]] * 2 + [MAX_RESPONSE] * 2  # refused once, then the room


async def test_any_other_4xx_fails_fast_with_the_engines_message(engine: Any) -> None:
    args = RolloutConfig(hf_checkpoint=str(TINY_MODEL), sglang_router_url=engine.url, rollout_batch_size=1,
                         rollout_max_response_len=8)
    sample = Sample(prompt="hello", index=0)
    with pytest.raises(EngineRequestError, match="not_a_sampling_param"):
        await generate(args, sample, {"max_new_tokens": 8, "not_a_sampling_param": 1})


def test_context_overflow_reads_the_servers_numbers() -> None:
    def err(text: str) -> EngineRequestError:
        return EngineRequestError(f"POST u -> HTTP 400: {text}", status=400)

    total = context_overflow(err("Requested token count exceeds the model's maximum context length of 256 tokens. You "
                                 "requested a total of 300 tokens: 212 tokens from the input messages and 88 tokens for "
                                 "the completion. Please reduce ..."))
    assert total is not None and (total.input_tokens, total.limit, total.room) == (212, 256, 44)
    longer = context_overflow(err("The input (300 tokens) is longer than the model's context length (256 tokens)."))
    assert longer is not None and (longer.input_tokens, longer.room) == (300, 0)
    over_max = context_overflow(err("Input length (251 tokens) exceeds the maximum allowed length (250 tokens). Use a "
                                    "shorter input or enable --allow-auto-truncate."))
    assert over_max is not None and (over_max.input_tokens, over_max.limit, over_max.room) == (251, 250, 0)
    assert context_overflow(err("Duplicate request ID detected: x")) is None
    assert context_overflow(EngineRequestError("HTTP 404: Not Found", status=404)) is None


async def test_limits_learned_from_the_server(engine: Any) -> None:
    client = HttpClient(4)
    try:
        limits = await discover_limits(client, engine.url)
    finally:
        await client.close()
    assert (limits.context_length, limits.max_input_len) == (CTX, CTX - 6)
    assert limits.room(CTX - 7) == 7 and limits.room(CTX - 6) == 0 and limits.room(10) == CTX - 10


async def test_limits_unknown_when_the_server_reports_none(caplog: pytest.LogCaptureFixture) -> None:
    """A URL that serves neither /v1/models nor /server_info: no cap, and a warning that says how to set one."""
    from aiohttp import web

    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = HttpClient(4)
    try:
        limits = await discover_limits(client, f"http://127.0.0.1:{port}")
    finally:
        await client.close()
        await runner.cleanup()
    assert limits.context_length is None and limits.room(10_000) is None
    assert "rollout_max_context_len" in caplog.text


def test_min_new_tokens_follows_the_cap(engine: Any, tokenizer: Any, tmp_path: Path) -> None:
    """eval's min_new_tokens above the room left would be a 400 (min > max): it is lowered with the cap."""
    data = write_jsonl(tmp_path / "long.jsonl", long_prompt_rows(tokenizer)[1:2])  # 200 tokens: room 56
    engine.clear_recorded()
    args = args_for(engine.url, data, rollout_batch_size=1, eval_prompt_data=["long", data],
                    eval_min_new_tokens=100, n_samples_per_eval_prompt=1)
    out = generate_rollout(args, 0, None, evaluation=True)
    (s,) = out.data["long"]["samples"]
    assert s.status == Sample.Status.TRUNCATED and s.response_length == CTX - 2 - 200
    (body,) = engine.recorded_requests
    assert body["sampling_params"]["max_new_tokens"] == body["sampling_params"]["min_new_tokens"] == CTX - 200
