"""(a) Every /generate payload the runtime sends is one real SGLang 0.5.23 accepts.

The payloads are not written by hand: real rollouts run through ``rollout_runtime`` (plain groups,
stop strings and stop token ids, deterministic seeds, partial-rollout continuation, eval with its
own sampling settings) against a simulated engine that records every body it receives, exactly as
received. Each body then goes through the real contract gate (``api_types.GenerateRequest
.from_json_value``) and the real ``SamplingParams(**sampling_params).normalize(tokenizer)
.verify(vocab_size)``: the two checks SGLang runs before generating.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSourceWithBuffer
from rollout_runtime.sglang_rollout import generate_rollout
from rollout_runtime.types import Sample
from tests.conftest import TINY_MODEL, write_jsonl


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    # Slow enough that a rollout's stragglers are still running when its batch fills (partial rollout).
    cfg = SimEngineConfig(tokenizer=str(TINY_MODEL), token_latency=0.004, length_dist="uniform", length_min=4,
                          length_max=120, record_requests=100_000)
    handle = start_sim_engine_thread(cfg)
    try:
        yield handle.value
    finally:
        handle.stop()


def make_args(url: str, data: str, **kw: Any) -> RolloutConfig:
    base = dict(prompt_data=data, input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
                apply_chat_template=True, sglang_router_url=url, rollout_batch_size=2, n_samples_per_prompt=2,
                rollout_max_response_len=48, rm_type="math", sglang_server_concurrency=16)
    base.update(kw)
    return RolloutConfig(**base)


def payloads_of(engine: Any, fn: Any) -> list[dict[str, Any]]:
    engine.clear_recorded()
    fn()
    sent = engine.recorded_requests
    assert sent, "the scenario sent nothing"
    return sent


def assert_accepted(real_verdict: Any, payloads: list[dict[str, Any]]) -> None:
    for body in payloads:
        verdict = real_verdict(body)
        assert verdict is None, f"real SGLang 0.5.23 refuses {json.dumps(body)[:400]}: {verdict}"


def test_rollout_payloads(engine: Any, tmp_path: Path, arith_rows: list[dict[str, Any]], real_verdict: Any,
                          hf_tokenizer: Any) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    im_end = hf_tokenizer.convert_tokens_to_ids("<|im_end|>")
    args = make_args(engine.url, data, rollout_temperature=0.8, rollout_top_p=0.9, rollout_top_k=20,
                     rollout_stop=["\n\nUser:", "</answer>"], rollout_stop_token_ids=[im_end],
                     rollout_skip_special_tokens=True)
    sent = payloads_of(engine, lambda: generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)))
    sp = sent[0]["sampling_params"]
    assert sp["stop"] == ["\n\nUser:", "</answer>"] and sp["stop_token_ids"] == [im_end] and sp["top_k"] == 20
    assert_accepted(real_verdict, sent)


def test_default_settings_payloads(engine: Any, tmp_path: Path, arith_rows: list[dict[str, Any]],
                                   real_verdict: Any) -> None:
    """Defaults: top_k -1 (all), top_p 1, temperature 1, no stops."""
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    args = make_args(engine.url, data)
    sent = payloads_of(engine, lambda: generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)))
    assert sent[0]["sampling_params"]["top_k"] == -1
    assert_accepted(real_verdict, sent)


def test_deterministic_seed_payloads(engine: Any, tmp_path: Path, arith_rows: list[dict[str, Any]],
                                     real_verdict: Any) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    args = make_args(engine.url, data, sglang_enable_deterministic_inference=True, rollout_seed=7)
    sent = payloads_of(engine, lambda: generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)))
    assert {p["sampling_params"]["sampling_seed"] for p in sent} == {7, 8}
    assert_accepted(real_verdict, sent)


def test_partial_rollout_continuation_payloads(engine: Any, tmp_path: Path, arith_rows: list[dict[str, Any]],
                                               real_verdict: Any) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    max_len = 150
    args = make_args(engine.url, data, rollout_batch_size=1, over_sampling_batch_size=4, partial_rollout=True,
                     rollout_max_response_len=max_len, rm_type="random")
    source = RolloutDataSourceWithBuffer(args)
    first = payloads_of(engine, lambda: generate_rollout(args, 0, source))
    partial = [s for g in source.buffer for s in g if s.status == Sample.Status.ABORTED and s.response_length > 0]
    assert partial, "some requests should have been aborted mid-generation"
    target = partial[0]
    prev_tokens, prev_len = list(target.tokens), target.response_length
    source.buffer = [g for g in source.buffer if target in g]
    args.over_sampling_batch_size = 1
    second = payloads_of(engine, lambda: generate_rollout(args, 1, source))
    cont = [p for p in second if p["input_ids"] == prev_tokens]
    assert cont and cont[0]["sampling_params"]["max_new_tokens"] == max_len - prev_len
    assert_accepted(real_verdict, first + second)


def test_eval_payloads(engine: Any, tmp_path: Path, arith_rows: list[dict[str, Any]], real_verdict: Any) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    evald = write_jsonl(tmp_path / "e.jsonl", arith_rows[:4])
    args = make_args(engine.url, data, eval_prompt_data=["arith", evald], n_samples_per_eval_prompt=2,
                     eval_temperature=0.0, eval_top_p=0.5, eval_max_response_len=24, eval_min_new_tokens=2,
                     sglang_enable_deterministic_inference=True)
    sent = payloads_of(engine, lambda: generate_rollout(args, 0, None, evaluation=True))
    sp = sent[0]["sampling_params"]
    assert sp["temperature"] == 0.0 and sp["min_new_tokens"] == 2 and sp["max_new_tokens"] == 24
    assert_accepted(real_verdict, sent)
