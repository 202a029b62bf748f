"""Our engines behind the REAL SGLang router (sglang-router 0.3.2, ``python -m sglang_router.launch_router``).

Router quirks these tests rely on or work around (reference A.4):
* the router re-serialises the /generate body: unknown top-level fields and some sampling_params keys
  (custom_params, logit_bias, stop_regex, ...) are silently dropped, so unknown-key 400s never happen
  through it; list-valued text/rid/sampling_params are rejected with 422;
* it has NO /abort_request (404): to abort, list workers with GET /workers and POST
  /abort_request {"abort_all": true} to each worker directly (what slime does);
* it polls GET /get_load for power_of_two, which sglang 0.5.23 and our engines do not serve, so we use
  round_robin;
* it registers a worker once GET /health returns 200, then reads /server_info and /model_info.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from rollout_runtime.engines.threads import ServerThread
from tests.engines.helpers import HAS_MODEL, HAS_TORCH, TINY_MODEL, EngineClient

pytestmark = pytest.mark.router


async def wait_workers(client: EngineClient, router: str, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    workers: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, body = await client.get(router + "/workers")
        if status == 200:
            workers = body["workers"]
            if len(workers) == n and all(w["is_healthy"] for w in workers):
                return workers
        await asyncio.sleep(0.2)
    raise TimeoutError(f"router never listed {n} healthy workers: {workers}")


async def abort_all_via_router(client: EngineClient, router: str) -> list[str]:
    """The client-side abort recipe: the router's worker list, then abort_all on each worker."""
    _, body = await client.get(router + "/workers")
    urls = [w["url"] for w in body["workers"]]
    for url in urls:
        status, _ = await client.post(url + "/abort_request", {"abort_all": True})
        assert status == 200
    return urls


async def check_router_with(
    client: EngineClient, router: str, worker_urls: list[str], engines: list[Any], prompt: str
) -> None:
    workers = await wait_workers(client, router, len(worker_urls))
    assert sorted(w["url"] for w in workers) == sorted(worker_urls)
    for e in engines:
        e.clear_recorded()

    body = {"text": prompt, "sampling_params": {"max_new_tokens": 16, "custom_params": {"x": 1}}, "return_logprob": True, "session_id": "s"}
    outs = [await client.generate(router, body) for _ in range(4)]
    for out in outs:
        assert out["meta_info"]["finish_reason"]["type"] in ("stop", "length")
        assert len(out["meta_info"]["output_token_logprobs"]) == len(out["output_ids"])
    # round_robin: both workers served; the router dropped fields it does not know.
    counts = [len(e.recorded_requests) for e in engines]
    assert sum(counts) == 4 and all(c > 0 for c in counts), counts
    sent = engines[0].recorded_requests[0]
    assert "session_id" not in sent and "custom_params" not in sent["sampling_params"]

    events = await client.stream(router, {"text": prompt, "sampling_params": {"max_new_tokens": 8}})
    assert events[-1] == "[DONE]" and events[-2]["meta_info"]["finish_reason"] is not None

    status, _ = await client.post(router + "/abort_request", {"abort_all": True})
    assert status == 404

    long_body = {"text": prompt, "sampling_params": {"max_new_tokens": 150, "ignore_eos": True}}
    tasks = [asyncio.create_task(client.generate(router, long_body)) for _ in range(4)]
    deadline = time.monotonic() + 20
    while sum([await client.running(u) for u in worker_urls]) < 4:
        assert time.monotonic() < deadline, "requests never reached the workers"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    assert sorted(await abort_all_via_router(client, router)) == sorted(worker_urls)
    for out in await asyncio.gather(*tasks):
        assert out["meta_info"]["finish_reason"]["type"] == "abort"
        assert out["meta_info"]["completion_tokens"] < 150
    for u in worker_urls:
        await client.wait_idle(u, timeout=5)


async def test_real_router_with_sim_engines(client: EngineClient, router_launcher: Callable[[list[str]], str]) -> None:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    cfg = SimEngineConfig(tokenizer=str(TINY_MODEL), token_latency=0.005, length_median=12, length_max=40)
    handles: list[ServerThread] = [start_sim_engine_thread(cfg, seed=i) for i in range(2)]
    try:
        urls = [h.url for h in handles]
        router = router_launcher(urls)
        await check_router_with(client, router, urls, [h.value for h in handles], "What is 12+34?")
    finally:
        for h in handles:
            h.stop()


@pytest.mark.skipif(not (HAS_TORCH and HAS_MODEL), reason="needs torch and examples/tiny-model weights")
async def test_real_router_with_dev_engines(client: EngineClient, router_launcher: Callable[[list[str]], str]) -> None:
    from rollout_runtime.engines.dev import DevEngineConfig, start_dev_engine_thread

    handles = [
        start_dev_engine_thread(DevEngineConfig(model=str(TINY_MODEL), seed=i, min_step_interval=0.004)) for i in range(2)
    ]
    try:
        urls = [h.url for h in handles]
        router = router_launcher(urls)
        prompt = "<|im_start|>user\nWhat is 12+34?<|im_end|>\n<|im_start|>assistant\n"
        await check_router_with(client, router, urls, [h.value for h in handles], prompt)
    finally:
        for h in handles:
            h.stop()
