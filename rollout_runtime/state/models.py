"""What one commit records: the rollout state and the data source's position and buffer.

Pydantic models, stored as JSON by every store. `extra="allow"` so that a state written by a newer
runtime (with fields this one does not know) still loads.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollout_runtime.contract import CommitSummary, format_time
from rollout_runtime.state.artifacts import WriterSpan, committed_batch_name, eval_file_name, legacy_spans


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
    """What one commit records. Counts are cumulative and in samples.

    `writers` names the batch files (see `rollout_runtime.state.artifacts`): the batch of every
    committed id is `batch_name(id)`, and nothing else. `pruned_through` is the highest id whose
    batch retention (`keep_last`) has released: those files are gone or about to be. `evals` names
    the eval reports the same way, one by one: eval key (the rollout id it follows; `INITIAL_EVAL`,
    -1, for the one before rollout 0) to the writer that wrote it.
    """

    model_config = ConfigDict(extra="allow")

    rollout_id: int = -1
    num_rollouts: int | None = None
    completed: int = 0
    aborted: int = 0
    filtered: int = 0
    attempt: int = 0
    finished: bool = False
    last_batch: str | None = None
    # bounded staleness: stale samples (cumulative), and the versions behind the last batch's tokens
    stale: int = 0
    weight_version_min: int | None = None
    weight_version_max: int | None = None
    writers: list[WriterSpan] = Field(default_factory=list)
    pruned_through: int = -1
    evals: dict[int, str] = Field(default_factory=dict)
    keep_last: int | None = None
    committed_at: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    data_source: DataSourceState = Field(default_factory=DataSourceState)

    @model_validator(mode="after")
    def _name_legacy_batches(self) -> RolloutState:
        """A state from a runtime before writer ids still names its batches (`rollout_{id:06d}.{fmt}`)."""
        if self.rollout_id >= 0 and not self.writers:
            self.writers = legacy_spans(self.last_batch)
        return self

    def stamp(self) -> RolloutState:
        """Set `committed_at` to now (the contract's timestamp format)."""
        self.committed_at = format_time()
        return self

    def batch_name(self, rollout_id: int) -> str | None:
        """The file name of committed batch `rollout_id` (None if this commit names none)."""
        return committed_batch_name(self.writers, self.rollout_id, rollout_id)

    def eval_name(self, key: int) -> str | None:
        """The file name of the committed eval report `key` (None if this commit names none)."""
        writer = self.evals.get(key)
        return eval_file_name(key, writer) if writer is not None else None

    def commit_summary(self) -> CommitSummary:
        """The part of this state that the operator reads (the state ConfigMap's flat keys)."""
        return CommitSummary(rollout_id=self.rollout_id, num_rollouts=self.num_rollouts, completed=self.completed,
                             aborted=self.aborted, filtered=self.filtered, attempt=self.attempt,
                             finished=self.finished, last_commit_time=self.committed_at, last_batch=self.last_batch,
                             stale=self.stale, weight_version_min=self.weight_version_min,
                             weight_version_max=self.weight_version_max)
