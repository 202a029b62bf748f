"""The runtime's client through the REAL sglang-router 0.3.2: sticky sessions, the context learned
behind a router, power_of_two with our servers, and what the router does to sampling params.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSourceWithBuffer
from rollout_runtime.rollout.generate import generate
from rollout_runtime.sglang_rollout import generate_rollout
from rollout_runtime.types import Sample

from .conftest import HAS_ROUTER, TINY_MODEL

pytestmark = [pytest.mark.router, pytest.mark.skipif(not HAS_ROUTER, reason="sglang-router is not installed")]

TURNS = 3


@pytest.fixture()
def sim_workers() -> Iterator[Callable[..., list[Any]]]:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    handles: list[Any] = []

    def start(n: int, **cfg: Any) -> list[Any]:
        base = dict(tokenizer=str(TINY_MODEL), length_dist="fixed", length_median=6, answer_mode="none",
                    record_requests=10_000)
        base.update(cfg)
        for i in range(n):
            handles.append(start_sim_engine_thread(SimEngineConfig(**base), seed=i))
        return handles[-n:]

    try:
        yield start
    finally:
        for h in handles:
            h.stop()


async def multi_turn_generate(args: Any, sample: Sample, sampling_params: dict[str, Any]) -> Sample:
    """A multi-turn sample: TURNS calls of the default generate, an observation appended between them."""
    for turn in range(TURNS):
        sample = await generate(args, sample, dict(sampling_params))
        if turn < TURNS - 1:
            sample.append_response_tokens(args, tokens=[11, 12], trainable=False, text=" ok")
            sample.status = Sample.Status.PENDING
    return sample


def rows(n: int) -> list[dict[str, Any]]:
    return [{"prompt": f"Question {i}: what is {i}+{2 * i + 1}?", "label": str(3 * i + 1)} for i in range(n)]


def test_manual_policy_keeps_each_session_on_one_worker(tmp_path: Path, sim_workers: Callable[..., list[Any]],
                                                        router_launcher: Callable[..., str]) -> None:
    """Every request of a sample carries X-SMG-Routing-Key = its session id; with --policy manual the real
    router sends all of a session's turns to one worker (without the key it picks at random)."""
    workers = sim_workers(3)
    router = router_launcher([h.url for h in workers], policy="manual")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(12)))
    args = RolloutConfig(prompt_data=str(data), input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
                         sglang_router_url=router, rollout_batch_size=12, n_samples_per_prompt=1,
                         rollout_max_response_len=64, rm_type="math", router_policy="manual",
                         custom_generate_function_path=f"{__name__}.multi_turn_generate")
    samples = [s for g in generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples for s in g]
    assert len(samples) == 12 and len({s.session_id for s in samples}) == 12
    used: set[int] = set()
    for s in samples:
        prompt = s.tokens[: len(s.tokens) - s.response_length]
        hits = [(i, p) for i, h in enumerate(workers) for p in h.value.recorded_requests
                if p["input_ids"][: len(prompt)] == prompt]
        assert len(hits) == TURNS, (s.index, len(hits))
        assert len({i for i, _ in hits}) == 1, f"session {s.session_id} was spread over workers {[i for i, _ in hits]}"
        used |= {i for i, _ in hits}
    assert len(used) > 1  # sessions themselves are spread over the workers


def test_long_prompts_through_the_router(tmp_path: Path, sim_workers: Callable[..., list[Any]],
                                         router_launcher: Callable[..., str]) -> None:
    """The router answers /v1/models and /get_server_info itself, without the context length: the client reads
    it from the workers the router lists (the smallest), caps every request to the room, and the run ends."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    workers = sim_workers(1, context_length=256, length_median=1000) + sim_workers(1, context_length=200,
                                                                                   length_median=1000)
    router = router_launcher([h.url for h in workers])
    lengths = [10, 120, 150, 196, 260]
    prompts = []
    for n in lengths:
        ids = tok.encode(" ".join(f"w{i}" for i in range(n)), add_special_tokens=False)[:n]
        prompts.append({"prompt": tok.decode(ids), "label": "0", "metadata": {"n": n}})
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in prompts))
    args = RolloutConfig(prompt_data=str(data), input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
                         sglang_router_url=router, rollout_num_engines=2, rollout_batch_size=len(lengths),
                         n_samples_per_prompt=2, rollout_max_response_len=100, rm_type="math")
    samples = [s for g in generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples for s in g]
    for s in samples:
        n = s.metadata["n"]
        assert s.status == Sample.Status.TRUNCATED
        if n + 100 <= 200:
            assert s.response_length == 100
        elif n < 200 - 6:  # capped to the smaller worker's room; that worker cuts 2 more (context − 2 − input)
            assert s.response_length in (200 - n, 200 - 2 - n)
        else:
            assert s.response_length == 0 and "context_overflow" in s.metadata
    for h in workers:
        for body in h.value.recorded_requests:
            assert len(body["input_ids"]) + body["sampling_params"]["max_new_tokens"] <= 200


async def test_power_of_two_spreads_load_over_our_servers(sim_workers: Callable[..., list[Any]],
                                                          router_launcher: Callable[..., str]) -> None:
    """power_of_two works with servers that have no /get_load (sglang 0.5.23, ours): it compares the router's own
    in-flight counts then. Both workers get a fair share of concurrent requests."""
    import asyncio

    import aiohttp

    workers = sim_workers(2, token_latency=0.005, length_median=20)
    router = router_launcher([h.url for h in workers], policy="power_of_two")
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> int:
            body = {"input_ids": [5, 6, 7, i], "sampling_params": {"max_new_tokens": 20}}
            async with session.post(router + "/generate", json=body) as r:
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(64)))
    assert set(statuses) == {200}
    counts = [len(h.value.recorded_requests) for h in workers]
    assert sum(counts) == 64 and min(counts) >= 16, counts


def test_router_drops_spaces_between_special_tokens(sim_workers: Callable[..., list[Any]],
                                                    router_launcher: Callable[..., str], tmp_path: Path) -> None:
    """The client sends spaces_between_special_tokens: false (as slime); the router re-serialises sampling params
    without it. Nothing depends on it: a fast tokenizer (SGLang's default) decodes the same text either way."""
    from transformers import AutoTokenizer

    (worker,) = sim_workers(1)
    router = router_launcher([worker.url])
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(2)))
    args = RolloutConfig(prompt_data=str(data), input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
                         sglang_router_url=router, rollout_batch_size=2, rollout_max_response_len=16, rm_type="math")
    generate_rollout(args, 0, RolloutDataSourceWithBuffer(args))
    sent = worker.value.recorded_requests
    assert sent and all("spaces_between_special_tokens" not in p["sampling_params"] for p in sent)
    assert all(p["sampling_params"]["no_stop_trim"] is True for p in sent)  # the rest arrives
    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    assert tok.is_fast
    specials = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    ids = specials + tok.encode("hi", add_special_tokens=False) + specials
    assert tok.decode(ids, spaces_between_special_tokens=True) == tok.decode(ids, spaces_between_special_tokens=False)
