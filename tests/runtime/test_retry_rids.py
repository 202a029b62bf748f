"""A retry never reuses a request id SGLang may still hold.

Real SGLang 0.5.23 registers a request's rid before it waits out a pause (`generate_request`:
`_init_req_state`, then `is_pause_cond.wait_for`) and only polls for a client that went away once
the request runs (every SGLANG_REQUEST_STATE_WAIT_TIMEOUT = 4 s). So a client that times out while
the server is paused for a weight update, and retries, finds its old rid still there: 400
"Duplicate request ID detected". Our stand-in drops a request the moment its client disconnects,
so here a gateway that keeps the upstream request open after the client gave up stands in for
that part of real SGLang.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rollout_runtime.config import RolloutConfig
from rollout_runtime.http_client import HttpClient
from rollout_runtime.rollout.generate import GenerateState, generate
from rollout_runtime.types import Sample
from tests.conftest import TINY_MODEL
from tests.engines.helpers import EngineClient


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    handle = start_sim_engine_thread(SimEngineConfig(tokenizer=str(TINY_MODEL), length_dist="fixed", length_median=8,
                                                     answer_mode="none", record_requests=100))
    try:
        yield handle.value
    finally:
        handle.stop()


@pytest.fixture()
async def holding_gateway(engine: Any) -> AsyncIterator[str]:
    """Forwards /generate to the engine and keeps the upstream request open when its client goes away
    (aiohttp does not cancel a handler on disconnect by default), as real SGLang keeps the rid."""
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        async with session.post(engine.url + "/generate", data=await request.read(),
                                headers={"Content-Type": "application/json"}) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")

    async def get(request: web.Request) -> web.Response:
        async with session.get(engine.url + request.path_qs) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/generate", forward)
    app.router.add_get("/{tail:.*}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


async def until_recorded(engine: Any, n: int, task: asyncio.Task) -> None:
    """Until the engine has received `n` requests (or the caller's task ended, e.g. with a 400)."""
    deadline = asyncio.get_running_loop().time() + 30
    while len(engine.recorded_requests) < n and not task.done():
        assert asyncio.get_running_loop().time() < deadline, "no retry reached the engine"
        await asyncio.sleep(0.02)


async def test_retry_after_a_timeout_during_a_pause_uses_a_fresh_rid(engine: Any, holding_gateway: str) -> None:
    args = RolloutConfig(hf_checkpoint=str(TINY_MODEL), sglang_router_url=holding_gateway, rollout_batch_size=1,
                         rollout_max_response_len=8, http_request_timeout=1.0, http_retry_backoff=0.05,
                         http_max_retries=3, abort_scope="own")
    state = GenerateState(args)
    engine.clear_recorded()
    async with aiohttp.ClientSession() as session:
        control = EngineClient(session)
        assert (await control.post(engine.url + "/pause_generation", {"mode": "abort"}))[0] == 200
        try:
            task = asyncio.create_task(generate(args, Sample(prompt="What is 1+1?", index=0), {"max_new_tokens": 8}))
            # the first attempt times out and is retried while the first is still held by the paused server
            await until_recorded(engine, 2, task)
            assert len(state.inflight_rids) == 1  # only the attempt now running is ours to abort
        finally:
            await control.post(engine.url + "/continue_generation", {})
        sample = await task
    rids = [p["rid"] for p in engine.recorded_requests]
    assert len(rids) >= 2 and len(set(rids)) == len(rids), rids
    assert all(r.startswith(state.rid_prefix) for r in rids)
    assert sample.status in (Sample.Status.COMPLETED, Sample.Status.TRUNCATED) and 0 < sample.response_length <= 8
    assert state.inflight_rids == set()
    await state.aclose()


async def test_slime_style_post_retries_under_a_fresh_rid(engine: Any, holding_gateway: str) -> None:
    """Custom generate functions post their own bodies (slime's http_utils.post): a `rid` in them is
    renewed per attempt too."""
    client = HttpClient(4, max_retries=3, backoff=0.05, timeout=1.0)
    engine.clear_recorded()
    async with aiohttp.ClientSession() as session:
        control = EngineClient(session)
        await control.post(engine.url + "/pause_generation", {"mode": "abort"})
        try:
            body = {"rid": "my-request", "input_ids": [5, 6, 7], "sampling_params": {"max_new_tokens": 4}}
            task = asyncio.create_task(client.post(holding_gateway + "/generate", body))
            await until_recorded(engine, 2, task)
        finally:
            await control.post(engine.url + "/continue_generation", {})
        out = await task
    await client.close()
    rids = [p["rid"] for p in engine.recorded_requests]
    assert rids[0] == "my-request" and len(set(rids)) == len(rids)
    assert all(not b.startswith(a) and not a.startswith(b) for i, a in enumerate(rids) for b in rids[i + 1:])
    assert out["meta_info"]["finish_reason"]["type"] == "length"
