"""Atomic writes: readers see the old file or the new one, never a torn one.

The one storage helper behind every file the runtime commits to: rollout batches and eval reports
(`output`), the local state file and its snapshots (`state.file_store`), and buffer blobs
(`state.buffer_blobs`). Exactly-once batches rest on it: a batch is replaced whole under its
deterministic name, so a crash mid-write leaves the previous content, not half of the new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import fsspec
import fsspec.implementations.local


def write_local_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over the target.

    The temporary file lives in the target's folder because a rename is atomic only within one
    filesystem; it is removed if anything fails before the rename.
    """
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


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Atomic write to a local path (temporary file + rename) or an fsspec URL.

    Object stores (s3://, gs://, ...) are atomic per PUT already, so there the bytes go straight
    to the target.
    """
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        write_local_atomic(Path(path), data)
    else:
        fs.makedirs(fs._parent(path), exist_ok=True)
        with fs.open(path, "wb") as fh:
            fh.write(data)
