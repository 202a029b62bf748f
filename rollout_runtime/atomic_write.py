"""Atomic writes: readers see the old file or the new one, never a torn one.

Two kinds of file, two rules:

- **Published once, never replaced** (`publish_bytes`): rollout batches, buffer blobs and eval
  reports. Their names are unique to the writing process (see `rollout_runtime.state.artifacts`),
  and publishing is create-exclusive: the bytes go to a temporary file, then a hard link gives
  them their final name, which fails if the name exists. So no process, current or stale, can replace a file that a
  commit names; exactly-once batches rest on this, not on timing.
- **Replaced whole** (`write_local_atomic`): the local state file and its snapshots
  (`state.file_store`, replaced under the store's lock after its version check) and the
  trainer's consumption mark.

Temporary files are named `.{final name}.{random}.tmp` in the target's folder (a rename or link is
atomic only within one filesystem); a process killed mid-write leaves one behind, which the
runtime's start-up sweep removes (`rollout_runtime.state.sweep`).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import fsspec
import fsspec.implementations.local

#: Errors of `os.link` that mean "this filesystem has no hard links", not "the name exists".
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}


def _write_temp(path: Path, data: bytes) -> str:
    """The bytes in a fsynced temporary file beside `path`; its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_local_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over the target."""
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_local(path: Path, data: bytes, before_publish: Callable[[], None] | None = None) -> None:
    """Create `path` with `data`, whole or not at all; FileExistsError if it exists.

    Temporary file, fsync, then `os.link` to the final name (atomic, and refuses an existing
    name), then the temporary name is dropped. On a filesystem without hard links the file is
    created with O_EXCL and written in place: still never a replacement, though a crash can then
    leave a partial file under its final name (harmless: no commit names it).
    """
    tmp = _write_temp(path, data)
    try:
        if before_publish is not None:
            before_publish()
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)


def publish_bytes(url: str, data: bytes, before_publish: Callable[[], None] | None = None) -> None:
    """Create-exclusive write to a local path or fsspec URL: never replaces an existing file.

    `before_publish` runs once the bytes are durable under the temporary name and before they
    get their final one (a fault-injection point for tests). On object stores the exclusive
    create is the filesystem's "xb" mode (a conditional PUT where the store supports one); where
    it does not, an existence check guards the write, and the writer-unique name does the rest.
    """
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        publish_local(Path(path), data, before_publish)
        return
    fs.makedirs(fs._parent(path), exist_ok=True)
    if before_publish is not None:
        before_publish()
    try:
        with fs.open(path, "xb") as fh:
            fh.write(data)
    except (NotImplementedError, ValueError):
        if fs.exists(path):
            raise FileExistsError(url) from None
        with fs.open(path, "wb") as fh:
            fh.write(data)
