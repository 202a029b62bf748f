"""The runtime's Kubernetes access: committed state in a ConfigMap, and reading its own RolloutJob.

This is the only module of `rollout_runtime` that imports `kubernetes` (lazily, so a laptop run
never pays for it).

The ConfigMap `<job>-state` is created by the operator (RBAC cannot restrict `create` to one
name), labelled and owned by the RolloutJob. The runtime may only get/update/patch it. A commit
is a JSON merge patch of `data` that carries the resourceVersion read at the last commit as a
precondition: if anyone wrote in between (another runtime pod, or the operator fencing off an
older attempt), the API server answers 409 and the commit raises `StateConflictError` instead
of overwriting newer state.

`data` holds `state.json` (the full RolloutState, with the buffer offloaded to a blob so the
ConfigMap stays far below its 1 MiB limit) and flat keys (`rolloutId`, `completed`, `aborted`,
`filtered`, `numRollouts`, `attempt`, `finished`, `lastCommitTime`, `lastBatch`) that the
operator and `kubectl get cm -o yaml` read without parsing JSON.

Fencing: the operator sets the annotation `kuberollout.io/attempt` to the newest attempt before
it starts that attempt's Job. A runtime whose own attempt (`KUBEROLLOUT_ATTEMPT`) is older
refuses to read or commit; the annotation update also bumps the resourceVersion, so an older
attempt that is still running fails its next commit.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from rollout_runtime.state import RolloutState, StateConflictError, offload_buffer

log = logging.getLogger(__name__)

STATE_KEY = "state.json"
ATTEMPT_ANNOTATION = "kuberollout.io/attempt"
ATTEMPT_ENV = "KUBEROLLOUT_ATTEMPT"
GROUP, VERSION, PLURAL = "kuberollout.io", "v1alpha1", "rolloutjobs"
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class KubernetesAccessError(RuntimeError):
    """The API server refused or could not be reached; the message says what to check."""


def _load_config() -> Any:
    """An ApiClient from KUBECONFIG if set, else in-cluster config, else ~/.kube/config."""
    from kubernetes import client, config

    if os.environ.get("KUBECONFIG"):
        return config.new_client_from_config(config_file=os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config()


def current_namespace(default: str = "default") -> str:
    """The pod's namespace (POD_NAMESPACE, the ServiceAccount mount, the kubeconfig context)."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if os.path.exists(_SA_NAMESPACE):
        with open(_SA_NAMESPACE) as fh:
            return fh.read().strip()
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts()
        return (active or {}).get("context", {}).get("namespace") or default
    except Exception:  # noqa: BLE001 - no kubeconfig: fall back
        return default


def _explain(exc: Any, what: str) -> KubernetesAccessError:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        sa = os.environ.get("POD_SERVICE_ACCOUNT") or "the pod's ServiceAccount"
        return KubernetesAccessError(f"{what}: access denied ({status}) for {sa}; the operator's Role grants get on "
                                     f"this RolloutJob and get/update/patch on its state ConfigMap only")
    if status == 404:
        return KubernetesAccessError(f"{what}: not found (404)")
    return KubernetesAccessError(f"{what}: {exc}")


