"""Where each field of a child object comes from in our spec, so that API errors speak the user's terms.

When the API server refuses a child it names the child's field
(`spec.template.spec.volumes[0].emptyDir.sizeLimit`), which the user never wrote; the user wrote
`spec.shmSize`. A route maps a child path prefix to the spec path it is built from. Lists the
builders prefix with their own entries (the runtime's four env variables, the pool's /dev/shm
volume) carry an offset, read from the built manifest itself, so the routes cannot drift from
the builders: `env[5]` of the Job is `spec.runtime.env[1]`.

Pure: `spec_field` is a function of a field path and a table; the tables are functions of the
typed object and its built child.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rollout_operator.api.rolloutjob_types import RolloutJob
from rollout_operator.api.sglangpool_types import SGLangPool
from rollout_operator.builders.common import Manifest

POD = "spec.template.spec"
CONTAINER = f"{POD}.containers[0]"
_INDEX = re.compile(r"^\[(\d+)\](.*)$")


@dataclass(frozen=True)
class Route:
    """`child` (a path prefix in the child object) is built from `spec` (a path in our object).

    For a list, `offset` entries the operator put first are not the user's: child index i is
    spec index i - offset (and an index below the offset is the operator's own entry).
    """

    child: str
    spec: str
    offset: int = 0


def spec_field(field: str, routes: Sequence[Route]) -> str | None:
    """The spec path a child's field comes from (first matching route), or None when it is the operator's own."""
    for route in routes:
        if field != route.child and not field.startswith((route.child + ".", route.child + "[")):
            continue
        rest = field[len(route.child):]
        match = _INDEX.match(rest)
        if match and route.offset:
            index = int(match.group(1)) - route.offset
            if index < 0:
                return None
            rest = f"[{index}]{match.group(2)}"
        return route.spec + rest
    return None


def _len(obj: Any, *path: str | int) -> int:
    for key in path:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return 0
    return len(obj) if isinstance(obj, list) else 0


def _offset(child: Manifest, user: list[Any] | None, *path: str | int) -> int:
    """Entries of the child's list at `path` that precede the user's (the builders put theirs first)."""
    return max(0, _len(child, *path) - len(user or []))


def _scheduling(prefix: str) -> list[Route]:
    return [Route(f"{POD}.{key}", f"{prefix}.{key}")
            for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "schedulerName")]


def _pod_routes(prefix: str, child: Manifest, volumes: list[Any] | None, mounts: list[Any] | None,
                env: list[Any] | None) -> list[Route]:
    """The user's volumes, mounts, env, resources, image and placement, under spec field `prefix`."""
    pod = ("spec", "template", "spec")
    return [
        Route(f"{POD}.volumes", f"{prefix}.volumes", _offset(child, volumes, *pod, "volumes")),
        Route(f"{CONTAINER}.volumeMounts", f"{prefix}.volumeMounts",
              _offset(child, mounts, *pod, "containers", 0, "volumeMounts")),
        Route(f"{CONTAINER}.env", f"{prefix}.env", _offset(child, env, *pod, "containers", 0, "env")),
        Route(f"{CONTAINER}.resources", f"{prefix}.resources"),
        Route(f"{CONTAINER}.image", f"{prefix}.image"),
        Route(f"{CONTAINER}.imagePullPolicy", f"{prefix}.imagePullPolicy"),
        *_scheduling(f"{prefix}.scheduling"),
    ]


def server_routes(pool: SGLangPool, child: Manifest) -> list[Route]:
    """The server Deployment's fields -> the SGLangPool spec (the first volume is /dev/shm)."""
    spec = pool.spec
    routes = [Route("spec.replicas", "spec.replicas"),
              Route(f"{POD}.volumes[0].emptyDir.sizeLimit", "spec.shmSize")]
    if spec.model and spec.model.pvc:
        routes += [Route(f"{POD}.volumes[1].persistentVolumeClaim", "spec.model.pvc"),
                   Route(f"{CONTAINER}.volumeMounts[1].subPath", "spec.model.pvc.subPath")]
    return routes + _pod_routes("spec", child, spec.volumes, spec.volume_mounts, spec.env) + [
        Route(f"{CONTAINER}.ports[0].containerPort", "spec.port"),
        Route(f"{CONTAINER}.startupProbe", "spec.startupTimeoutSeconds"),
    ]


def router_routes(pool: SGLangPool, child: Manifest) -> list[Route]:
    """The router Deployment's fields -> spec.router."""
    return [
        Route("spec.replicas", "spec.router.replicas"),
        Route(f"{CONTAINER}.resources", "spec.router.resources"),
        Route(f"{CONTAINER}.image", "spec.router.image"),
        Route(f"{CONTAINER}.ports[0].containerPort", "spec.router.port"),
        *_scheduling("spec.router.scheduling"),
    ]


def batch_job_routes(job: RolloutJob, child: Manifest) -> list[Route]:
    """The runtime Job's fields -> spec.runtime (its first env variables are the operator's)."""
    rt = job.spec.runtime
    return _pod_routes("spec.runtime", child, rt.volumes, rt.volume_mounts, rt.env) + [
        Route(f"{POD}.serviceAccountName", "spec.runtime.serviceAccountName"),
        Route(f"{POD}.imagePullSecrets", "spec.runtime.imagePullSecrets"),
        Route("spec.activeDeadlineSeconds", "spec.activeDeadlineSeconds"),
    ]
