"""The dynamic filter's return type and how the rollout loop reads it (slime's base_types)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class DynamicFilterOutput:
    keep: bool
    reason: str | None = None
    # Keep the group anyway when too few candidates remain to fill the batch.
    keep_when_insufficient: bool = False


def call_dynamic_filter(fn: Callable[..., Any] | None, *args: Any, **kwargs: Any) -> DynamicFilterOutput:
    if fn is None:
        return DynamicFilterOutput(keep=True)
    out = fn(*args, **kwargs)
    if isinstance(out, DynamicFilterOutput):
        return out
    if isinstance(out, bool):
        return DynamicFilterOutput(keep=out)
    raise TypeError(f"dynamic sampling filter {getattr(fn, '__name__', fn)} returned {type(out).__name__}; "
                    f"return a bool or DynamicFilterOutput")


def should_drop_dynamic_filter_output(out: DynamicFilterOutput, *, remaining_batch_size: int, target_data_size: int) -> bool:
    if out.keep:
        return False
    if out.keep_when_insufficient and remaining_batch_size <= target_data_size:
        return False
    return True


class MetricGatherer:
    """Counts of dropped groups per reason, as `rollout/dynamic_filter/drop_<reason>`."""

    def __init__(self) -> None:
        self._drops: Counter[str] = Counter()

    def on_dynamic_filter_drop(self, reason: str | None) -> None:
        self._drops[reason or "unknown"] += 1

    def collect(self) -> dict[str, int]:
        return {f"rollout/dynamic_filter/drop_{r}": c for r, c in self._drops.items()}
