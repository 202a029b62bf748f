"""SGLang-protocol engines for development, tests and benchmarks.

* :mod:`.sim`: the simulated engine (no model) and a router-style cluster front:
  ``SimEngineConfig``, ``SimEngine``, ``SimCluster``, ``start_sim_engine_thread``,
  ``start_sim_cluster_thread``; CLI ``rollout-runtime sim-engine``.
* :mod:`.dev`: a real transformers causal LM on CPU (torch imported lazily): ``DevEngineConfig``,
  ``DevEngine``, ``start_dev_engine_thread``; CLI ``rollout-runtime dev-engine``.
* :mod:`.protocol`: the shared aiohttp server (``EngineServer``) over a :class:`.backend.Backend`.

Names are imported lazily so ``import rollout_runtime.engines`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SimEngineConfig": "sim",
    "SimEngine": "sim",
    "SimCluster": "sim",
    "start_sim_engine_thread": "sim",
    "start_sim_cluster_thread": "sim",
    "DevEngineConfig": "dev",
    "DevEngine": "dev",
    "start_dev_engine_thread": "dev",
    "EngineServer": "protocol",
    "ServerThread": "protocol",
    "RoundRobinFront": "front",
}

__all__ = [
    "DevEngine",
    "DevEngineConfig",
    "EngineServer",
    "RoundRobinFront",
    "ServerThread",
    "SimCluster",
    "SimEngine",
    "SimEngineConfig",
    "start_dev_engine_thread",
    "start_sim_cluster_thread",
    "start_sim_engine_thread",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
