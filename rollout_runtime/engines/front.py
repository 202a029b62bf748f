"""A router-style front for a set of engines, mimicking sglang_router 0.3.2 (round robin).

``rollout-runtime sim-engine --workers N`` puts this in front of N simulated engines so the runtime
can be exercised against the same surface it meets in a cluster, without the Rust router binary:

* ``GET /workers`` in the real router's shape (``workers[*].url`` is how clients find engines to abort);
* ``/generate`` forwarded round robin, streaming passed through unchanged;
* like the real router, the request body is re-serialised keeping only the fields the router knows
  (unknown top-level fields and several ``sampling_params`` keys are silently dropped) and list-valued
  ``text``/``rid``/``sampling_params`` are rejected with 422;
* NO ``/abort_request`` (404, like the real router): clients must abort on each worker;
* ``/health``, ``/liveness``, ``/readiness``, ``/health_generate``, ``/v1/models``,
  ``/get_server_info``, ``/get_model_info``, ``/flush_cache``, ``/get_loads``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import Any, Self

import aiohttp
from aiohttp import web

from .wire import dumps, loads

log = logging.getLogger(__name__)

# Top-level /generate fields sglang_router 0.3.2 forwards (reference A.4); others are dropped.
ROUTER_KEPT_FIELDS = frozenset(
    {
        "text",
        "input_ids",
        "rid",
        "stream",
        "sampling_params",
        "return_logprob",
        "logprob_start_len",
        "top_logprobs_num",
        "token_ids_logprob",
        "return_text_in_logprobs",
        "return_hidden_states",
        "lora_path",
        "custom_logit_processor",
        "session_params",
        "bootstrap_host",
        "bootstrap_room",
        "data_parallel_rank",
        "priority",
        "extra_key",
        "custom_labels",
        "image_data",
        "modalities",
    }
)
ROUTER_KEPT_SAMPLING = frozenset(
    {
        "max_new_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "min_new_tokens",
        "stop",
        "stop_token_ids",
        "skip_special_tokens",
        "no_stop_trim",
        "n",
        "sampling_seed",
        "ignore_eos",
        "regex",
        "json_schema",
        "ebnf",
    }
)
ROUTER_DEFAULTS: dict[str, Any] = {
    "model": None,
    "log_metrics": True,
    "background": False,
    "no_logs": False,
    "return_bytes": False,
    "return_entropy": False,
    "return_hidden_states": False,
    "return_text_in_logprobs": False,
    "stream": False,
}


def router_rewrite(body: dict[str, Any]) -> dict[str, Any] | str:
    """The body the real router would send to a worker, or an error text for a 422."""
    for key in ("text", "rid", "sampling_params"):
        if isinstance(body.get(key), list):
            return f"Failed to deserialize the JSON body into the target type: {key}: invalid type: sequence"
    out = dict(ROUTER_DEFAULTS)
    for key, value in body.items():
        if key in ROUTER_KEPT_FIELDS:
            out[key] = value
    sp = out.get("sampling_params")
    if isinstance(sp, dict):
        out["sampling_params"] = {k: v for k, v in sp.items() if k in ROUTER_KEPT_SAMPLING}
    return out


class RoundRobinFront:
    """Round-robin HTTP front over engine URLs (see module docstring)."""

    def __init__(
        self,
        worker_urls: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model_id: str = "unknown",
        faithful: bool = True,
    ) -> None:
        self.worker_urls = list(worker_urls)
        self.host = host
        self.port = port
        self.model_id = model_id
        self.faithful = faithful
        self.worker_ids = {u: str(uuid.uuid4()) for u in self.worker_urls}
        self._rr = itertools.cycle(range(len(self.worker_urls)))
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.app = self._make_app()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        r = app.router
        r.add_post("/generate", self.handle_generate)
        r.add_put("/generate", self.handle_generate)
        r.add_get("/workers", self.handle_workers)
        r.add_get("/health", self.handle_ok)
        r.add_get("/liveness", self.handle_ok)
        r.add_get("/readiness", self.handle_readiness)
        r.add_get("/health_generate", self.handle_health_generate)
        r.add_get("/v1/models", self.handle_models)
        r.add_get("/get_server_info", self.handle_server_info)
        r.add_get("/get_model_info", self.handle_model_info)
        r.add_post("/flush_cache", self.handle_flush_cache)
        r.add_get("/get_loads", self.handle_get_loads)
        return app

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None),
            json_serialize=lambda o: dumps(o).decode(),
        )
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _next_worker(self) -> str:
        return self.worker_urls[next(self._rr)]

    async def handle_generate(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if not self.worker_urls:
            return web.json_response(
                {"error": {"type": "Service Unavailable", "code": "no_available_workers", "message": "No available workers"}},
                status=503,
            )
        raw = await request.read()
        if self.faithful:
            try:
                body = loads(raw)
            except ValueError as e:
                return web.Response(status=400, text=f"Failed to parse the request body as JSON: {e}")
            if not isinstance(body, dict):
                return web.Response(status=422, text="Failed to deserialize the JSON body into the target type")
            rewritten = router_rewrite(body)
            if isinstance(rewritten, str):
                return web.Response(status=422, text=rewritten)
            raw = dumps(rewritten)
        worker = self._next_worker()
        async with self._session.post(
            worker + "/generate", data=raw, headers={"Content-Type": "application/json"}
        ) as upstream:
            ctype = upstream.headers.get("Content-Type", "application/json")
            if ctype.startswith("text/event-stream"):
                resp = web.StreamResponse(status=upstream.status, headers={"Content-Type": ctype})
                await resp.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            data = await upstream.read()
            return web.Response(status=upstream.status, body=data, headers={"Content-Type": ctype})

    def workers_payload(self) -> dict[str, Any]:
        workers = [
            {
                "id": self.worker_ids[u],
                "url": u,
                "model_id": self.model_id,
                "priority": 50,
                "cost": 1.0,
                "worker_type": "regular",
                "is_healthy": True,
                "load": 0,
                "connection_mode": "Http",
                "metadata": {},
                "disable_health_check": False,
            }
            for u in self.worker_urls
        ]
        n = len(workers)
        return {"workers": workers, "total": n, "stats": {"prefill_count": 0, "decode_count": 0, "regular_count": n}}

    async def handle_workers(self, request: web.Request) -> web.Response:
        return web.json_response(self.workers_payload())

    async def handle_ok(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def handle_readiness(self, request: web.Request) -> web.Response:
        n = len(self.worker_urls)
        status = 200 if n else 503
        return web.json_response(
            {"status": "ready" if n else "not ready", "healthy_workers": n, "total_workers": n}, status=status
        )

    async def handle_health_generate(self, request: web.Request) -> web.Response:
        if self.worker_urls:
            return web.Response(text="At least one router has healthy workers")
        return web.Response(status=503, text="No healthy workers")

    async def handle_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model_id, "object": "model", "owned_by": "local"}]})

    async def handle_server_info(self, request: web.Request) -> web.Response:
        return web.json_response({"router_manager": True, "routers_count": 1, "workers_count": len(self.worker_urls)})

    async def handle_model_info(self, request: web.Request) -> web.Response:
        assert self._session is not None
        async with self._session.get(self._next_worker() + "/get_model_info") as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(), content_type="application/json")

    async def _fan_out(self, method: str, path: str) -> list[int]:
        assert self._session is not None

        async def one(u: str) -> int:
            try:
                async with self._session.request(method, u + path) as r:  # type: ignore[union-attr]
                    await r.read()
                    return r.status
            except aiohttp.ClientError:
                return 599

        return list(await asyncio.gather(*(one(u) for u in self.worker_urls)))

    async def handle_flush_cache(self, request: web.Request) -> web.Response:
        statuses = await self._fan_out("POST", "/flush_cache")
        ok = sum(1 for s in statuses if s == 200)
        return web.json_response(
            {
                "status": "success" if ok == len(statuses) else "partial_success",
                "workers_flushed": ok,
                "total_http_workers": len(statuses),
                "message": f"Successfully flushed cache on {ok} HTTP workers",
            }
        )

    async def handle_get_loads(self, request: web.Request) -> web.Response:
        # The real router polls GET /get_load, which sglang 0.5.23 (and our engines) do not serve: -1.
        statuses = await self._fan_out("GET", "/get_load")
        return web.json_response(
            {"workers": [{"worker": u, "load": -1 if s != 200 else 0} for u, s in zip(self.worker_urls, statuses)]}
        )
