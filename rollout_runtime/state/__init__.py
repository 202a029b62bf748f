"""Committed rollout state and the stores that hold it.

| module | holds |
| --- | --- |
| `models` | `RolloutState`, `DataSourceState`: what one commit records |
| `store` | the `StateStore` (runtime) and `CommitView` (trainer) protocols, `StateConflictError` |
| `artifacts` | writer-unique names of batches and blobs, and the `WriterSpan`s a commit names them by |
| `file_store` | `JsonFileStateStore`: `{save}/rollout/state.json` on a laptop, buffer inline |
| `configmap_store` | `ConfigMapStateStore`: the `<job>-state` ConfigMap in a cluster, fenced by attempt |
| `buffer_blobs` | where the partial-rollout buffer goes when the store cannot hold it |
| `sweep` | which files may be deleted (leftovers, temp files, retention) and deleting them |
| `locations` | the default folders, decided once |
| `open_store` | `open_state_store(args)`: the store a config asks for |

Callers commit and read whole states; each store decides what it keeps inline and what it
offloads. Submodules import each other directly, never this package, so there is no import loop.
"""

from rollout_runtime.state.buffer_blobs import offload_buffer, resolve_buffer
from rollout_runtime.state.configmap_store import ConfigMapStateStore, describe_state
from rollout_runtime.state.file_store import JsonFileStateStore
from rollout_runtime.state.models import DataSourceState, RolloutState
from rollout_runtime.state.open_store import open_state_store
from rollout_runtime.state.store import CommitView, StateConflictError, StateStore

__all__ = [
    "CommitView", "ConfigMapStateStore", "DataSourceState", "JsonFileStateStore", "RolloutState", "StateConflictError",
    "StateStore", "describe_state", "offload_buffer", "open_state_store", "resolve_buffer",
]
