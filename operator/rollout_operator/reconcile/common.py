"""Types shared by the pure reconcilers: events to post and status diffs.

The reconcilers never talk to the API. They take what the operator observed (from kopf's
in-memory indexes) and return a plan; `controller.py` executes it. That keeps every decision
unit-testable without a cluster, and keeps the I/O in one thin place.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the reconciled object."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch from `old` to `new` status (top-level keys; None removes a key).

    Lists (conditions) are replaced whole, which is what a merge patch does anyway.
    """
    old = old or {}
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if old.get(key) != value:
            patch[key] = copy.deepcopy(value)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def condition_true(obj: dict[str, Any] | None, type_: str) -> bool:
    c = condition(obj, type_)
    return bool(c and c.get("status") == "True")


def deleting(obj: dict[str, Any] | None) -> bool:
    return bool(obj and (obj.get("metadata") or {}).get("deletionTimestamp"))


def to_int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
