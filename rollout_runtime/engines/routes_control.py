"""Control routes: abort, pause/continue, weight version and weights, cache flush (sglang 0.5.23).

Bodies are the request structs of ``sglang/srt/managers/io_struct.py`` (``AbortReq``,
``PauseGenerationReqInput``, ``ContinueGenerationReqInput``, ``UpdateWeightVersionReqInput``,
``UpdateWeightFromDiskReqInput``): a JSON object is required (a missing or malformed one is
FastAPI's 400 validation error), unknown keys are ignored. The field tables below carry the real
defaults; ``tests/conformance`` compares them with io_struct.py. Replies are
``http_server``'s: ``/abort_request`` 200 with an empty body; ``/pause_generation`` and
``/continue_generation`` ``{"message": ..., "status": "ok"}``; ``/update_weight_version``
``{"success", "message", "new_version"}``; ``/update_weights_from_disk`` ``{"success", "message",
"num_paused_requests"}`` with HTTP 200, or 400 when it failed; ``/flush_cache`` plain text, 400 when
requests are in the way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, get_args

from aiohttp import web

from .core import EngineCore
from .locks import PauseMode
from .wire import (
    FLUSH_FAILED_TEXT,
    FLUSH_OK_TEXT,
    BodyError,
    json_response,
    read_body,
    validation_error,
)

NoneType = type(None)
Fields = dict[str, tuple[type | tuple[type, ...], Any]]

ABORT_FIELDS: Fields = {"rid": ((str, NoneType), ""), "abort_all": (bool, False)}
PAUSE_FIELDS: Fields = {"mode": (str, "abort")}
CONTINUE_FIELDS: Fields = {"torch_empty_cache": (bool, True)}
UPDATE_WEIGHT_VERSION_FIELDS: Fields = {"new_version": (str, ...), "abort_all_requests": (bool, True)}
UPDATE_WEIGHTS_FROM_DISK_FIELDS: Fields = {
    "model_path": (str, ...),
    "load_format": ((str, NoneType), None),
    "abort_all_requests": (bool, False),
    "weight_version": ((str, NoneType), None),
    "is_async": (bool, False),
    "torch_empty_cache": (bool, False),
    "keep_pause": (bool, False),
    "recapture_cuda_graph": (bool, False),
    "token_step": (int, 0),
    "flush_cache": (bool, True),
    "manifest": ((dict, NoneType), None),
}
PAUSE_MODES: tuple[str, ...] = get_args(PauseMode)
#: ``WeightUpdater.flush_cache_after_weight_update``'s message when requests block the flush.
FLUSH_AFTER_UPDATE_FAILED = (
    "Weights were updated, but the cache was not flushed because requests are still running or queued. "
    "Retract or finish them, then call /flush_cache."
)


Handler = Callable[["ControlRoutes", dict[str, Any]], Awaitable[web.Response]]


def with_body(fields: Fields) -> Callable[[Handler], Callable[["ControlRoutes", web.Request], Awaitable[web.Response]]]:
    """Parse the route's request struct (``fields``) and hand it to the handler; FastAPI's 400 if it
    does not parse."""

    def wrap(handler: Handler) -> Callable[[ControlRoutes, web.Request], Awaitable[web.Response]]:
        async def route(self: ControlRoutes, request: web.Request) -> web.Response:
            try:
                body = await read_body(request, fields)
            except BodyError as e:
                return validation_error(str(e))
            return await handler(self, body)

        return route

    return wrap


class ControlRoutes:
    """The control routes of one engine."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/abort_request", self.handle_abort)
        router.add_post("/pause_generation", self.handle_pause)
        router.add_post("/continue_generation", self.handle_continue)
        router.add_post("/update_weight_version", self.handle_update_weight_version)
        router.add_post("/update_weights_from_disk", self.handle_update_weights_from_disk)
        router.add_route("GET", "/flush_cache", self.handle_flush_cache)
        router.add_route("POST", "/flush_cache", self.handle_flush_cache)

    @with_body(ABORT_FIELDS)
    async def handle_abort(self, body: dict[str, Any]) -> web.Response:
        self.core.abort(body["rid"] or "", bool(body["abort_all"]))
        return web.Response(status=200)

    @with_body(PAUSE_FIELDS)
    async def handle_pause(self, body: dict[str, Any]) -> web.Response:
        mode = body["mode"]
        if mode not in PAUSE_MODES:
            allowed = ", ".join(f"'{m}'" for m in PAUSE_MODES[:-1]) + f" or '{PAUSE_MODES[-1]}'"
            return validation_error(f"[{{'type': 'literal_error', 'loc': ('body', 'mode'), "
                                    f"'msg': 'Input should be {allowed}', 'input': {mode!r}}}]")
        await self.core.pause_generation(mode)
        return json_response({"message": "Generation paused successfully.", "status": "ok"})

    @with_body(CONTINUE_FIELDS)
    async def handle_continue(self, body: dict[str, Any]) -> web.Response:
        self.core.continue_generation()
        return json_response({"message": "Generation continued successfully.", "status": "ok"})

    @with_body(UPDATE_WEIGHT_VERSION_FIELDS)
    async def handle_update_weight_version(self, body: dict[str, Any]) -> web.Response:
        new = body["new_version"]
        if body["abort_all_requests"]:
            self.core.abort(abort_all=True)
        self.core.set_version(new)
        return json_response({"success": True, "message": f"Weight version updated to {new}", "new_version": new})

    @with_body(UPDATE_WEIGHTS_FROM_DISK_FIELDS)
    async def handle_update_weights_from_disk(self, body: dict[str, Any]) -> web.Response:
        """``tokenizer_manager.update_weights_from_disk``: holds the writer side of the update lock
        unless paused (then it runs at once, next to the paused requests)."""
        core = self.core
        load_format = body["load_format"] or core.load_format
        if body["abort_all_requests"]:
            core.abort(abort_all=True)
        if core.pause.is_paused:
            ok, message = await self._load(body, load_format)
        else:
            async with core.update_lock.writing():
                ok, message = await self._load(body, load_format)
        if ok:
            core.model_path = core.served_model_name = body["model_path"]
            core.load_format = load_format
            version = body["weight_version"]
            if version is not None:
                core.set_version(version)
                message += f" Weight version updated to {version}."
        return json_response({"success": ok, "message": message, "num_paused_requests": 0}, 200 if ok else 400)

    async def _load(self, body: dict[str, Any], load_format: str) -> tuple[bool, str]:
        """The scheduler's part: load, record the version on live requests, flush the cache."""
        core = self.core
        ok, message = await core.backend.load_weights(body["model_path"], load_format)
        if not ok:
            return False, message
        core.set_version(body["weight_version"], served=False)
        if body["flush_cache"] and not core.is_fully_idle():
            return False, FLUSH_AFTER_UPDATE_FAILED
        return True, message

    async def handle_flush_cache(self, request: web.Request) -> web.Response:
        raw = request.query.get("timeout", "0")
        try:
            timeout = float(raw)
            if timeout < 0:
                raise ValueError
        except ValueError:
            return validation_error(f"[{{'type': 'greater_than_equal', 'loc': ('query', 'timeout'), "
                                    f"'msg': 'Input should be greater than or equal to 0', 'input': {raw!r}}}]")
        ok, message = await self.core.flush_cache(timeout)
        if ok:
            return web.Response(text=FLUSH_OK_TEXT)
        return web.Response(status=400, text=message or FLUSH_FAILED_TEXT)
