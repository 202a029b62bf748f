"""Kubernetes access of the runtime and of the trainer-side reader: namespace, RolloutJob, state ConfigMap.

This is the only module of `rollout_runtime` that touches the `kubernetes` client, and it does so
inside functions, so a laptop run never pays for importing it. What is done with these calls
(versions, fencing, flat keys, the consumption mark) is `rollout_runtime.state.configmap_store`;
this module only talks to the API server and turns its refusals into errors that say what to check.

Two callers, two sets of credentials, both from `api_client()` in their own process:
- the runtime, as its pod's ServiceAccount: get on its own RolloutJob, get/update/patch on its
  own state ConfigMap and (with bounded staleness) get on the SGLangPool it runs against, nothing
  else (the operator's Role);
- a trainer using `rollout_runtime.reader.RolloutReader.from_rolloutjob`, as whoever runs it:
  get on the RolloutJob, get/patch on `<job>-state` (see docs/operator.md for a Role); and
  `rollout_runtime.weights.publish.publish_weights` on a pool: patch on that SGLangPool.
A 401/403 names the rule that applies (`rbac_hint`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rollout_runtime.contract import GROUP, JOB_PLURAL, POOL_PLURAL, VERSION

#: Where Kubernetes mounts the pod's namespace with its ServiceAccount token.
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


#: What a 401/403 means for the runtime, and for a trainer's reader.
RUNTIME_RBAC = ("the operator's Role grants the runtime get on this RolloutJob, get/update/patch on its state "
                "ConfigMap and get on its SGLangPool only")
TRAINER_RBAC = ("a trainer's reader needs get on the RolloutJob and get/patch on its <job>-state ConfigMap "
                "(docs/operator.md, 'A trainer reading batches')")


class KubernetesAccessError(RuntimeError):
    """The API server refused or could not be reached; the message says what to check."""


class ConflictError(KubernetesAccessError):
    """HTTP 409: a resourceVersion precondition failed, or the object already exists."""


@dataclass(frozen=True)
class ConfigMapView:
    """What the state store reads from a ConfigMap."""

    data: dict[str, str]
    annotations: dict[str, str]
    resource_version: str


def api_client() -> Any:
    """An ApiClient from KUBECONFIG if set, else in-cluster config, else ~/.kube/config."""
    from kubernetes import client, config

    if os.environ.get("KUBECONFIG"):
        return config.new_client_from_config(config_file=os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config()


def core_api() -> Any:
    """A CoreV1Api (ConfigMaps) on `api_client()`."""
    from kubernetes import client

    return client.CoreV1Api(api_client())


def current_namespace(explicit: str | None = None, default: str = "default") -> str:
    """The namespace the runtime works in; the one resolver of it.

    In order: `explicit` (`--namespace`, `state_namespace`), POD_NAMESPACE (the operator sets it from
    the downward API), the ServiceAccount mount, the kubeconfig's current context, `default`.
    """
    if explicit:
        return explicit
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if os.path.exists(SA_NAMESPACE_FILE):
        with open(SA_NAMESPACE_FILE) as fh:
            return fh.read().strip()
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts()
        return (active or {}).get("context", {}).get("namespace") or default
    except Exception:  # noqa: BLE001 - no kubeconfig: fall back
        return default


def _explain(exc: Any, what: str, rbac_hint: str = RUNTIME_RBAC) -> KubernetesAccessError:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        who = os.environ.get("POD_SERVICE_ACCOUNT") or ("the pod's ServiceAccount" if rbac_hint == RUNTIME_RBAC
                                                         else "these credentials")
        return KubernetesAccessError(f"{what}: access denied ({status}) for {who}; {rbac_hint}")
    if status == 404:
        return KubernetesAccessError(f"{what}: not found (404)")
    if status == 409:
        return ConflictError(f"{what}: conflict (409)")
    return KubernetesAccessError(f"{what}: {exc}")


def read_rolloutjob(name: str, namespace: str, *, rbac_hint: str = RUNTIME_RBAC) -> dict[str, Any]:
    """The RolloutJob object (the runtime builds its config from `spec`; a reader finds its output)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client())
    try:
        obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, JOB_PLURAL, name)  # type: ignore[assignment]
    except ApiException as exc:
        raise _explain(exc, f"reading RolloutJob {namespace}/{name}", rbac_hint) from None
    return obj


def read_configmap(api: Any, name: str, namespace: str, *, what: str,
                   rbac_hint: str = RUNTIME_RBAC) -> ConfigMapView | None:
    """The ConfigMap, or None when it does not exist; `what` names it in errors."""
    from kubernetes.client.exceptions import ApiException

    try:
        cm = api.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise _explain(exc, f"reading {what}", rbac_hint) from None
    meta = cm.metadata
    return ConfigMapView(data=dict(cm.data or {}), annotations=dict((meta.annotations if meta else None) or {}),
                         resource_version=meta.resource_version)


def patch_configmap(api: Any, name: str, namespace: str, body: dict[str, Any], *, what: str,
                    rbac_hint: str = RUNTIME_RBAC) -> str:
    """Merge-patch the ConfigMap; its new resourceVersion. ConflictError on a failed precondition."""
    from kubernetes.client.exceptions import ApiException

    try:
        cm = api.patch_namespaced_config_map(name, namespace, body)
    except ApiException as exc:
        raise _explain(exc, f"writing to {what}", rbac_hint) from None
    return str(cm.metadata.resource_version)


def create_configmap(api: Any, name: str, namespace: str, data: dict[str, str], *, what: str) -> str:
    """Create the ConfigMap with `data`; its resourceVersion. ConflictError when it already exists."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, namespace=namespace), data=data)
    try:
        cm = api.create_namespaced_config_map(namespace, body)
    except ApiException as exc:
        raise _explain(exc, f"creating {what}") from None
    return str(cm.metadata.resource_version)


# ---------------------------------------------------------------------------- SGLangPools


def read_sglangpool(name: str, namespace: str) -> dict[str, Any]:
    """The SGLangPool object (bounded staleness reads its `status.weightVersion`; the runtime may get only
    the pool its RolloutJob names)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client())
    try:
        obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, name)  # type: ignore[assignment]
    except ApiException as exc:
        raise _explain(exc, f"reading SGLangPool {namespace}/{name}") from None
    return obj


def patch_sglangpool(name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch an SGLangPool (a trainer publishing weights, with its own credentials); the patched object."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client())
    try:
        obj: dict[str, Any] = api.patch_namespaced_custom_object(GROUP, VERSION, namespace, POOL_PLURAL, name, body)  # type: ignore[assignment]
    except ApiException as exc:
        if exc.status in (401, 403):
            raise KubernetesAccessError(f"patching SGLangPool {namespace}/{name}: access denied ({exc.status}); "
                                        f"publishing weights needs get and patch on sglangpools") from None
        if exc.status == 422:  # the CRD's rules (e.g. the version may not decrease) name the field
            raise KubernetesAccessError(f"patching SGLangPool {namespace}/{name}: refused: "
                                        f"{_status_message(exc)}") from None
        raise _explain(exc, f"patching SGLangPool {namespace}/{name}") from None
    return obj


def _status_message(exc: Any) -> str:
    """The API server's own message from an ApiException's Status body."""
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)
