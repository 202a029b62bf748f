"""What a rollout function returns, and how a configured one is called (slime's `rollout/base_types.py`).

`generate_rollout(args, rollout_id, data_source, evaluation=False)` returns `RolloutFnTrainOutput` (groups of
samples, plus metrics) or, with `evaluation=True`, `RolloutFnEvalOutput` (per-dataset results). Older slime
rollout functions return a bare list or dict; `call_rollout_fn` wraps those, as slime's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rollout_runtime.types import Sample

__all__ = ["RolloutFnTrainOutput", "RolloutFnEvalOutput", "call_rollout_fn"]


@dataclass
class RolloutFnTrainOutput:
    """A rollout's accepted groups (`list[list[Sample]]`, or lists of fan-out lists) and its metrics."""

    samples: list[list[Sample]]
    metrics: dict[str, Any] | None = None


@dataclass
class RolloutFnEvalOutput:
    """Eval results, `{dataset name: {"rewards", "truncated", "samples", ...}}`, and metrics."""

    data: dict[str, dict[str, Any]]
    metrics: dict[str, Any] | None = None


def call_rollout_fn(fn: Callable[..., Any], *args: Any, evaluation: bool, **kwargs: Any) -> RolloutFnTrainOutput | RolloutFnEvalOutput:
    """Call a rollout function; a legacy bare list / dict is wrapped (slime's `call_rollout_fn`)."""
    output = fn(*args, **kwargs, evaluation=evaluation)
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], (RolloutFnTrainOutput, RolloutFnEvalOutput)):
        output = output[0]  # a function that returns generate_rollout_async's (output, aborted) shape
    if not isinstance(output, (RolloutFnTrainOutput, RolloutFnEvalOutput)):
        output = RolloutFnEvalOutput(data=output) if evaluation else RolloutFnTrainOutput(samples=output)
    return output
