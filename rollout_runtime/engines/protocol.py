"""An aiohttp server speaking SGLang's native HTTP protocol (sglang 0.5.23) over a :class:`Backend`.

Both kuberollout engines (simulated and dev) are this server with a different backend, so the
behaviour clients depend on is implemented once, in modules by concern:

* :mod:`.routes_generate` / :mod:`.generation` / :mod:`.output`: ``POST|PUT /generate`` (contract
  gate, duplicate rids, pause and weight-update waits, context-length checks, stop conditions,
  streaming, response shapes);
* :mod:`.routes_control` / :mod:`.core`: ``/abort_request``, ``/pause_generation`` (abort, retract,
  in_place), ``/continue_generation``, ``/update_weight_version``, ``/update_weights_from_disk``,
  ``/flush_cache``;
* :mod:`.routes_info`: ``/health``, ``/health_generate``, ``/ready``, ``/model_info``,
  ``/server_info`` (and the deprecated ``/get_*`` aliases), ``/v1/loads``, ``/v1/models``,
  ``/metrics``;
* :mod:`.threads`: running a server from synchronous code.

Routes real SGLang does not have are not served (there is no ``/get_weight_version`` and no
``/get_load``). Not implemented (SGLang features no kuberollout user needs from a stand-in):
constrained decoding, penalties, ``logit_bias``, ``stop_regex`` matching, ``top_logprobs_num``
values, multimodal inputs, sessions, LoRA, speculative decoding.
"""

from __future__ import annotations

import logging
from typing import Any, Self

from aiohttp import web

from .backend import Backend
from .core import EngineCore
from .routes_control import ControlRoutes
from .routes_generate import GenerateRoutes
from .routes_info import InfoRoutes
from .threads import ServerThread, run_until_signal

__all__ = ["EngineHandle", "EngineServer", "ServerThread", "run_until_signal"]

log = logging.getLogger(__name__)


class EngineServer:
    """SGLang-protocol HTTP server around one backend.

    Use as ``async with EngineServer(backend, port=0) as srv: srv.url``. ``recorded`` holds the last
    ``record_requests`` ``/generate`` bodies exactly as received (parsed JSON), for tests that check
    what a client sent.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        weight_version: str = "default",
        served_model_name: str | None = None,
        allow_auto_truncate: bool = False,
        record_requests: int = 256,
        extra_server_args: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.host = host
        self.port = port
        self.core = EngineCore(
            backend,
            weight_version=weight_version,
            served_model_name=served_model_name or backend.served_model_name,
            context_length=backend.context_length,
            allow_auto_truncate=allow_auto_truncate,
            record_requests=record_requests,
        )
        backend.pause = self.core.pause
        self.info = InfoRoutes(self.core, host, lambda: self.port, dict(extra_server_args or {}))
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=512 * 1024 * 1024)
        for routes in (GenerateRoutes(self.core), ControlRoutes(self.core), self.info):
            routes.register(self.app.router)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def recorded(self) -> Any:
        return self.core.recorded

    async def start(self) -> None:
        await self.backend.start()
        # The backend may learn its context length while loading (the dev engine's model config).
        self.core.context_length = self.backend.context_length
        # handler_cancellation: a client disconnect cancels the handler, which aborts the request.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        log.info("SGLang-protocol engine listening on %s", self.url)

    async def stop(self) -> None:
        self.core.stopping = True
        for st in list(self.core.active):
            st.abort()
        self.core.pause.resume()  # let paused decode loops see their aborts
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.backend.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class EngineHandle:
    """What both engines expose around their `EngineServer`: URL, recorded payloads, abort, lifecycle.

    Subclasses build `self.server` (with their backend) in `__init__`.
    """

    server: EngineServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def recorded_requests(self) -> list[dict[str, Any]]:
        """The last /generate payloads received (parsed JSON, oldest first)."""
        return list(self.server.recorded)

    def clear_recorded(self) -> None:
        self.server.recorded.clear()

    @property
    def weight_version(self) -> str:
        """The served weight version (what /model_info reports)."""
        return self.server.core.served_version

    def abort(self, rid: str = "", abort_all: bool = False) -> int:
        """Abort like ``POST /abort_request`` does; returns how many requests were asked to stop."""
        return self.server.core.abort(rid, abort_all)

    def load_counts(self) -> tuple[int, int]:
        """(running, waiting) requests, as /v1/loads reports them."""
        return self.server.core.load_counts()

    async def start(self) -> Any:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