def read_rolloutjob(name: str, namespace: str) -> dict[str, Any]:
    """The RolloutJob object (the runtime builds its config from `spec`)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(_load_config())
    try:
        obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)  # type: ignore[assignment]
    except ApiException as exc:
        raise _explain(exc, f"reading RolloutJob {namespace}/{name}") from None
    return obj


def _flat(state: RolloutState) -> dict[str, str]:
    return {
        "rolloutId": str(state.rollout_id),
        "numRollouts": "" if state.num_rollouts is None else str(state.num_rollouts),
        "completed": str(state.completed),
        "aborted": str(state.aborted),
        "filtered": str(state.filtered),
        "attempt": str(state.attempt),
        "finished": "true" if state.finished else "false",
        "lastCommitTime": state.committed_at or "",
        "lastBatch": state.last_batch or "",
    }


class ConfigMapStateStore:
    """StateStore backed by one ConfigMap, with resourceVersion as the version token."""

    def __init__(self, name: str, namespace: str, blob_dir: str, *, attempt: int | None = None,
                 api: Any = None) -> None:
        self.name = name
        self.namespace = namespace
        self.blob_dir = blob_dir
        self.attempt = attempt
        self._api = api

    @classmethod
    def from_args(cls, args: Any) -> ConfigMapStateStore:
        name = getattr(args, "state_configmap", None)
        if not name:
            raise ValueError("state_backend=configmap needs state_configmap (the <job>-state ConfigMap name)")
        namespace = getattr(args, "state_namespace", None) or current_namespace()
        blob_dir = getattr(args, "state_blob_dir", None) or f"{str(args.output_dir).rstrip('/')}/.state"
        attempt_env = os.environ.get(ATTEMPT_ENV)
        attempt = int(attempt_env) if attempt_env and attempt_env.isdigit() else None
        return cls(name, namespace, blob_dir, attempt=attempt)

    @property
    def api(self) -> Any:
        if self._api is None:
            from kubernetes import client

            self._api = client.CoreV1Api(_load_config())
        return self._api

    def _what(self) -> str:
        return f"state ConfigMap {self.namespace}/{self.name}"

    def _check_fence(self, cm: Any) -> None:
        fence = ((cm.metadata.annotations or {}) if cm.metadata else {}).get(ATTEMPT_ANNOTATION)
        if self.attempt is not None and fence and fence.isdigit() and int(fence) > self.attempt:
            raise StateConflictError(f"{self._what()}: attempt {fence} has superseded this attempt ({self.attempt}); "
                                     f"stopping so that it cannot overwrite newer state")

    def read(self) -> tuple[RolloutState | None, str | None]:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.api.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise _explain(exc, f"reading {self._what()}") from None
        self._check_fence(cm)
        version = cm.metadata.resource_version
        raw = (cm.data or {}).get(STATE_KEY)
        if not raw:
            return None, version
        return RolloutState.model_validate_json(raw), version

    def commit(self, state: RolloutState, expected_version: str | None) -> str:
        from kubernetes.client.exceptions import ApiException

        if state.data_source.buffer:
            # The runner offloads already; a direct caller may not have.
            state = offload_buffer(state, self.blob_dir)
        data = {STATE_KEY: state.model_dump_json(), **_flat(state)}
        if expected_version is None:
            return self._create(data)
        body = {"metadata": {"resourceVersion": expected_version}, "data": data}
        try:
            cm = self.api.patch_namespaced_config_map(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                raise StateConflictError(f"{self._what()} was written by someone else since version "
                                         f"{expected_version}; stopping instead of overwriting it") from None
            raise _explain(exc, f"committing to {self._what()}") from None
        log.debug("committed rollout %d to %s (version %s)", state.rollout_id, self._what(),
                  cm.metadata.resource_version)
        return cm.metadata.resource_version

    def _create(self, data: dict[str, str]) -> str:
        """No ConfigMap yet (outside the operator, e.g. a hand-run job): create it."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace), data=data)
        try:
            cm = self.api.create_namespaced_config_map(self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                raise StateConflictError(f"{self._what()} was created by someone else; stopping") from None
            raise _explain(exc, f"creating {self._what()}") from None
        return cm.metadata.resource_version


def describe_state(cm_data: dict[str, str]) -> dict[str, Any]:
    """The flat keys of a state ConfigMap as typed values (for tools and tests)."""
    out: dict[str, Any] = {}
    for key, value in cm_data.items():
        if key == STATE_KEY:
            continue
        if key == "finished":
            out[key] = value == "true"
        elif value.lstrip("-").isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    if STATE_KEY in cm_data:
        out["state"] = json.loads(cm_data[STATE_KEY])
    return out
