"""The dynamic filter's return type and how the rollout loop reads it (slime's base_types)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class DynamicFilterOutput:
    """A filter's verdict on one group; truthy when the group is kept, so `if filter(args, group):` reads right."""

    keep: bool
    reason: str | None = None
    # Keep the group anyway when too few candidates remain to fill the batch.
    keep_when_insufficient: bool = False

    def __post_init__(self) -> None:
        # slime's own filter builds this from a torch comparison; store a plain bool
        self.keep = _truth(self.keep, "DynamicFilterOutput.keep")

    def __bool__(self) -> bool:
        return self.keep


def _truth(value: Any, what: str) -> bool:
    """bool(value) for bools, numpy bools and one-element tensors/arrays; a clear error otherwise."""
    if value is None:
        raise TypeError(f"{what} is None: a dynamic sampling filter must return a bool (or DynamicFilterOutput)")
    try:
        return bool(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{what}: {type(value).__name__} has no single truth value ({exc}); return one bool per "
                        f"group") from None


def call_dynamic_filter(fn: Callable[..., Any] | None, *args: Any, **kwargs: Any) -> DynamicFilterOutput:
    if fn is None:
        return DynamicFilterOutput(keep=True)
    out = fn(*args, **kwargs)
    if isinstance(out, DynamicFilterOutput):
        return out
    # slime accepts any truthy value (numpy bools, torch tensors) as the legacy return
    return DynamicFilterOutput(keep=_truth(out, f"dynamic sampling filter {getattr(fn, '__name__', fn)}"))


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
