"""Slim copies of watched objects, as stored in kopf's in-memory indexes.

Only what the reconcilers read is kept (never managedFields, never the runtime's state.json):
with a thousand jobs the indexes hold several thousand objects, and the operator's memory
budget is 250 MB.
"""

from __future__ import annotations

from typing import Any

from rollout_operator.constants import ANN_SPEC_HASH
from rollout_runtime.contract import ATTEMPT_ANNOTATION, FLAT_KEYS, WAIT_KEYS

_META_KEYS = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp", "labels",
              "creationTimestamp")


def _meta(body: dict[str, Any], annotations: tuple[str, ...] = (), owners: bool = False) -> dict[str, Any]:
    src = body.get("metadata") or {}
    meta = {k: src[k] for k in _META_KEYS if k in src}
    anns = src.get("annotations") or {}
    picked = {k: anns[k] for k in annotations if k in anns}
    if picked:
        meta["annotations"] = picked
    if owners and src.get("ownerReferences"):
        meta["ownerReferences"] = src["ownerReferences"]
    return meta


def _conditions(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: c[k] for k in ("type", "status", "reason", "message") if k in c} for c in status.get("conditions") or []]


def slim_custom(body: dict[str, Any]) -> dict[str, Any]:
    """RolloutJob or SGLangPool: metadata, spec and status (the status is ours and small)."""
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": _meta(body),
            "spec": body.get("spec") or {}, "status": body.get("status") or {}}


def slim_job(body: dict[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    return {"metadata": _meta(body, (ANN_SPEC_HASH,), owners=True),
            "status": {**{k: status[k] for k in ("active", "ready", "succeeded", "failed", "startTime",
                                                 "completionTime") if k in status},
                       "conditions": _conditions(status)}}


def slim_state(body: dict[str, Any]) -> dict[str, Any]:
    """The state ConfigMap: its fencing annotation, the commit summary and the weight wait (never state.json)."""
    data = body.get("data") or {}
    return {"metadata": _meta(body, (ANN_SPEC_HASH, ATTEMPT_ANNOTATION), owners=True),
            "data": {k: data[k] for k in (*FLAT_KEYS.values(), *WAIT_KEYS.values()) if k in data}}


def slim_deployment(body: dict[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    return {"metadata": _meta(body, (ANN_SPEC_HASH,), owners=True),
            "spec": {"replicas": (body.get("spec") or {}).get("replicas")},
            "status": {**{k: status[k] for k in ("replicas", "readyReplicas", "availableReplicas", "updatedReplicas",
                                                 "observedGeneration") if k in status},
                       "conditions": _conditions(status)}}


def slim_pod(body: dict[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    containers = []
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        last = cs.get("lastState") or {}
        containers.append({
            "name": cs.get("name"),
            "restartCount": cs.get("restartCount"),
            "state": {k: {kk: v[kk] for kk in ("reason", "message", "exitCode") if kk in v}
                      for k, v in state.items() if isinstance(v, dict)},
            "lastState": {k: {kk: v[kk] for kk in ("reason", "exitCode") if kk in v}
                          for k, v in last.items() if isinstance(v, dict)},
        })
    slim_status: dict[str, Any] = {"phase": status.get("phase"), "conditions": _conditions(status),
                                   "containerStatuses": containers}
    if status.get("podIP"):  # where the operator reaches a pool's server (weight updates)
        slim_status["podIP"] = status["podIP"]
    return {"metadata": _meta(body), "status": slim_status}


def resource_version(obj: dict[str, Any] | None) -> int:
    """resourceVersion as an int for freshness comparisons (etcd revisions); -1 if unknown."""
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or -1)
    except ValueError:
        return -1
