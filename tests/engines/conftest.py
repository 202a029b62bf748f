"""Fixtures for the engine tests: real HTTP servers on 127.0.0.1.

Engines run in background threads (``ServerThread``) so one server can be shared by a whole test
session regardless of pytest-asyncio's per-test event loops; tests talk to them over HTTP only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.engines.helpers import (
    HAS_MODEL,
    HAS_ROUTER,
    HAS_TORCH,
    TINY_MODEL,
    EngineClient,
    EngineHandle,
    free_port,
    wait_http,
)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_MODEL))


@pytest.fixture(scope="session")
def sim_handle(tiny_tokenizer: Any) -> Iterator[EngineHandle]:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    # Same tokenizer as the dev engine so both see identical ids; a small per-token latency so that
    # aborts and concurrency can be observed; lengths clipped well below the tests' max_new_tokens.
    cfg = SimEngineConfig(
        seed=0,
        tokenizer=str(TINY_MODEL),
        token_latency=0.004,
        length_dist="lognormal",
        length_median=24,
        length_max=80,
        record_requests=64,
    )
    handle = start_sim_engine_thread(cfg)
    try:
        yield EngineHandle("sim", handle.url, handle.value, tiny_tokenizer)
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def dev_handle(tiny_tokenizer: Any) -> Iterator[EngineHandle]:
    if not HAS_TORCH:
        pytest.skip("torch is not installed (pip install 'kuberollout[dev-engine]')")
    if not HAS_MODEL:
        pytest.skip("examples/tiny-model has no weights; run scripts/train_tiny_model.py")
    from rollout_runtime.engines.dev import DevEngineConfig, start_dev_engine_thread

    # min_step_interval makes generation slow enough that aborts land mid-request on any machine.
    cfg = DevEngineConfig(model=str(TINY_MODEL), max_batch_size=4, seed=0, min_step_interval=0.004, record_requests=64)
    handle = start_dev_engine_thread(cfg)
    try:
        yield EngineHandle("dev", handle.url, handle.value, tiny_tokenizer)
    finally:
        handle.stop()


@pytest.fixture(params=["sim", "dev"])
def engine(request: pytest.FixtureRequest) -> EngineHandle:
    """The protocol suite runs against both engines."""
    return request.getfixturevalue(f"{request.param}_handle")


@pytest.fixture()
def router_launcher() -> Iterator[Any]:
    """Start the REAL sglang_router in front of given worker URLs (policy round_robin unless given);
    stopped after the test."""
    if not HAS_ROUTER:
        pytest.skip("sglang_router is not importable (pip install sglang-router==0.3.2)")
    procs: list[subprocess.Popen[bytes]] = []

    def launch(worker_urls: list[str], policy: str = "round_robin") -> str:
        port, prom = free_port(), free_port()
        cmd = [
            sys.executable,
            "-m",
            "sglang_router.launch_router",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--worker-urls",
            *worker_urls,
            "--policy",
            policy,
            "--prometheus-host",
            "127.0.0.1",
            "--prometheus-port",
            str(prom),
            "--log-level",
            "warn",
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1", NO_PROXY="*")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readiness", timeout=60)
        return url

    try:
        yield launch
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture()
async def client() -> Any:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield EngineClient(session)
