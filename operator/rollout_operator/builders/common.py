"""Helpers shared by the manifest builders: labels, owner references, spec hashes, pod settings."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rollout_operator.api.common import (
    CustomResource,
    EnvVar,
    ResourceRequirements,
    Scheduling,
    Toleration,
    Volume,
    VolumeMount,
)
from rollout_operator.constants import (
    ANN_SPEC_HASH,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
)

Manifest = dict[str, Any]


def base_labels(instance: str, component: str) -> dict[str, str]:
    """Labels every child carries; `managed-by` is also the operator's server-side watch selector."""
    return {
        LABEL_NAME: "kuberollout",
        LABEL_INSTANCE: instance,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def owner_reference(owner: CustomResource) -> dict[str, Any]:
    """A controller owner reference: children are garbage-collected with their owner."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(name: str, owner: CustomResource, labels: dict[str, str],
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def spec_hash(manifest: Manifest) -> str:
    """A short hash of everything the operator sets on a child (minus the hash itself).

    Stored in an annotation so that a reconcile can tell from its cache whether a child is
    already as desired, and skip the API call.
    """
    clean = json.loads(json.dumps(manifest, sort_keys=True, default=str))
    meta = clean.get("metadata", {})
    if "annotations" in meta:
        meta["annotations"].pop(ANN_SPEC_HASH, None)
        if not meta["annotations"]:
            del meta["annotations"]
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(manifest: Manifest) -> Manifest:
    manifest.setdefault("metadata", {}).setdefault("annotations", {})[ANN_SPEC_HASH] = spec_hash(manifest)
    return manifest


def hash_of(obj: dict[str, Any] | None) -> str | None:
    if not obj:
        return None
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_SPEC_HASH)


# --------------------------------------------------------------------- RBAC for a workload


def service_account(name: str, owner: CustomResource, labels: dict[str, str]) -> Manifest:
    return with_hash({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(name, owner, labels)})


def role(name: str, owner: CustomResource, labels: dict[str, str], rules: list[dict[str, Any]]) -> Manifest:
    return with_hash({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": metadata(name, owner, labels), "rules": rules})


def role_binding(name: str, owner: CustomResource, labels: dict[str, str], service_account_name: str) -> Manifest:
    """Binds the Role called `name` to a ServiceAccount in the owner's namespace."""
    return with_hash({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(name, owner, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account_name,
                      "namespace": owner.namespace}],
    })


def env_list(env: list[EnvVar] | None) -> list[dict[str, Any]]:
    return [e.wire() for e in env or []]


def resources_dict(resources: ResourceRequirements | None, gpus: int = 0) -> dict[str, Any]:
    """Container resources; GPUs go into requests and limits alike (extended resources require it)."""
    out: dict[str, dict[str, Any]] = {}
    if resources is not None:
        if resources.requests:
            out["requests"] = dict(resources.requests)
        if resources.limits:
            out["limits"] = dict(resources.limits)
    if gpus > 0:
        out.setdefault("requests", {})["nvidia.com/gpu"] = gpus
        out.setdefault("limits", {})["nvidia.com/gpu"] = gpus
    return out


def scheduling_fields(scheduling: Scheduling | None) -> dict[str, Any]:
    """Pod-spec placement fields from a Scheduling block."""
    if scheduling is None:
        return {}
    out: dict[str, Any] = {}
    if scheduling.node_selector:
        out["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        out["tolerations"] = [t.wire() for t in scheduling.tolerations]
    if scheduling.affinity:
        out["affinity"] = scheduling.affinity
    if scheduling.priority_class_name:
        out["priorityClassName"] = scheduling.priority_class_name
    if scheduling.scheduler_name:
        out["schedulerName"] = scheduling.scheduler_name
    return out


def volumes_list(volumes: list[Volume] | None) -> list[dict[str, Any]]:
    return [v.model_dump(by_alias=True, exclude_none=True, mode="json") for v in volumes or []]


def mounts_list(mounts: list[VolumeMount] | None) -> list[dict[str, Any]]:
    return [m.wire() for m in mounts or []]


def tolerations_list(tolerations: list[Toleration] | None) -> list[dict[str, Any]]:
    return [t.wire() for t in tolerations or []]
