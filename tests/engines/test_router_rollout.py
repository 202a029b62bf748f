"""`generate_rollout` through the real sglang-router, in front of two engines of each kind.

The router has no /abort_request, so a rollout can only stop its stragglers by listing the
workers with the router's GET /workers and aborting each one: these tests fail if the runtime's
abort path does not reach both workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSourceWithBuffer
from rollout_runtime.sglang_rollout import generate_rollout, last_rollout_stats
from rollout_runtime.types import Sample

from .conftest import HAS_MODEL, HAS_ROUTER, HAS_TORCH, TINY_MODEL

pytestmark = [pytest.mark.router, pytest.mark.skipif(not HAS_ROUTER, reason="sglang-router is not installed")]


def dataset(tmp_path: Path) -> str:
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {10 + i}+{20 + i}?", "label": str(30 + 2 * i)}) + "\n"
                            for i in range(60)))
    return str(path)


def rollout_args(router: str, data: str, **kw: Any) -> RolloutConfig:
    base = dict(prompt_data=data, input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
                apply_chat_template=True, sglang_router_url=router, rollout_num_engines=2, sglang_server_concurrency=16,
                rollout_batch_size=1, n_samples_per_prompt=2, over_sampling_batch_size=6, partial_rollout=True,
                rm_type="math")
    base.update(kw)
    return RolloutConfig(**base)


def check_rollout_through_router(args: RolloutConfig, engines: list[Any], *, require_partial: bool) -> None:
    source = RolloutDataSourceWithBuffer(args)
    groups = generate_rollout(args, 0, source).samples
    assert len(groups) == 1 and all(s.status in (Sample.Status.COMPLETED, Sample.Status.TRUNCATED) for s in groups[0])
    assert all(s.reward in (0, 1) for s in groups[0])
    # both workers got work through the router, and both are idle again: the abort reached each
    assert all(e.recorded_requests for e in engines)
    assert all(e.load_counts() == (0, 0) for e in engines)
    assert source.get_buffer_length() == 5 and last_rollout_stats(args).aborted == 10
    for s in (s for g in source.buffer for s in g):  # recycled whole: finished members keep their reward
        assert s.status in (Sample.Status.ABORTED, Sample.Status.PENDING) or s.reward is not None
    partial = [s for g in source.buffer for s in g if s.status == Sample.Status.ABORTED and s.response_length > 0]
    if not require_partial and not partial:
        return  # every request had finished before the abort landed: nothing to continue
    assert partial, "in-flight requests should have come back aborted with their partial output"

    # the continuation of a partial sample goes through the router too
    target = partial[0]
    prev_tokens, prev_len = list(target.tokens), target.response_length
    source.buffer = [g for g in source.buffer if target in g]
    args.over_sampling_batch_size = 1
    for e in engines:
        e.clear_recorded()
    generate_rollout(args, 1, source)
    sent = [p for e in engines for p in e.recorded_requests if p["input_ids"] == prev_tokens]
    assert sent and sent[0]["sampling_params"]["max_new_tokens"] == args.rollout_max_response_len - prev_len


def test_generate_rollout_through_router_with_sim_engines(tmp_path: Path,
                                                          router_launcher: Callable[[list[str]], str]) -> None:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    cfg = SimEngineConfig(tokenizer=str(TINY_MODEL), token_latency=0.01, length_dist="uniform", length_min=10,
                          length_max=150)
    handles = [start_sim_engine_thread(cfg, seed=i) for i in range(2)]
    try:
        router = router_launcher([h.url for h in handles])
        check_rollout_through_router(rollout_args(router, dataset(tmp_path), rollout_max_response_len=200),
                                     [h.value for h in handles], require_partial=True)
    finally:
        for h in handles:
            h.stop()


@pytest.mark.skipif(not (HAS_TORCH and HAS_MODEL), reason="needs torch and examples/tiny-model weights")
def test_generate_rollout_through_router_with_dev_engines(tmp_path: Path,
                                                          router_launcher: Callable[[list[str]], str]) -> None:
    from rollout_runtime.engines.dev import DevEngineConfig, start_dev_engine_thread

    # ~40 ms per decode step, so requests are usually mid-generation when the first group completes
    # (the tiny model's answers are all about 8 tokens, so sometimes all have finished: see require_partial)
    handles = [start_dev_engine_thread(DevEngineConfig(model=str(TINY_MODEL), seed=i, min_step_interval=0.04))
               for i in range(2)]
    try:
        router = router_launcher([h.url for h in handles])
        check_rollout_through_router(rollout_args(router, dataset(tmp_path), rollout_max_response_len=24),
                                     [h.value for h in handles], require_partial=False)
    finally:
        for h in handles:
            h.stop()
