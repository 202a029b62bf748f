"""The local state store: `{dir}/rollout/state.json`, plus slime-style per-rollout snapshots.

The whole state goes into the file, the partial-rollout buffer inline: a local file has no size
limit worth a blob.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rollout_runtime.atomic_write import write_local_atomic
from rollout_runtime.contract import WeightWait, encode_wait
from rollout_runtime.state.models import RolloutState
from rollout_runtime.state.store import StateConflictError


class JsonFileStateStore:
    """State in `{dir}/rollout/state.json`, plus slime-style per-rollout snapshots.

    The snapshot `global_dataset_state_dict_{id}.json` mirrors the file slime writes
    (there as .pt), so `data_source.load(rollout_id)` can go back to any committed id.
    Writes go to a temporary file and are renamed into place, so a crash never leaves a
    torn state file. The version is a counter checked under an exclusive lock file.
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory) / "rollout"

    @property
    def path(self) -> Path:
        return self.dir / "state.json"

    def snapshot_path(self, rollout_id: int) -> Path:
        return self.dir / f"global_dataset_state_dict_{rollout_id}.json"

    def read(self) -> tuple[RolloutState | None, str | None]:
        if not self.path.exists():
            return None, None
        raw = json.loads(self.path.read_text())
        version = str(raw.pop("_version", 0))
        return RolloutState.model_validate(raw), version

    def commit(self, state: RolloutState, expected_version: str | None) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        with _FileLock(self.dir / ".state.lock"):
            _, current = self.read()
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
        """The wait for newer weights (bounded staleness), as the state ConfigMap's flat keys; not a commit."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_local_atomic(self.wait_path, json.dumps(encode_wait(wait)).encode())

    def read_snapshot(self, rollout_id: int) -> RolloutState | None:
        path = self.snapshot_path(rollout_id)
        if not path.exists():
            return None
        return RolloutState.model_validate(json.loads(path.read_text()))


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
