"""metav1.Condition bookkeeping: set a condition, keep lastTransitionTime unless the status flips.

Conditions are the source of truth for "why" (KubeRay's lesson: a bare phase string leaves users
guessing); the phase is derived from them and kept for `kubectl get` columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from rollout_operator.api.common import Condition
from rollout_runtime.contract import format_time

#: metav1.Condition's message limit is 32768; leave room for the rest of the object.
MAX_MESSAGE = 32000


class ConditionSet:
    """An ordered, by-type view over a status.conditions list."""

    def __init__(self, conditions: list[Condition] | None, generation: int | None, now: datetime) -> None:
        # Condition objects are never changed in place (set() makes a new one), so no copies.
        self._items: dict[str, Condition] = {c.type: c for c in conditions or []}
        self.generation = generation
        self.now = now

    def get(self, type_: str) -> Condition | None:
        return self._items.get(type_)

    def is_true(self, type_: str) -> bool:
        c = self._items.get(type_)
        return bool(c and c.status == "True")

    def set(self, type_: str, status: bool, reason: str, message: str = "") -> bool:
        """Upsert a condition; returns True when its status changed (a transition worth an event)."""
        value: Literal["True", "False"] = "True" if status else "False"
        old = self._items.get(type_)
        changed = old is None or old.status != value
        stamp = format_time(self.now)
        self._items[type_] = Condition(
            type=type_,
            status=value,
            reason=reason,
            message=message[:MAX_MESSAGE],
            last_transition_time=stamp if changed or old is None else old.last_transition_time or stamp,
            observed_generation=self.generation,
        )
        return changed

    def remove(self, type_: str) -> None:
        self._items.pop(type_, None)

    def as_list(self) -> list[Condition]:
        return [self._items[k] for k in sorted(self._items)]
