"""What one commit records: the rollout state and the data source's position and buffer.

Pydantic models, stored as JSON by every store. `extra="allow"` so that a state written by a newer
runtime (with fields this one does not know) still loads.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rollout_runtime.contract import CommitSummary, format_time


class DataSourceState(BaseModel):
    """slime's dataset cursor, plus the partial-rollout buffer that slime does not persist.

    `buffer` holds the recycled groups as sample dicts; a store with a size limit moves it to a blob
    and keeps only `buffer_ref` (see `rollout_runtime.state.buffer_blobs`).
    """

    model_config = ConfigDict(extra="allow")

    epoch_id: int = 0
    sample_offset: int = 0
    sample_group_index: int = 0
    sample_index: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    # a group member is a sample dict, or the list of sample dicts of a finished fan-out
    buffer: list[list[dict[str, Any] | list[dict[str, Any]]]] | None = None
    buffer_ref: str | None = None
    # True when a data source written to slime's interface saved itself (its own save/load) for this commit
    saved_by_source: bool = False


class RolloutState(BaseModel):
    """What one commit records. Counts are cumulative and in samples."""

    model_config = ConfigDict(extra="allow")

    rollout_id: int = -1
    num_rollouts: int | None = None
    completed: int = 0
    aborted: int = 0
    filtered: int = 0
    attempt: int = 0
    finished: bool = False
    last_batch: str | None = None
    committed_at: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    data_source: DataSourceState = Field(default_factory=DataSourceState)

    def stamp(self) -> RolloutState:
        """Set `committed_at` to now (the contract's timestamp format)."""
        self.committed_at = format_time()
        return self

    def commit_summary(self) -> CommitSummary:
        """The part of this state that the operator reads (the state ConfigMap's flat keys)."""
        return CommitSummary(rollout_id=self.rollout_id, num_rollouts=self.num_rollouts, completed=self.completed,
                             aborted=self.aborted, filtered=self.filtered, attempt=self.attempt,
                             finished=self.finished, last_commit_time=self.committed_at, last_batch=self.last_batch)
