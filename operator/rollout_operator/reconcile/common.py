"""Types shared by the pure reconcilers: events to post, the requeue result, status diffs.

The reconcilers never talk to the API. They take what the operator observed (from kopf's
in-memory indexes) and return a plan; `controller/` executes it. That keeps every decision
unit-testable without a cluster, and keeps the I/O in one thin place.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, Literal

from rollout_operator.api.common import ApiModel


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the reconciled object."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Result:
    """What a reconcile asks of its work queue (controller-runtime's reconcile.Result).

    `requeue_after`: reconcile this key again after that many seconds (0: as soon as the current
    pass is done), even if no watch event arrives; None: only on the next event or resync. A
    reconcile that raises is retried with the queue's exponential backoff instead.
    """

    requeue_after: float | None = None


def status_patch(old: dict[str, Any] | None, new: ApiModel) -> dict[str, Any]:
    """JSON merge patch from the stored status `old` to the decided status `new` (top-level keys).

    A field the new status leaves unset is removed (null in the patch). Keys the model does not
    know (written by a newer operator) are left alone. Lists (conditions) are replaced whole,
    which is what a merge patch does anyway.
    """
    old = old or {}
    wire = new.wire()
    patch: dict[str, Any] = {}
    for key, value in wire.items():
        if old.get(key) != value:
            patch[key] = copy.deepcopy(value)
    known = _wire_names(type(new))
    for key in old:
        if key not in wire and key in known:
            patch[key] = None
    return patch


@functools.cache
def _wire_names(model: type[ApiModel]) -> frozenset[str]:
    return frozenset(f.alias or name for name, f in model.model_fields.items())


# ------------------------------------------------------------------ Kubernetes children (slim dicts)


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
