"""A request aborted while still queued, through the runtime's client.

SGLang 0.5.23 answers it with `finish_reason {"type": "abort", "message": "Abort in waiting
queue"}`, no output and a smaller `meta_info` (no `prompt_tokens`, no `cached_tokens`), and records
a weight-version span only for a request that has output tokens. The sample comes back ABORTED
with nothing counted: no weight version (none of its tokens came from one), no prompt tokens in
its prefix-cache counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from rollout_runtime.config import RolloutConfig
from rollout_runtime.rollout.generate import GenerateState, generate
from rollout_runtime.types import Sample
from tests.conftest import TINY_MODEL
from tests.engines.helpers import EngineClient


@pytest.fixture(scope="module")
def one_slot_engine() -> Iterator[Any]:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    handle = start_sim_engine_thread(SimEngineConfig(tokenizer=str(TINY_MODEL), max_running_requests=1,
                                                     token_latency=0.01, length_dist="fixed", length_median=500,
                                                     answer_mode="none"))
    try:
        yield handle.value
    finally:
        handle.stop()


async def test_a_sample_aborted_in_the_queue_counts_nothing(one_slot_engine: Any) -> None:
    url = one_slot_engine.url
    args = RolloutConfig(hf_checkpoint=str(TINY_MODEL), sglang_router_url=url, rollout_batch_size=1,
                         rollout_max_response_len=400)
    running, queued = Sample(prompt="first", index=0), Sample(prompt="second", index=1)
    first = asyncio.create_task(generate(args, running, {"max_new_tokens": 400}))
    async with aiohttp.ClientSession() as session:
        control = EngineClient(session)
        await control.wait_running(url, 1)
        second = asyncio.create_task(generate(args, queued, {"max_new_tokens": 400}))
        deadline = asyncio.get_running_loop().time() + 20
        while one_slot_engine.load_counts() != (1, 1):  # (running, waiting)
            assert asyncio.get_running_loop().time() < deadline, one_slot_engine.load_counts()
            await asyncio.sleep(0.01)
        while not any(st.running and st.out_ids for st in list(one_slot_engine.server.core.active)):
            assert asyncio.get_running_loop().time() < deadline, "the running request produced nothing"
            await asyncio.sleep(0.01)  # until the running one has output tokens
        await control.post(url + "/abort_request", {"abort_all": True})
        await asyncio.gather(first, second)
    assert queued.status == Sample.Status.ABORTED and queued.response_length == 0
    assert queued.weight_versions == [] and queued.prefix_cache_info.total_prompt_tokens == 0
    assert running.status == Sample.Status.ABORTED and running.response_length > 0
    assert running.weight_versions == ["default"] and running.prefix_cache_info.total_prompt_tokens > 0
    await GenerateState(args).aclose()
