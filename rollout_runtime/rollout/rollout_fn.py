"""Calling a configured slime-style rollout function (`rollout_function_path`) from the runner."""

from __future__ import annotations

from typing import Any, Callable

from rollout_runtime.types import RolloutFnEvalOutput, RolloutFnTrainOutput


def call_rollout_fn(fn: Callable[..., Any], args: Any, rollout_id: int, data_source: Any, evaluation: bool = False) -> Any:
    """Call a slime-style rollout function and unwrap RolloutFn*Output into list / dict.

    A `RolloutBatch` (the default function's return) passes through with its stats.
    """
    out = fn(args, rollout_id, data_source, evaluation=evaluation)
    if isinstance(out, RolloutFnTrainOutput):
        return out.samples
    if isinstance(out, RolloutFnEvalOutput):
        return out.data
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list) and not evaluation:
        return out[0].samples if isinstance(out[0], RolloutFnTrainOutput) else out[0]
    return out
