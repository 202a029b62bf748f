"""One way to say what a server decides about a /generate body before it generates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Verdict = tuple[str, str] | None


def verdict_of(body: dict[str, Any], contract: Callable[[Any], Any], contract_error: type[Exception],
               sampling: Callable[[dict[str, Any]], Any], value_error: type[Exception],
               internal_error: type[Exception]) -> Verdict:
    """None (accepted), ("contract", text): 400 ``{"error": text}``; ("value", text): 400
    ``{"error": {"message": text}}``; ("internal", text): an uncaught exception, HTTP 500."""
    try:
        contract(body)
    except contract_error as e:
        return "contract", str(e)
    sps = body.get("sampling_params")
    for sp in sps if isinstance(sps, list) else [sps or {}]:
        try:
            sampling(sp)
        except value_error as e:
            return "value", str(e)
        except internal_error as e:
            return "internal", str(e)
    return None
