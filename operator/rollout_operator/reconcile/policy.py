"""The installation's pod policy applied to one object: what its author may not have the operator run.

Pure: a typed object and the `settings.PodPolicy` in, the refusal (naming each field in the
user's terms and what to do) or None out. The decisions call these before anything is built, so
a refused object gets no child at all: no Job, no Deployment, no RoleBinding to a ServiceAccount
it may not use. The chart's ValidatingAdmissionPolicy (templates/admission-policy.yaml) holds
the same three rules in CEL, for `kubectl apply`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from rollout_operator.api.common import Volume
from rollout_operator.api.rolloutjob_types import RolloutJob
from rollout_operator.api.sglangpool_types import SGLangPool
from rollout_operator.settings import PodPolicy

#: How an administrator changes the policy (operator flag / chart value), quoted in refusals.
_HOW = {
    "sa": "--allowed-service-accounts, chart value policy.allowedServiceAccounts",
    "volume": "--allowed-volume-types, chart value policy.allowedVolumeTypes",
    "image": "--allowed-image-prefixes, chart value policy.allowedImagePrefixes",
}


def volume_types(volume: Volume) -> list[str]:
    """The volume source keys of a volume (Kubernetes defaults a volume without one to emptyDir)."""
    return sorted(volume.model_extra or {}) or ["emptyDir"]


def _volumes(path: str, volumes: list[Volume] | None, policy: PodPolicy) -> list[str]:
    allowed = set(policy.allowed_volume_types)
    out = []
    for i, volume in enumerate(volumes or []):
        for kind in volume_types(volume):
            if kind not in allowed:
                out.append(f"{path}[{i}].{kind}: volume type {kind} is not allowed here (allowed: "
                           f"{', '.join(policy.allowed_volume_types) or 'none'}); use one of those, or ask the "
                           f"cluster administrator ({_HOW['volume']})")
    return out


def _image(path: str, image: str | None, policy: PodPolicy) -> list[str]:
    prefixes = policy.allowed_image_prefixes
    if image is None or not prefixes or image.startswith(prefixes):
        return []
    return [f"{path}: image {image!r} is not from an allowed registry (allowed prefixes: {', '.join(prefixes)}); "
            f"leave it unset for the operator's default image, or ask the cluster administrator ({_HOW['image']})"]


def service_account_allowed(name: str, policy: PodPolicy) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in policy.allowed_service_accounts)


def job_refusal(job: RolloutJob, policy: PodPolicy) -> str | None:
    """Why the policy refuses this RolloutJob's runtime pod, or None."""
    rt = job.spec.runtime
    problems: list[str] = []
    sa = rt.service_account_name
    if sa is not None and not service_account_allowed(sa, policy):
        problems.append(f"spec.runtime.serviceAccountName: ServiceAccount {sa!r} is not allowed here; leave it unset "
                        f"and the runtime runs as {job.name}-runtime, which the operator creates for this job, or ask "
                        f"the cluster administrator ({_HOW['sa']})")
    problems += _volumes("spec.runtime.volumes", rt.volumes, policy)
    problems += _image("spec.runtime.image", rt.image, policy)
    return "; ".join(problems) or None


def pool_refusal(pool: SGLangPool, policy: PodPolicy) -> str | None:
    """Why the policy refuses this SGLangPool's server or router pods, or None."""
    spec = pool.spec
    problems = _volumes("spec.volumes", spec.volumes, policy)
    if spec.model and spec.model.pvc and "persistentVolumeClaim" not in policy.allowed_volume_types:
        problems.append(f"spec.model.pvc: volume type persistentVolumeClaim is not allowed here; serve the model from "
                        f"spec.model.path, or ask the cluster administrator ({_HOW['volume']})")
    problems += _image("spec.image", spec.image, policy)
    problems += _image("spec.router.image", spec.router.image, policy)
    return "; ".join(problems) or None
