"""Where the partial-rollout buffer is persisted when the state store cannot hold it.

Buffers can be large (unfinished groups carry their tokens), and a ConfigMap holds at most 1 MiB,
so the ConfigMap store moves the buffer to `{blob_dir}/buffer_{rollout_id:06d}.json` (a path or
fsspec URL, by default beside the batches) and commits only a reference. The local file store keeps
the buffer inline and never calls this.
"""

from __future__ import annotations

import json

import fsspec

from rollout_runtime.atomic_write import write_bytes_atomic
from rollout_runtime.state.models import RolloutState


def offload_buffer(state: RolloutState, blob_dir: str) -> RolloutState:
    """Move a non-empty buffer out of the state into its blob; an empty one leaves no reference.

    The blob is written before the state that references it is committed, and its name is
    deterministic, so a crash leaves at most an unreferenced blob that the next commit overwrites.
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
