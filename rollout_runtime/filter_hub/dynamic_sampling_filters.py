"""Per-group keep/drop filters for dynamic sampling (DAPO): drop groups with no learning signal."""

from __future__ import annotations

import statistics
from typing import Any

from rollout_runtime.filter_hub.base_types import DynamicFilterOutput
from rollout_runtime.types import Sample, flatten

__all__ = ["check_reward_nonzero_std", "check_reward_nonzero_std_with_fallback"]


def _rewards(args: Any, samples: list[Sample]) -> list[float]:
    return [float(s.get_reward_value(args)) for s in flatten(samples)]  # fan-out groups too


def check_reward_nonzero_std(args: Any, samples: list[Sample], **kwargs: Any) -> DynamicFilterOutput:
    """Keep a group whose rewards vary (unbiased std > 1e-6); all-right or all-wrong groups teach nothing."""
    rewards = _rewards(args, samples)
    std = statistics.stdev(rewards) if len(rewards) > 1 else 0.0
    keep = std > 1e-6
    return DynamicFilterOutput(keep=keep, reason=None if keep else f"zero_std_{round(rewards[0], 1)}")


def check_reward_nonzero_std_with_fallback(args: Any, samples: list[Sample], **kwargs: Any) -> DynamicFilterOutput:
    """As above, but keep a zero-std group rather than start another over-sampling wave."""
    out = check_reward_nonzero_std(args, samples, **kwargs)
    out.keep_when_insufficient = True
    return out
