"""Helpers shared by the engine tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, expect: int = 200) -> None:
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


class EngineClient:
    """Minimal async HTTP client for the engine tests."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def post(self, url: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(url, json=body) as r:
            raw = await r.read()
            try:
                return r.status, json.loads(raw) if raw else None
            except ValueError:
                return r.status, raw.decode()

    async def get(self, url: str) -> tuple[int, Any]:
        async with self.session.get(url) as r:
            raw = await r.read()
            ctype = r.headers.get("Content-Type", "")
            if "json" in ctype:
                return r.status, json.loads(raw)
            return r.status, raw.decode()

    async def generate(self, base: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data = await self.post(base + "/generate", body)
        assert status == 200, (status, data)
        return data

    async def stream(self, base: str, body: dict[str, Any]) -> list[Any]:
        """All SSE events of a streaming /generate: parsed JSON objects, then the string "[DONE]"."""

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.running(base) >= n:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"never saw {n} requests in flight at {base}")

    async def wait_idle(self, base: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.running(base) == 0:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{base} never became idle")


class Stream:
    """A streaming /generate in the background, keeping the length of the output at each event."""

    def __init__(self, client: EngineClient, url: str, body: dict[str, Any]) -> None:
        self.lengths: list[int] = []
        self.final: dict[str, Any] | None = None
        self.task = asyncio.create_task(self._run(client, url, body))

    async def _run(self, client: EngineClient, url: str, body: dict[str, Any]) -> None:
        async with client.session.post(url + "/generate", json={**body, "stream": True}) as r:
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    payload = event[len(b"data: "):]
                    if payload != b"[DONE]":
                        out = json.loads(payload)
                        self.lengths.append(len(out["output_ids"]))
                        self.final = out

    @property
    def produced(self) -> int:
        return self.lengths[-1] if self.lengths else 0

    async def wait_produced(self, n: int = 1, timeout: float = 20.0) -> None:
        """Until the request has generated ``n`` tokens (so an abort returns a partial output)."""
        deadline = time.monotonic() + timeout
        while self.produced < n:
            assert time.monotonic() < deadline, "the request produced nothing"
            await asyncio.sleep(0.005)
