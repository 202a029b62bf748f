"""metav1.Condition bookkeeping: set a condition, keep lastTransitionTime unless the status flips.

Conditions are the source of truth for "why" (KubeRay's lesson: a bare phase string leaves users
guessing); the phase is derived from them and kept for `kubectl get` columns.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any


def rfc3339(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None


class ConditionSet:
    """An ordered, by-type view over a status.conditions list."""

    def __init__(self, conditions: list[dict[str, Any]] | None, generation: int | None, now: datetime) -> None:
        self._items: dict[str, dict[str, Any]] = {c["type"]: copy.deepcopy(c) for c in conditions or [] if "type" in c}
        self.generation = generation
        self.now = now

    def get(self, type_: str) -> dict[str, Any] | None:
        return self._items.get(type_)

    def is_true(self, type_: str) -> bool:
        c = self._items.get(type_)
        return bool(c and c.get("status") == "True")

    def set(self, type_: str, status: bool | str, reason: str, message: str = "") -> bool:
        """Upsert a condition; returns True when its status changed (a transition worth an event)."""
        value = status if isinstance(status, str) else ("True" if status else "False")
        old = self._items.get(type_)
        changed = old is None or old.get("status") != value
        item: dict[str, Any] = {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message[:32000],
            "lastTransitionTime": (rfc3339(self.now) if changed or old is None
                                   else old.get("lastTransitionTime") or rfc3339(self.now)),
        }
        if self.generation is not None:
            item["observedGeneration"] = self.generation
        self._items[type_] = item
        return changed

    def remove(self, type_: str) -> None:
        self._items.pop(type_, None)

    def as_list(self) -> list[dict[str, Any]]:
        return [self._items[k] for k in sorted(self._items)]
