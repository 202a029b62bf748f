"""JSON on the wire, and the response and error shapes real SGLang 0.5.23 answers with.

One home for the bodies a client branches on, so every route answers in the real shape:

* ``contract_error``: the /generate contract gate's 400, ``{"error": "<serde text>"}``
  (``http_server.generate_request``);
* ``value_error``: a ValueError raised while serving a request, 400 ``{"error": {"message": ...}}``
  (``http_server._create_error_response``);
* ``validation_error``: FastAPI's RequestValidationError (a body that does not parse into the
  route's request struct), 400 ``{"object": "error", "message", "type": "Bad Request", "param":
  null, "code": 400}`` (``http_server.validation_exception_handler``);
* ``http_exception``: an HTTPException, ``{"object": "error", "message", "type": "<code>", ...}``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from aiohttp import web

try:  # orjson is ~5x faster than json for our response sizes; optional.
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

_BIG_INT = re.compile(rb"\d{19}")


def loads_exact(raw: bytes) -> Any:
    """Parse a request body like Starlette does (Python's json): integers of any size stay integers
    (orjson turns those beyond 64 bits into floats, which would change the verdicts on them)."""
    if _BIG_INT.search(raw):
        import json

        return json.loads(raw)
    return loads(raw)


SGLANG_VERSION = "0.5.23"
JSON_CT = "application/json"

#: ``http_server.HEALTH_CHECK_TIMEOUT``: how long /health waits for any scheduler output.
HEALTH_CHECK_TIMEOUT_ENV = "SGLANG_HEALTH_CHECK_TIMEOUT"
HEALTH_CHECK_TIMEOUT_DEFAULT = 20
#: ``sglang.srt.constants.HEALTH_CHECK_RID_PREFIX``.
HEALTH_CHECK_RID_PREFIX = "HEALTH_CHECK"

FLUSH_OK_TEXT = (
    "Cache flushed.\nPlease check backend logs for more details. "
    "(When there are running or waiting requests, the operation will not be performed.)\n"
)
FLUSH_FAILED_TEXT = "Flush cache failed.\n"
FLUSH_TIMEOUT_TEXT = "Timed out waiting for idle state."


def health_check_timeout() -> float:
    """Seconds /health waits, read like SGLang reads it (``SGLANG_HEALTH_CHECK_TIMEOUT``, default 20)."""
    return float(int(os.environ.get(HEALTH_CHECK_TIMEOUT_ENV, HEALTH_CHECK_TIMEOUT_DEFAULT)))


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type=JSON_CT)


def contract_error(message: str) -> web.Response:
    return json_response({"error": message}, 400)


def value_error(message: str, status: int = 400) -> web.Response:
    return json_response({"error": {"message": message}}, status)


def validation_error(message: str) -> web.Response:
    return json_response({"object": "error", "message": message, "type": "Bad Request", "param": None, "code": 400}, 400)


def http_exception(message: str, status: int) -> web.Response:
    return json_response({"object": "error", "message": message, "type": str(status), "param": None, "code": status}, status)


class BodyError(ValueError):
    """A control-route body that does not fit its request struct (answered as ``validation_error``)."""


async def read_body(request: web.Request, fields: dict[str, tuple[type | tuple[type, ...], Any]]) -> dict[str, Any]:
    """Parse a control route's required JSON body like FastAPI parses ``Annotated[Struct, Body()]``.

    ``fields`` maps each known key to (accepted types, default); ``...`` as the default marks a
    required key. Unknown keys are ignored (SGLang's structs ``extra_behavior="ignore"``). A missing
    or non-object body is a RequestValidationError in SGLang, which we raise as :class:`BodyError`.
    """
    raw = await request.read()
    if not raw:
        raise BodyError("[{'type': 'missing', 'loc': ('body',), 'msg': 'Field required', 'input': None}]")
    try:
        body = loads(raw)
    except ValueError as e:
        raise BodyError(f"[{{'type': 'json_invalid', 'loc': ('body', 0), 'msg': 'JSON decode error', 'ctx': {{'error': {str(e)!r}}}}}]") from None
    if not isinstance(body, dict):
        raise BodyError(f"[{{'type': 'dict_type', 'loc': ('body',), 'msg': 'Input should be a valid dictionary', 'input': {body!r}}}]")
    out: dict[str, Any] = {}
    for key, (types, default) in fields.items():
        if key not in body:
            if default is ...:
                raise BodyError(f"[{{'type': 'missing', 'loc': ('body', {key!r}), 'msg': 'Field required'}}]")
            out[key] = default
            continue
        value = body[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _as_tuple(types))
        if not ok:
            raise BodyError(f"[{{'type': 'type_error', 'loc': ('body', {key!r}), 'msg': 'Input should be of type "
                            f"{_type_names(types)}', 'input': {value!r}}}]")
        out[key] = value
    return out


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    return " | ".join("null" if t is type(None) else t.__name__ for t in _as_tuple(types))
