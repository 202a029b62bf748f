"""(c) Health and readiness while paused, as real sglang 0.5.23 answers them.

``http_server.health_generate`` (serving both ``/health`` and ``/health_generate``) runs here against
a stub tokenizer manager: it submits a one-token generation and answers 200 as soon as any output
arrives, 503 after ``HEALTH_CHECK_TIMEOUT`` (``SGLANG_HEALTH_CHECK_TIMEOUT``, 20 by default) and
marks the server unhealthy. Why a paused server produces no output is in
``TokenizerManager.generate_request`` (tokenizer_manager.py: ``async with self.is_pause_cond: await
self.is_pause_cond.wait_for(lambda: not self.is_pause)`` before the request reaches the scheduler),
and why a weight update blocks it too: ``async with self.model_update_lock.reader_lock`` right after,
while ``update_weights_from_disk`` holds the writer side. ``/ready`` is ``is_ready()``: not paused
and healthy (``server_status == Up``, which only a passing health check restores).

Our engines honour ``SGLANG_HEALTH_CHECK_TIMEOUT`` as SGLang does; the test sets it to 2 s to stay
short.
"""

from __future__ import annotations

import ast
import asyncio
import enum
import time
import uuid
from typing import Any

import aiohttp
import pytest

from rollout_runtime.engines import wire
from tests.conformance import real_sglang
from tests.conformance.stubs import HTTP, TM, NS, handler

TIMEOUT = 2


class ServerStatus(enum.Enum):
    Up = "Up"
    Starting = "Starting"
    UnHealthy = "UnHealthy"


def real_health(tm: Any) -> Any:
    return handler("health_generate", tm, envs=NS(SGLANG_DIAG_BYPASS_HEALTH_GENERATE=NS(get=lambda: False),
                                                   SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=NS(get=lambda: True)),
                   ServerStatus=ServerStatus, HEALTH_CHECK_TIMEOUT=TIMEOUT, HEALTH_CHECK_RID_PREFIX="HEALTH_CHECK",
                   GenerateReqInput=NS, EmbeddingReqInput=NS, get_disagg=lambda: NS(disaggregation_mode="null"),
                   DisaggregationMode=NS(NULL=NS(value="null")), FAKE_BOOTSTRAP_HOST="", logger=NS(
                       error=lambda *a: None, info=lambda *a: None), uuid=uuid, time=time, asyncio=asyncio)


def test_health_timeout_constant() -> None:
    expr = real_sglang.constant(HTTP, "HEALTH_CHECK_TIMEOUT")
    env, default = (ast.literal_eval(a) for a in expr.args[0].args)  # type: ignore[attr-defined]
    assert (env, default) == (wire.HEALTH_CHECK_TIMEOUT_ENV, wire.HEALTH_CHECK_TIMEOUT_DEFAULT)


async def test_real_health_handler_fails_when_nothing_comes_out() -> None:
    async def paused(obj: Any, request: Any) -> Any:
        await asyncio.Event().wait()  # is_pause_cond.wait_for(...) never returns while paused
        yield None

    async def serving(obj: Any, request: Any) -> Any:
        await asyncio.sleep(0.05)
        tm.last_receive_tstamp = time.time()
        yield {}

    tm = NS(gracefully_exit=False, server_status=ServerStatus.Up, is_generation=True, rid_to_state={},
            last_receive_tstamp=time.time() - 100, generate_request=paused)
    request = NS(url=NS(path="/health"))
    t0 = time.monotonic()
    assert (await real_health(tm)(request)).status_code == 503
    assert TIMEOUT <= time.monotonic() - t0 < TIMEOUT + 1.5 and tm.server_status is ServerStatus.UnHealthy
    tm.generate_request = serving
    assert (await real_health(tm)(request)).status_code == 200 and tm.server_status is ServerStatus.Up


async def test_real_ready_is_503_while_paused() -> None:
    is_healthy = real_sglang.real_function(TM, "is_healthy", {"ServerStatus": ServerStatus}, cls="TokenizerManager")
    is_ready = real_sglang.real_function(TM, "is_ready", {}, cls="TokenizerManager")
    tm = NS(is_pause=True, gracefully_exit=False, server_status=ServerStatus.Up)
    tm.is_healthy = lambda: is_healthy(tm)
    tm.is_ready = lambda: is_ready(tm)
    reply = await handler("ready", tm)()
    assert (reply.status_code, reply.content) == (503, None)


@pytest.mark.parametrize("mode", ["abort", "retract", "in_place"])
async def test_our_health_and_ready_while_paused(sim_engine: Any, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(wire.HEALTH_CHECK_TIMEOUT_ENV, str(TIMEOUT))
    url = sim_engine.url
    async with aiohttp.ClientSession() as session:
        async def get(path: str) -> tuple[int, bytes]:
            async with session.get(url + path) as r:
                return r.status, await r.read()

        assert await get("/ready") == (200, b"")
        assert (await get("/health"))[0] == 200
        async with session.post(url + "/pause_generation", json={"mode": mode}) as r:
            assert r.status == 200
        try:
            assert await get("/ready") == (503, b"")
            t0 = time.monotonic()
            assert await get("/health") == (503, b"")
            assert await get("/health_generate") == (503, b"")
            assert time.monotonic() - t0 >= 2 * TIMEOUT
        finally:
            async with session.post(url + "/continue_generation", json={}) as r:
                assert r.status == 200
        assert await get("/ready") == (503, b""), "unhealthy until a health check passes again"
        assert await get("/health") == (200, b"")
        assert await get("/ready") == (200, b"")
