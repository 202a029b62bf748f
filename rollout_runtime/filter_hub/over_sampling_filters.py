"""Filters over the whole set of over-sampled groups, choosing the batch."""

from __future__ import annotations

import statistics
from typing import Any

from rollout_runtime.types import Sample

__all__ = ["sort_by_reward_std"]


def sort_by_reward_std(args: Any, samples: list[list[Sample]], **kwargs: Any) -> list[list[Sample]]:
    """Groups by reward std, descending (most signal first), top `rollout_batch_size`."""

    def std(group: list[Sample]) -> float:
        rewards = [float(s.get_reward_value(args)) for s in group]
        return statistics.stdev(rewards) if len(rewards) > 1 else 0.0

    ranked = sorted(samples, key=std, reverse=True)
    return ranked[: args.rollout_batch_size]
