"""``POST|PUT /generate``: the contract gate, then plain JSON or an SSE stream.

As ``http_server.generate_request`` / ``serve_generate_request`` answer in sglang 0.5.23:

* a body the contract gate refuses: 400 ``{"error": "<text>"}``, streaming or not;
* any later ValueError (batch shape, duplicate rid, context length, sampling params, a scheduler
  abort with status 400): 400 ``{"error": {"message": ...}}`` for a plain request; for a streaming
  one the response has already started (HTTP 200), so the error is one event
  ``data: {"error": {"message", "type": "invalid_request_error", "code": 400, "retryable": false}}``
  followed by ``data: [DONE]``;
* streaming chunks are cumulative (``--incremental-streaming-output`` off); a batch's chunks carry
  ``"index"``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from .core import EngineCore
from .gate import ContractError, check_generate_contract
from .generation import serve
from .params import GenerateItem, RequestValueError, UnsupportedParamError, parse_generate
from .wire import contract_error, dumps, http_exception, json_response, loads_exact, validation_error, value_error

log = logging.getLogger(__name__)


class GenerateRoutes:
    """The /generate route of one engine."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/generate", self.handle_generate)
        router.add_put("/generate", self.handle_generate)

    async def handle_generate(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        raw = await request.read()
        try:
            body = loads_exact(raw)
        except ValueError as e:
            return validation_error(f"JSON decode error: {e}")
        if core.recorded.maxlen:
            core.recorded.append(body)
        try:
            check_generate_contract(body)
        except ContractError as e:
            return contract_error(str(e))
        if core.stopping:
            return value_error("The server is shutting down.", 503)
        if body.get("stream") is True:
            return await self._stream(request, body)
        try:
            req = parse_generate(body)
            outs = await serve(core, req)
        except RequestValueError as e:
            return value_error(str(e))
        except UnsupportedParamError:
            return web.Response(status=500, text="Internal Server Error")
        except Exception as e:
            log.exception("generation failed")
            return http_exception(str(e), 500)
        return json_response(outs if req.is_batch else outs[0])

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def emit(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + dumps(obj) + b"\n\n")

        is_batch = False

        async def on_chunk(item: GenerateItem, chunk: dict[str, Any]) -> None:
            if is_batch:
                chunk["index"] = item.index
            await emit(chunk)

        try:
            req = parse_generate(body)
            is_batch = req.is_batch
            await serve(self.core, req, on_chunk)
        except (ConnectionResetError, asyncio.CancelledError, UnsupportedParamError):
            raise  # an uncaught error ends a real server's stream without [DONE]
        except Exception as e:  # noqa: BLE001 - reported in-band, as SGLang does
            if not isinstance(e, RequestValueError):
                log.exception("streaming generation failed")
            await emit({"error": {"message": str(e), "type": "invalid_request_error", "code": 400, "retryable": False}})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
