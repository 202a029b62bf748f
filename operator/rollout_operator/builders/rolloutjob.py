"""RolloutJob -> its children: the state ConfigMap, the runtime's ServiceAccount/Role/RoleBinding,
and one batch Job per attempt. Pure functions of the RolloutJob object and the operator's settings.

Retries are operator-created Jobs named `<job>-<attempt>` with the Job's own backoffLimit at 0,
not the Job controller's pod retries: every attempt gets a fresh, predictable name, the attempt
number travels to the pod (`KUBEROLLOUT_ATTEMPT`) and into the ConfigMap as a fencing token, and
the operator can decide per failure whether retrying makes sense (a configuration error, exit
code 2, is never retried).
"""

from __future__ import annotations

from typing import Any

from rollout_operator.api.rolloutjob_types import RolloutJob
from rollout_operator.builders.common import (
    Manifest,
    base_labels,
    env_list,
    metadata,
    mounts_list,
    resources_dict,
    role,
    role_binding,
    scheduling_fields,
    service_account,
    volumes_list,
    with_hash,
)
from rollout_operator.constants import LABEL_ATTEMPT, LABEL_JOB, RUNTIME_CONTAINER, RUNTIME_SA_SUFFIX
from rollout_operator.settings import OperatorConfig
from rollout_runtime.config import section_fields
from rollout_runtime.contract import (
    ATTEMPT_ANNOTATION,
    ATTEMPT_ENV,
    EXIT_CONFIG_ERROR,
    GROUP,
    JOB_PLURAL,
    POOL_PLURAL,
    state_configmap_name,
)


def runtime_sa_name(job: str) -> str:
    return f"{job}{RUNTIME_SA_SUFFIX}"


def batch_job_name(job: str, attempt: int) -> str:
    return f"{job}-{attempt}"


def job_labels(job: str, component: str) -> dict[str, str]:
    return {**base_labels(job, component), LABEL_JOB: job}


def service_account_for(job: RolloutJob) -> str:
    return job.spec.runtime.service_account_name or runtime_sa_name(job.name)


# --------------------------------------------------------------------------- state + RBAC


def state_configmap(job: RolloutJob, fence: int = 0) -> Manifest:
    """The state ConfigMap, created empty: the runtime's ConfigMapStateStore fills `data`.

    The operator creates it up front because RBAC cannot restrict `create` by resourceNames:
    the runtime may only get/update/patch this one object. `data` is never part of the manifest,
    so re-applying the manifest can never clobber a commit. The attempt annotation is the
    fencing token (set at creation only; later bumps go through `fence_patch`).
    """
    name = job.name
    manifest = with_hash({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(state_configmap_name(name), job, job_labels(name, "rollout-state")),
    })
    # Not part of the hash, and stripped before any patch: only `fence_patch` may move it, upwards.
    manifest["metadata"]["annotations"][ATTEMPT_ANNOTATION] = str(fence)
    return manifest


def fence_patch(attempt: int) -> dict[str, Any]:
    """Merge patch that makes `attempt` the newest allowed writer of the state ConfigMap.

    The patch changes the ConfigMap's resourceVersion, so a still-running older attempt fails
    its next optimistic commit (409) instead of overwriting newer state.
    """
    return {"metadata": {"annotations": {ATTEMPT_ANNOTATION: str(attempt)}}}


def without_fence(manifest: Manifest) -> Manifest:
    """The manifest as a merge patch that never touches the state ConfigMap's fencing annotation."""
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    if ATTEMPT_ANNOTATION not in annotations:
        return manifest
    return {**manifest, "metadata": {**manifest["metadata"], "annotations": {
        k: v for k, v in annotations.items() if k != ATTEMPT_ANNOTATION}}}


def runtime_service_account(job: RolloutJob) -> Manifest:
    return service_account(runtime_sa_name(job.name), job, job_labels(job.name, "rollout-runtime"))


def weights_pool(job: RolloutJob) -> str | None:
    """The pool whose served weight version the runtime reads: poolRef's, when the job bounds staleness."""
    if job.spec.pool_ref is None or job.spec.rollout.max_staleness is None:
        return None
    return job.spec.pool_ref.name


