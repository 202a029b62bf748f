"""Where state lives by default, decided once: `{output_dir}/.state`, beside the batches.

The local file store writes `{save}/rollout/state.json` (slime's `--save`), and the ConfigMap
store's buffer blobs go to `state_blob_dir`; both default to the same folder under `output_dir`.
"""

from __future__ import annotations

from typing import Any


def default_state_dir(output_dir: str) -> str:
    """`{output_dir}/.state` (output_dir may be a path or an fsspec URL)."""
    return f"{str(output_dir).rstrip('/')}/.state"


def file_state_dir(args: Any) -> str:
    """The folder of the local state file: save, else load, else the default."""
    return args.save or args.load or default_state_dir(args.output_dir)


def blob_dir(args: Any) -> str:
    """The folder of offloaded buffers: state_blob_dir, else the default."""
    return args.state_blob_dir or default_state_dir(args.output_dir)
