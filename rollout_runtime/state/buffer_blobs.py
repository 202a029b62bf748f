"""Where the partial-rollout buffer is persisted when the state store cannot hold it.

Buffers can be large (unfinished groups carry their tokens), and a ConfigMap holds at most 1 MiB,
so the ConfigMap store moves the buffer to `{blob_dir}/buffer_{rollout_id:06d}.{writer}.json` (a
path or fsspec URL, by default beside the batches) and commits only a reference. The local file
store keeps the buffer inline and never calls this.

The blob is published create-exclusive under a name unique to the committing process, before the
state that references it is committed: a stale process can leave an unreferenced blob behind (the
start-up sweep removes it) but can never replace the one a commit names.
"""

from __future__ import annotations

import json

import fsspec

from rollout_runtime.atomic_write import publish_bytes
from rollout_runtime.state.artifacts import blob_file_name, join_url
from rollout_runtime.state.models import RolloutState


def offload_buffer(state: RolloutState, blob_dir: str, writer_id: str) -> RolloutState:
    """Move a non-empty buffer out of the state into a new blob; an empty one leaves no reference."""
    ds = state.data_source
    if not ds.buffer:
        return state.model_copy(update={"data_source": ds.model_copy(update={"buffer": None, "buffer_ref": None})})
    ref = join_url(blob_dir, blob_file_name(state.rollout_id, writer_id))
    data = json.dumps(ds.buffer).encode()
    try:
        publish_bytes(ref, data)
    except FileExistsError:
        # A second commit of the same rollout id by the same writer (one that records an eval
        # report) has the same buffer, whose blob is published already; anything else is a bug.
        with fsspec.open(ref, "rb") as fh:
            if fh.read() != data:
                raise
    return state.model_copy(update={"data_source": ds.model_copy(update={"buffer": None, "buffer_ref": ref})})


def resolve_buffer(state: RolloutState) -> RolloutState:
    """Inverse of `offload_buffer`: load the referenced blob back into the state."""
    ds = state.data_source
    if ds.buffer_ref and ds.buffer is None:
        with fsspec.open(ds.buffer_ref, "rb") as fh:
            buffer = json.loads(fh.read())
        return state.model_copy(update={"data_source": ds.model_copy(update={"buffer": buffer})})
    return state


def delete_blob(ref: str | None) -> None:
    """Remove a blob no commit references any more (missing is fine)."""
    if not ref:
        return
    fs, path = fsspec.core.url_to_fs(ref)
    try:
        fs.rm(path)
    except FileNotFoundError:
        pass