def runtime_role(job: RolloutJob) -> Manifest:
    """Least privilege: read this RolloutJob, get/update/patch this job's state ConfigMap, and with
    maxStaleness read its SGLangPool (status.weightVersion). Nothing else."""
    name = job.name
    rules = [
        {"apiGroups": [GROUP], "resources": [JOB_PLURAL], "resourceNames": [name], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [state_configmap_name(name)],
         "verbs": ["get", "update", "patch"]},
    ]
    pool = weights_pool(job)
    if pool is not None:
        rules.append({"apiGroups": [GROUP], "resources": [POOL_PLURAL], "resourceNames": [pool], "verbs": ["get"]})
    return role(runtime_sa_name(name), job, job_labels(name, "rollout-runtime"), rules)


def runtime_role_binding(job: RolloutJob) -> Manifest:
    return role_binding(runtime_sa_name(job.name), job, job_labels(job.name, "rollout-runtime"),
                        service_account_for(job))


def rbac_children(job: RolloutJob) -> list[Manifest]:
    """SA (unless the spec names its own), Role, RoleBinding."""
    out = [] if job.spec.runtime.service_account_name else [runtime_service_account(job)]
    return out + [runtime_role(job), runtime_role_binding(job)]


# ---------------------------------------------------------------------------- batch Job


def engine_flags(job: RolloutJob) -> list[str]:
    """spec.engine settings as `rollout-runtime run` flags (the runtime reads only the other sections).

    Values are passed as written in the object (2, not 2.0), so the command reads like the spec.
    """
    flags: list[str] = []
    values = job.raw_spec.get("engine") or {}
    for field, (section, key) in section_fields().items():
        if section == "engine" and values.get(key) is not None:
            flags += ["--" + field.replace("_", "-"), str(values[key])]
    return flags


def runtime_command(job: RolloutJob, endpoint: str) -> list[str]:
    """The pod's command: cluster mode, configuration from the RolloutJob, state in its ConfigMap."""
    name, ns = job.name, job.namespace
    return [
        "rollout-runtime", "run",
        "--rolloutjob", name,
        "--namespace", ns,
        "--sglang-router-url", endpoint,
        "--state-backend", "configmap",
        "--state-configmap", state_configmap_name(name),
        "--state-namespace", ns,
        *(["--sglang-pool", pool] if (pool := weights_pool(job)) else []),
        *engine_flags(job),
        *(job.spec.runtime.extra_args or []),
    ]


def batch_job(job: RolloutJob, attempt: int, endpoint: str, config: OperatorConfig,
              deadline_seconds: int | None = None) -> Manifest:
    """The batch Job of one attempt (`<job>-<attempt>`, no pod retries of its own)."""
    name = job.name
    rt = job.spec.runtime
    labels = {**job_labels(name, "rollout-runtime"), LABEL_ATTEMPT: str(attempt)}
    env = [
        {"name": ATTEMPT_ENV, "value": str(attempt)},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ] + env_list(rt.env)
    container: dict[str, Any] = {
        "name": RUNTIME_CONTAINER,
        "image": rt.image or config.runtime_image,
        "command": runtime_command(job, endpoint),
        "env": env,
        "resources": resources_dict(rt.resources),
        "volumeMounts": mounts_list(rt.volume_mounts),
        # A configuration error is printed as the last log line; surface it in the pod status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if rt.image_pull_policy:
        container["imagePullPolicy"] = rt.image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": service_account_for(job),
        "containers": [container],
        "volumes": volumes_list(rt.volumes),
        "enableServiceLinks": False,
        **scheduling_fields(rt.scheduling),
    }
    if rt.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in rt.image_pull_secrets]
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "podFailurePolicy": {"rules": [
            # A configuration error fails the same way every time: never retry it.
            {"action": "FailJob",
             "onExitCodes": {"containerName": RUNTIME_CONTAINER, "operator": "In", "values": [EXIT_CONFIG_ERROR]}},
            # Evicted or preempted (node drain, priority preemption, Kueue): not the job's fault. The Job
            # controller replaces the pod, after the old one is terminal, without spending an attempt;
            # the new pod resumes from the last commit.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = max(1, int(deadline_seconds))
    return with_hash({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(batch_job_name(name, attempt), job, labels),
        "spec": job_spec,
    })
