"""Stand-ins for the server state that real sglang handlers and methods read, so they run here."""

from __future__ import annotations

import types
from http import HTTPStatus
from typing import Any

from tests.conformance import real_sglang

HTTP = "srt/entrypoints/http_server.py"
IO = "srt/managers/io_struct.py"
TM = "srt/managers/tokenizer_manager.py"


class NS(types.SimpleNamespace):
    """An attribute bag (stub ``self``, request objects, config views)."""


class FakeResponse:
    """Stands in for FastAPI's ``Response`` and ``ORJSONResponse``: keeps content and status."""

    def __init__(self, content: Any = None, status_code: int = 200, **_: Any) -> None:
        self.content = content
        self.status_code = int(status_code)


def handler(name: str, tokenizer_manager: Any, **namespace: Any) -> Any:
    """A real ``http_server`` handler, with ``tokenizer_manager`` as the server's."""
    base = {"_global_state": NS(tokenizer_manager=tokenizer_manager), "ORJSONResponse": FakeResponse,
            "Response": FakeResponse, "HTTPStatus": HTTPStatus}
    return real_sglang.real_function(HTTP, name, {**base, **namespace})


def struct_defaults(cls: str) -> dict[str, Any]:
    """A request struct's fields and defaults (``...`` for required) as declared in io_struct.py."""
    return real_sglang.struct_fields(IO, cls)
