"""The one place that opens the state store a config asks for."""

from __future__ import annotations

from typing import Any

from rollout_runtime.state.configmap_store import ConfigMapStateStore
from rollout_runtime.state.file_store import JsonFileStateStore
from rollout_runtime.state.locations import file_state_dir
from rollout_runtime.state.store import StateStore


def open_state_store(args: Any) -> StateStore:
    """A ConfigMap store in a cluster (`state_backend: configmap`), else a JSON file under save."""
    if args.state_backend == "configmap":
        return ConfigMapStateStore.from_args(args)
    return JsonFileStateStore(file_state_dir(args))
