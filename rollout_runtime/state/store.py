"""The state store protocol: read the last commit, commit a new one, compare-and-swap style.

A rollout step is exactly-once because of an ordering rule, not a transaction: the batch is written
first under a deterministic name, then the state (dataset position, buffer, cumulative counts) is
committed with optimistic concurrency. A crash between the two re-generates the same rollout id on
restart and overwrites the uncommitted file; a stale writer (an old pod still running after a retry
started) loses the version check.

Each store decides for itself how a state is laid out (the buffer inline, or in a blob beside the
batches); callers always commit and read whole `RolloutState`s.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rollout_runtime.state.models import RolloutState


class StateConflictError(RuntimeError):
    """Another writer committed since we read: this process must stop, not overwrite."""


@runtime_checkable
class StateStore(Protocol):
    """Read the last committed state and commit a new one, compare-and-swap style."""

    def read(self) -> tuple[RolloutState | None, str | None]:
        """The committed state, buffer included (None before the first commit), and its version token."""
        ...

    def commit(self, state: RolloutState, expected_version: str | None) -> str:
        """Write `state` if the stored version is still `expected_version`; return the new version.

        Raises StateConflictError when someone else committed in between.
        """
        ...
