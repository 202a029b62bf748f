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


#: Kubernetes' "restricted" Pod Security Standard allows exactly these volume types: none of them
#: reaches the node (hostPath), a network share the namespace does not own (nfs, iscsi, ...), or a
#: deprecated in-tree driver. The operator never grants more than a namespace under `restricted`.
RESTRICTED_VOLUME_TYPES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret")


@dataclass(frozen=True)
class PodPolicy:
    """What the author of a RolloutJob or SGLangPool may have the operator run on their behalf.

    The operator creates runtime Jobs and server Deployments with its own permissions, so without a
    policy anyone who may create a RolloutJob would get a pod with any ServiceAccount of the
    namespace and any volume (`hostPath: /`), even when RBAC forbids them to create pods. The
    operator refuses a spec outside this policy before it creates anything for it (condition
    Admitted=False, reason NotAllowed, naming the field); the chart's ValidatingAdmissionPolicy
    applies the same rules at `kubectl apply`.
    """

    #: ServiceAccounts `spec.runtime.serviceAccountName` may name (exact names or fnmatch globs such
    #: as `rollout-*`). Empty, the default: none, so every runtime runs as the ServiceAccount the
    #: operator creates for its RolloutJob (`<job>-runtime`, allowed only its own state ConfigMap).
    allowed_service_accounts: tuple[str, ...] = ()
    #: Volume types (the key beside `name`: persistentVolumeClaim, configMap, ...) allowed in
    #: `spec.runtime.volumes` and an SGLangPool's `spec.volumes`. Default: the restricted Pod
    #: Security Standard's list; hostPath is not in it.
    allowed_volume_types: tuple[str, ...] = RESTRICTED_VOLUME_TYPES
    #: Image prefixes (`registry.example.com/team/`) a spec may choose an image from (`spec.image`,
    #: `spec.router.image`, `spec.runtime.image`). Empty, the default: any image. The operator's
    #: own default images are always allowed.
    allowed_image_prefixes: tuple[str, ...] = ()


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
    policy: PodPolicy = field(default_factory=PodPolicy)
    # The longest a server may stay paused for one weight update (the load's timeout). Server
    # readiness and the router's health checks are sized to outlast it, so a planned pause never
    # takes a server out of the pool (builders/sglangpool_probes.py); changing it rolls the servers.
    weights_pause_budget_seconds: float = field(default_factory=lambda: float(
        _env("KUBEROLLOUT_WEIGHTS_PAUSE_BUDGET_SECONDS", "300")))
