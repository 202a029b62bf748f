"""What one rollout did, in samples: for progress, metrics and the committed counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rollout_runtime.base_types import RolloutFnTrainOutput
from rollout_runtime.types import flatten


@dataclass
class RolloutStats:
    """What one rollout did, in samples, for progress, metrics and the committed counts."""

    completed: int = 0
    aborted: int = 0
    filtered: int = 0
    stale: int = 0  # samples dropped or regenerated for holding tokens older than max_staleness allows
    wasted_tokens: int = 0
    response_tokens: int = 0
    seconds: float = 0.0
    weight_wait_seconds: float = 0.0  # waiting for newer weights (max_staleness) inside the rollout
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RolloutBatch(RolloutFnTrainOutput):
    """slime's `RolloutFnTrainOutput` (accepted groups in `samples`, `metrics`) plus the loop's `stats`.

    The default rollout function returns one, so the runner commits the counts the loop measured
    (aborted and filtered samples never appear in the output); any other rollout function's output
    is counted as it is (`count_stats`).
    """

    stats: RolloutStats | None = None


def count_stats(groups: list[Any]) -> RolloutStats:
    """Stats of a batch from its samples alone: every sample completed."""
    samples = [s for g in groups for s in flatten(g)]
    return RolloutStats(completed=len(samples), response_tokens=sum(s.response_length for s in samples))


def batch_stats(output: RolloutFnTrainOutput) -> RolloutStats:
    """The stats a rollout function reported with its batch, else counted from the batch."""
    if isinstance(output, RolloutBatch) and output.stats is not None:
        return output.stats
    stats = count_stats(output.samples)
    stats.metrics = {k: float(v) for k, v in (output.metrics or {}).items() if isinstance(v, (int, float))}
    return stats
