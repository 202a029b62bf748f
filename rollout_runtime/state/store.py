"""The state store protocols: the runtime's fenced commits, and what a trainer may see and mark.

A rollout step is exactly-once because of an ordering rule, not a transaction: the batch is
published first under a name unique to the writing process (`rollout_runtime.state.artifacts`),
then the state (dataset position, buffer reference, cumulative counts, and which writer's files
the commit names) is committed with optimistic concurrency, fenced by attempt. A crash between the
two leaves an unreferenced file and the same rollout id is regenerated under a new name on restart;
a stale writer (an old pod still running after a retry started) loses the version check, and the
files it wrote meanwhile sit beside the committed ones instead of replacing them.

Each store decides for itself how a state is laid out (the buffer inline, or in a blob beside the
batches); callers always commit and read whole `RolloutState`s.

The trainer's side (`CommitView`) reads commits without loading the buffer and records its
consumption mark under a key or file of its own; the runtime reads that mark (for retention) and
never writes it, and a commit never touches it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rollout_runtime.state.artifacts import Writer
from rollout_runtime.state.models import RolloutState


class StateConflictError(RuntimeError):
    """Another writer committed since we read, or a newer attempt fenced us off: stop, do not overwrite."""


@runtime_checkable
class StateStore(Protocol):
    """The runtime's side: claim a writer, read the last commit, commit the next, compare-and-swap style."""

    def claim(self, attempt: int | None) -> Writer:
        """Start writing as `attempt` (None: the store's own rule); the writer id every file name gets.

        Raises StateConflictError when a newer attempt already holds the fence.
        """
        ...

    def read(self) -> tuple[RolloutState | None, str | None]:
        """The committed state, buffer included (None before the first commit), and its version token."""
        ...

    def ensure_current(self, expected_version: str | None) -> None:
        """Raise StateConflictError if someone committed since `expected_version` or fenced us off.

        A cheap early stop before writing a batch; correctness never depends on it (a stale writer
        can be paused between this check and its write), only the commit's own check decides.
        """
        ...

    def commit(self, state: RolloutState, expected_version: str | None) -> str:
        """Write `state` if the stored version is still `expected_version`; return the new version.

        Raises StateConflictError when someone else committed in between.
        """
        ...

    def read_consumed(self) -> int:
        """The trainer's consumption mark: the highest rollout id it is done with (-1: none)."""
        ...


@runtime_checkable
class CommitView(Protocol):
    """The trainer's side: the last commit (buffer not loaded) and its own consumption mark."""

    def read_committed(self) -> RolloutState | None:
        ...

    def read_consumed(self) -> int:
        ...

    def ack(self, rollout_id: int) -> int:
        """Raise the consumption mark to `rollout_id` (never lowers it); the mark now stored."""
        ...

    def describe(self) -> str:
        """Where this state lives, for error messages."""
        ...
