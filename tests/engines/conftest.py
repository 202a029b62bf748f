"""Fixtures for the engine tests: real HTTP servers on 127.0.0.1.

Engines run in background threads (``ServerThread``) so one server can be shared by a whole test
session regardless of pytest-asyncio's per-test event loops; tests talk to them over HTTP only.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = REPO_ROOT / "examples" / "tiny-model"
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_MODEL = (TINY_MODEL / "model.safetensors").exists()
HAS_ROUTER = importlib.util.find_spec("sglang_router") is not None


@dataclass
class EngineHandle:
    """What a protocol test needs: the URL, the engine object (recorded payloads), and its kind."""

    kind: str
    url: str
    engine: Any
    tokenizer: Any

    def chat_prompt(self, question: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, expect: int = 200) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == expect:
                    return
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


@pytest.fixture()
def router_launcher() -> Iterator[Any]:
    """Start the REAL sglang_router (round_robin) in front of given worker URLs; stopped after the test.

    round_robin, not power_of_two: sglang 0.5.23 (and our engines) have no /get_load, which
    power_of_two polls (it would see load -1 everywhere).
    """
    if not HAS_ROUTER:
        pytest.skip("sglang_router is not importable (pip install sglang-router==0.3.2)")
    procs: list[subprocess.Popen[bytes]] = []

    def launch(worker_urls: list[str]) -> str:
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
            "round_robin",
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


class EngineClient:
    """Minimal async HTTP client for the engine tests."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def post(self, url: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(url, json=body) as r:
            raw = await r.read()
            try:
                import json

                return r.status, json.loads(raw) if raw else None
            except ValueError:
                return r.status, raw.decode()

    async def get(self, url: str) -> tuple[int, Any]:
        async with self.session.get(url) as r:
            raw = await r.read()
            ctype = r.headers.get("Content-Type", "")
            if "json" in ctype:
                import json

                return r.status, json.loads(raw)
            return r.status, raw.decode()

    async def generate(self, base: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data = await self.post(base + "/generate", body)
        assert status == 200, (status, data)
        return data

    async def stream(self, base: str, body: dict[str, Any]) -> list[Any]:
        """All SSE events of a streaming /generate: parsed JSON objects, then the string "[DONE]"."""
        import json

        events: list[Any] = []
        async with self.session.post(base + "/generate", json={**body, "stream": True}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    assert event.startswith(b"data: "), event
                    payload = event[len(b"data: ") :]
                    events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
        return events

    async def running(self, base: str) -> int:
        status, data = await self.get(base + "/v1/loads?include=core")
        assert status == 200
        return sum(x["num_running_reqs"] + x["num_waiting_reqs"] for x in data["loads"])

    async def wait_running(self, base: str, n: int, timeout: float = 10.0) -> None:
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.running(base) >= n:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"never saw {n} requests in flight at {base}")

    async def wait_idle(self, base: str, timeout: float = 10.0) -> None:
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.running(base) == 0:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{base} never became idle")


@pytest.fixture()
async def client() -> Any:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield EngineClient(session)
