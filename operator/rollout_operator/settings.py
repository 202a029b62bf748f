"""Operator-wide settings: images and defaults that belong to an installation, not to a resource.

Images are not CRD defaults on purpose: a CRD default is written into every stored object, so
an administrator could never move all pools to a new SGLang build by upgrading the operator.
Left unset in a spec, they come from here (CLI flags, or environment variables set by the
Helm chart).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rollout_operator import __version__


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class OperatorConfig:
    """Settings of one operator process."""

    runtime_image: str = field(default_factory=lambda: _env("KUBEROLLOUT_RUNTIME_IMAGE",
                                                            f"ghcr.io/kuberollout/runtime:{__version__}"))
    sglang_image: str = field(default_factory=lambda: _env("KUBEROLLOUT_SGLANG_IMAGE", "lmsysorg/sglang:v0.5.23"))
    router_image: str = field(default_factory=lambda: _env("KUBEROLLOUT_ROUTER_IMAGE",
                                                           "lmsysorg/sglang-router:v0.3.2"))
    # Reconcile workers per kind. The API server is the bottleneck, not the operator's CPU;
    # a few dozen requests in flight keep it busy without flooding it.
    workers: int = 32
    # Re-check running jobs and pools this often even without events (belt and braces against a
    # missed watch event; cheap, since it reads only the in-memory indexes).
    resync_seconds: float = 300.0
    metrics_port: int | None = None
    # The longest a server may stay paused for one weight update (the load's timeout). Server
    # readiness and the router's health checks are sized to outlast it, so a planned pause never
    # takes a server out of the pool (builders/sglangpool_probes.py); changing it rolls the servers.
    weights_pause_budget_seconds: float = field(default_factory=lambda: float(
        _env("KUBEROLLOUT_WEIGHTS_PAUSE_BUDGET_SECONDS", "300")))
