"""The local state store: `{dir}/rollout/state.json`, plus slime-style per-rollout snapshots.

The whole state goes into the file, the partial-rollout buffer inline: a local file has no size
limit worth a blob.

Local runs are fenced like cluster ones: `{dir}/rollout/attempt` holds the newest attempt, raised
by each run as it starts (`claim`; the operator's annotation plays this part in a cluster). An
older process that is still running then fails its next commit with "superseded" instead of
racing the new one. The trainer's consumption mark is `{dir}/rollout/consumed.json`, written by
the reader and only read here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rollout_runtime.atomic_write import write_local_atomic
from rollout_runtime.contract import WeightWait, encode_wait, fence_allows, format_time
from rollout_runtime.state.artifacts import Writer
from rollout_runtime.state.models import RolloutState
from rollout_runtime.state.store import StateConflictError

#: Temporary files of this folder's own writes; only a holder of the lock writes them.
_STATE_TEMP_PREFIXES = (".state.json.", ".global_dataset_state_dict_", ".attempt.")


class JsonFileStateStore:
    """State in `{dir}/rollout/state.json`, plus slime-style per-rollout snapshots.

    The snapshot `global_dataset_state_dict_{id}.json` mirrors the file slime writes
    (there as .pt), so `data_source.load(rollout_id)` can go back to any committed id.
    Writes go to a temporary file and are renamed into place, so a crash never leaves a
    torn state file. The version is a counter checked under an exclusive lock file.
    """

    def __init__(self, directory: str | Path, *, attempt: int | None = None) -> None:
        self.dir = Path(directory) / "rollout"
        self.attempt = attempt

    @property
    def path(self) -> Path:
        return self.dir / "state.json"

    @property
    def fence_path(self) -> Path:
        return self.dir / "attempt"

    @property
    def consumed_path(self) -> Path:
        return self.dir / "consumed.json"

    def snapshot_path(self, rollout_id: int) -> Path:
        return self.dir / f"global_dataset_state_dict_{rollout_id}.json"

    def describe(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ the runtime's side
    def claim(self, attempt: int | None) -> Writer:
        """Raise the fence to `attempt` (None: one above every attempt so far) and hold it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _FileLock(self.dir / ".state.lock"):
            fence = self._fence()
            if attempt is None:
                state, _ = self._read_file()
                attempt = max(fence or 0, state.attempt if state else 0) + 1
            elif fence is not None and attempt < fence:
                raise self._superseded(fence, attempt)
            write_local_atomic(self.fence_path, str(attempt).encode())
            for leftover in self.dir.iterdir():  # a writer killed mid-write; we hold the lock
                if leftover.name.startswith(_STATE_TEMP_PREFIXES) and leftover.name.endswith(".tmp"):
                    leftover.unlink(missing_ok=True)
        self.attempt = attempt
        return Writer.new(attempt)

    def read(self) -> tuple[RolloutState | None, str | None]:
        self._check_fence()
        return self._read_file()

    def ensure_current(self, expected_version: str | None) -> None:
        self._check_fence()
        _, current = self._read_file()
        if current != expected_version:
            raise StateConflictError(f"{self.path} was committed by another writer (version {current}, expected "
                                     f"{expected_version}); stopping before writing")

    def commit(self, state: RolloutState, expected_version: str | None) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        with _FileLock(self.dir / ".state.lock"):
            self._check_fence()
            _, current = self._read_file()
            if current != expected_version:
                raise StateConflictError(
                    f"{self.path} was committed by another writer (version {current}, expected {expected_version})"
                )
            version = str(int(current or 0) + 1)
            payload = state.model_dump(mode="json")
            if state.rollout_id >= 0:
                write_local_atomic(self.snapshot_path(state.rollout_id), json.dumps(payload).encode())
            write_local_atomic(self.path, json.dumps({**payload, "_version": int(version)}).encode())
            return version

    @property
    def wait_path(self) -> Path:
        return self.dir / "weight_wait.json"

    def report_wait(self, wait: WeightWait) -> None:
        """The wait for newer weights (bounded staleness), as the state ConfigMap's flat keys; not a commit.

        Fenced like a commit: an attempt that was superseded cannot report for the current one.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with _FileLock(self.dir / ".state.lock"):
            self._check_fence()
            write_local_atomic(self.wait_path, json.dumps(encode_wait(wait)).encode())

    def read_snapshot(self, rollout_id: int) -> RolloutState | None:
        path = self.snapshot_path(rollout_id)
        if not path.exists():
            return None
        return RolloutState.model_validate(json.loads(path.read_text()))

    # ------------------------------------------------------------------ the trainer's side
    def read_committed(self) -> RolloutState | None:
        return self._read_file()[0]

    def read_consumed(self) -> int:
        try:
            return int(json.loads(self.consumed_path.read_text())["consumed"])
        except (FileNotFoundError, KeyError, ValueError, TypeError):
            return -1

    def ack(self, rollout_id: int) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        with _FileLock(self.dir / ".consumed.lock"):
            current = self.read_consumed()
            if rollout_id <= current:
                return current
            write_local_atomic(self.consumed_path,
                               json.dumps({"consumed": rollout_id, "acked_at": format_time()}).encode())
            return rollout_id

    # ------------------------------------------------------------------ internals
    def _read_file(self) -> tuple[RolloutState | None, str | None]:
        if not self.path.exists():
            return None, None
        raw = json.loads(self.path.read_text())
        version = str(raw.pop("_version", 0))
        return RolloutState.model_validate(raw), version

    def _fence(self) -> int | None:
        try:
            text = self.fence_path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _check_fence(self) -> None:
        fence = self._fence()
        if not fence_allows(None if fence is None else str(fence), self.attempt):
            raise self._superseded(fence, self.attempt)

    def _superseded(self, fence: int | None, attempt: int | None) -> StateConflictError:
        return StateConflictError(f"{self.fence_path}: attempt {fence} has superseded this attempt ({attempt}); "
                                  f"stopping so that it cannot overwrite newer state")


class _FileLock:
    """An exclusive flock on a lock file: one committer at a time on this machine's filesystem."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> _FileLock:
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        assert self.fd is not None
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
