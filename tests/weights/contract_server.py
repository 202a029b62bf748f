"""A small in-test HTTP server that answers the weight and pause routes as SGLang 0.5.23 does.

Only the contract a weight update touches (sglang/srt/entrypoints/http_server.py and io_struct.py):
`/pause_generation {"mode"}` (abort | retract | in_place, default abort) and `/continue_generation`
reply `{"message", "status": "ok"}`; `/update_weights_from_disk` requires `model_path`, sets the
version from `weight_version` on success and replies `{"success", "message", "num_paused_requests"}`
with 200, or 400 with the server's message; after an in_place pause it refuses to flush the cache
(the real WeightUpdater's message) unless asked not to; `/model_info` carries `weight_version`
("default" at start); no `/workers` route (a router is `Router` below). Faults are switches on the
instance, and every call is recorded with its time, so tests can check order and overlap.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FLUSH_REFUSED = ("Weights were updated, but the cache was not flushed because requests are still running or queued. "
                 "Retract or finish them, then call /flush_cache.")


class Served:
    """An aiohttp app on a free loopback port (`app()` builds it)."""

    url: str = ""
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class Call:
    path: str
    body: Any
    at: float
    done: float | None = None


@dataclass
class ContractServer(Served):
    """One fake SGLang server; `weights` maps a model_path to None (loads) or an error message (400)."""

    weights: dict[str, str | None] = field(default_factory=dict)
    load_seconds: float = 0.0
    version: str = "default"
    paused_mode: str | None = None
    # Faults.
    pause_503s: int = 0  # answer this many pauses with 503 first
    drop_update: bool = False  # close the connection during the load, without loading
    drop_update_after_load: bool = False  # load, then close the connection instead of answering
    calls: list[Call] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/pause_generation", self.pause)
        app.router.add_post("/continue_generation", self.continue_)
        app.router.add_post("/update_weights_from_disk", self.update)
        app.router.add_get("/model_info", self.model_info)
        return app

    def paths(self) -> list[str]:
        return [c.path for c in self.calls]

    def _record(self, request: web.Request, body: Any) -> Call:
        c = Call(request.path, body, time.monotonic())
        self.calls.append(c)
        return c

    async def _json(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"detail": "body must be an object"}', content_type="application/json")
        return body

    async def pause(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        call = self._record(request, body)
        if self.pause_503s > 0:
            self.pause_503s -= 1
            return web.Response(status=503)
        mode = body.get("mode", "abort")
        if mode not in ("abort", "retract", "in_place"):
            return web.json_response({"detail": f"Input should be 'abort', 'retract' or 'in_place': {mode!r}"},
                                     status=400)
        self.paused_mode = mode
        call.done = time.monotonic()
        return web.json_response({"message": "Generation paused successfully.", "status": "ok"})

    async def continue_(self, request: web.Request) -> web.Response:
        call = self._record(request, await self._json(request))
        self.paused_mode = None
        call.done = time.monotonic()
        return web.json_response({"message": "Generation continued successfully.", "status": "ok"})

    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        call = self._record(request, body)
        if "model_path" not in body:
            return web.json_response({"detail": "model_path: Field required"}, status=400)
        await asyncio.sleep(self.load_seconds)
        if self.drop_update:
            request.transport.close()  # type: ignore[union-attr]
            raise asyncio.CancelledError
        path = body["model_path"]
        if path not in self.weights:
            return self._failed(f"Failed to get weights iterator: {path} (repository not found).")
        if self.weights[path] is not None:
            return self._failed(str(self.weights[path]))
        if self.paused_mode == "in_place" and body.get("flush_cache", True):
            return self._failed(FLUSH_REFUSED)
        message = "Succeeded to update model weights."
        if body.get("weight_version") is not None:
            self.version = body["weight_version"]
            message += f" Weight version updated to {self.version}."
        call.done = time.monotonic()
        if self.drop_update_after_load:
            request.transport.close()  # type: ignore[union-attr]
            raise asyncio.CancelledError
        return web.json_response({"success": True, "message": message, "num_paused_requests": 0})

    def _failed(self, message: str) -> web.Response:
        return web.json_response({"success": False, "message": message, "num_paused_requests": 0}, status=400)

    async def model_info(self, request: web.Request) -> web.Response:
        self._record(request, None)
        return web.json_response({"model_path": "m", "weight_version": self.version, "is_generation": True})


@dataclass
class Router(Served):
    """`GET /workers` as sglang-router 0.3.2 answers it."""

    workers: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/workers", self.list_workers)
        return app

    async def list_workers(self, request: web.Request) -> web.Response:
        return web.json_response({"workers": [{"id": str(i), "url": u, "model_id": "m", "worker_type": "regular",
                                               "is_healthy": True} for i, u in enumerate(self.workers)],
                                  "total": len(self.workers), "stats": {}})
