"""Committed rollout state and the stores that hold it.

A rollout step is exactly-once because of an ordering rule, not a transaction: the batch
is written first under a deterministic name, then the state (dataset position, buffer,
cumulative counts) is committed with optimistic concurrency. A crash between the two
re-generates the same rollout id on restart and overwrites the uncommitted file; a stale
writer (an old pod still running after a retry started) loses the version check.

Stores are pluggable: a JSON file locally, a ConfigMap in a cluster
(`rollout_runtime.state_configmap`). Buffers can be large (partial groups carry tokens),
so stores with a small size limit offload the buffer to a blob next to the batches and
keep only a reference (`offload_buffer` / `resolve_buffer`).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import fsspec
import fsspec.implementations.local
from pydantic import BaseModel, ConfigDict, Field


class StateConflictError(RuntimeError):
    """Another writer committed since we read: this process must stop, not overwrite."""


class DataSourceState(BaseModel):
    """slime's dataset cursor, plus the partial-rollout buffer that slime does not persist."""

    model_config = ConfigDict(extra="allow")

    epoch_id: int = 0
    sample_offset: int = 0
    sample_group_index: int = 0
    sample_index: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    buffer: list[list[dict[str, Any]]] | None = None
    buffer_ref: str | None = None


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

    def stamp(self) -> "RolloutState":
        self.committed_at = now_rfc3339()
        return self


@runtime_checkable
class StateStore(Protocol):
    """Read the last committed state and commit a new one, compare-and-swap style."""

    def read(self) -> tuple[RolloutState | None, str | None]:
        """The committed state (None before the first commit) and its version token."""
        ...

    def commit(self, state: RolloutState, expected_version: str | None) -> str:
        """Write `state` if the stored version is still `expected_version`; return the new version.

        Raises StateConflictError when someone else committed in between.
        """
        ...


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------ local store


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
                atomic_write_text(self.snapshot_path(state.rollout_id), json.dumps(payload))
            atomic_write_text(self.path, json.dumps({**payload, "_version": int(version)}))
            return version

    def read_snapshot(self, rollout_id: int) -> RolloutState | None:
        path = self.snapshot_path(rollout_id)
        if not path.exists():
            return None
        return RolloutState.model_validate(json.loads(path.read_text()))


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "_FileLock":
        import fcntl

        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        assert self.fd is not None
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_local(path, text.encode())


def _atomic_write_local(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over the target:
    readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------ buffer blobs


def offload_buffer(state: RolloutState, blob_dir: str) -> RolloutState:
    """Move a non-empty buffer out of the state into `{blob_dir}/buffer_{id:06d}.json`.

    For stores with a size limit (a ConfigMap holds at most 1 MiB). The blob is written
    before the state that references it is committed, and its name is deterministic, so a
    crash leaves at most an unreferenced blob that the next commit overwrites.
    """
    ds = state.data_source
    if not ds.buffer:
        return state.model_copy(update={"data_source": ds.model_copy(update={"buffer": None, "buffer_ref": None})})
    ref = f"{blob_dir.rstrip('/')}/buffer_{state.rollout_id:06d}.json"
    write_bytes_atomic(ref, json.dumps(ds.buffer).encode())
    return state.model_copy(update={"data_source": ds.model_copy(update={"buffer": None, "buffer_ref": ref})})


def resolve_buffer(state: RolloutState) -> RolloutState:
    """Inverse of `offload_buffer`: load the referenced blob back into the state."""
    ds = state.data_source
    if ds.buffer_ref and ds.buffer is None:
        with fsspec.open(ds.buffer_ref, "rb") as fh:
            buffer = json.loads(fh.read())
        return state.model_copy(update={"data_source": ds.model_copy(update={"buffer": buffer})})
    return state


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Atomic write for local paths (rename); object stores are atomic per PUT already."""
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        _atomic_write_local(Path(path), data)
    else:
        fs.makedirs(fs._parent(path), exist_ok=True)
        with fs.open(path, "wb") as fh:
            fh.write(data)


def make_state_store(args: Any) -> StateStore:
    """The store `args` asks for: a ConfigMap in a cluster, else a JSON file under save."""
    if getattr(args, "state_backend", "file") == "configmap":
        from rollout_runtime.state_configmap import ConfigMapStateStore

        return ConfigMapStateStore.from_args(args)
    directory = args.save or args.load or os.path.join(args.output_dir, ".state")
    return JsonFileStateStore(directory)
