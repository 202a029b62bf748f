"""No privilege escalation through the operator, checked with `kubectl --as` on the test cluster.

A namespace user who may create RolloutJobs and SGLangPools, and nothing else (no pods, Jobs,
Deployments or RoleBindings), must not get, through the operator's permissions, a pod that runs
as another ServiceAccount of the namespace or mounts a hostPath:
- the operator refuses such objects before creating anything (condition Admitted=False, reason
  NotAllowed, naming the field): no Job, no Deployment, no RoleBinding, no pod;
- the chart's ValidatingAdmissionPolicy (a real `helm install`) refuses them at apply time.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.cluster.harness import Cluster
from tests.operator.kube_helpers import REPO, condition, events, get_json, status, try_get, wait

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "kuberollout"
USER = "alice@example.com"


def grant_create_only(cluster: Cluster, ns: str) -> None:
    """A Role that lets USER create RolloutJobs and SGLangPools, and do nothing else."""
    cluster.kubectl("create", "role", "rollout-author", "-n", ns, "--verb=create",
                    "--resource=rolloutjobs.kuberollout.io,sglangpools.kuberollout.io")
    cluster.kubectl("create", "rolebinding", "rollout-author", "-n", ns, "--role=rollout-author", f"--user={USER}")


def can_i(cluster: Cluster, ns: str, verb: str, resource: str) -> bool:
    out = cluster.kubectl("auth", "can-i", verb, resource, "-n", ns, f"--as={USER}", check=False).stdout.strip()
    return out == "yes"


def create_as_user(cluster: Cluster, ns: str, doc: dict[str, Any], *extra: str) -> subprocess.CompletedProcess:
    return cluster.kubectl("create", "-n", ns, f"--as={USER}", *extra, "-f", "-", input=yaml.safe_dump(doc),
                           check=False)


def job(name: str, **runtime: Any) -> dict[str, Any]:
    return {"apiVersion": "kuberollout.io/v1alpha1", "kind": "RolloutJob", "metadata": {"name": name},
            "spec": {"endpoint": "http://engine.invalid:30000", "dataset": {"path": "/data/train.jsonl"},
                     "rollout": {"batchSize": 4, "numRollouts": 1, "maxResponseLength": 64}, "runtime": runtime}}


def pool(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kuberollout.io/v1alpha1", "kind": "SGLangPool", "metadata": {"name": name},
            "spec": {"engine": "simulated", "gpusPerReplica": 0, "router": {"enabled": False}, **spec}}


HOST_ROOT = [{"name": "root", "hostPath": {"path": "/"}}]
MOUNT_ROOT = [{"name": "root", "mountPath": "/host"}]


def test_a_rolloutjob_author_gets_no_other_service_account_and_no_host_path(operator: Any,
                                                                            kro_namespace: str) -> None:
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    grant_create_only(cluster, ns)
    assert can_i(cluster, ns, "create", "rolloutjobs.kuberollout.io")
    assert can_i(cluster, ns, "create", "sglangpools.kuberollout.io")
    for resource in ("pods", "jobs.batch", "deployments.apps", "rolebindings.rbac.authorization.k8s.io"):
        assert not can_i(cluster, ns, "create", resource), resource

    attempts = {
        "as-default": (job("as-default", serviceAccountName="default"),
                       "spec.runtime.serviceAccountName: ServiceAccount 'default' is not allowed here"),
        "host-root": (job("host-root", volumes=HOST_ROOT, volumeMounts=MOUNT_ROOT),
                      "spec.runtime.volumes[0].hostPath: volume type hostPath is not allowed here"),
    }
    for name, (doc, _) in attempts.items():
        created = create_as_user(cluster, ns, doc)
        assert created.returncode == 0, created.stderr  # RBAC lets the user create it; the operator decides
    created = create_as_user(cluster, ns, pool("host-pool", volumes=HOST_ROOT, volumeMounts=MOUNT_ROOT))
    assert created.returncode == 0, created.stderr

    for name, (_, message) in attempts.items():
        st = wait(f"{name} refused", lambda n=name: (s := status(cluster, ns, "rj", n)).get("phase") == "Failed" and s)
        assert st["reason"] == "NotAllowed" and message in st["message"], st
        assert condition(st, "Admitted")["status"] == "False" and condition(st, "Admitted")["reason"] == "NotAllowed"
        warning = [e for e in events(cluster, ns, name) if e["reason"] == "NotAllowed"]
        assert warning and warning[0]["type"] == "Warning" and message in warning[0]["message"]
        # Nothing was created for it: no Job, no RoleBinding to another ServiceAccount, no state.
        assert try_get(cluster, "job", f"{name}-1", "-n", ns) is None
        assert try_get(cluster, "rolebinding", f"{name}-runtime", "-n", ns) is None
        assert try_get(cluster, "configmap", f"{name}-state", "-n", ns) is None
    st = wait("the hostPath pool refused",
              lambda: (s := status(cluster, ns, "sgp", "host-pool")).get("phase") == "Failed" and s)
    assert condition(st, "Admitted")["reason"] == "NotAllowed"
    assert "spec.volumes[0].hostPath: volume type hostPath is not allowed here" in st["message"]
    assert try_get(cluster, "deployment", "host-pool-server", "-n", ns) is None
    # And no pod at all came out of it, let alone one as `default` or with the node's filesystem.
    assert get_json(cluster, "pods", "-n", ns)["items"] == []
    assert get_json(cluster, "rolebindings", "-n", ns)["items"][0]["metadata"]["name"] == "rollout-author"


def test_the_charts_admission_policy_refuses_them_at_apply(operator: Any, kro_namespace: str) -> None:
    """`helm install` with the policy scoped to one namespace; the user's create is refused, naming the field."""
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    grant_create_only(cluster, ns)
    release_ns = cluster.new_namespace("krpol", wait_for_default_sa=False)
    cluster.helm("install", "krpol", str(CHART), "--namespace", release_ns, "--wait=false",
                 "--set", f"watchNamespaces={{{ns}}}", "--set", "policy.allowedServiceAccounts={trainer-*}",
                 "--set", "policy.allowedImagePrefixes={registry.example.com/ml/}")
    try:
        policies = get_json(cluster, "validatingadmissionpolicies", "-l", "app.kubernetes.io/instance=krpol")["items"]
        assert sorted(p["metadata"]["name"] for p in policies) == ["krpol-kuberollout-rolloutjobs",
                                                                   "krpol-kuberollout-sglangpools"]
        host_job = job("host-root", volumes=HOST_ROOT, volumeMounts=MOUNT_ROOT)
        # The API server loads new policies asynchronously: wait until the first refusal.
        refused = wait("the admission policy to be in force",
                       lambda: (p := create_as_user(cluster, ns, host_job, "--dry-run=server")).returncode != 0 and p,
                       timeout=30)
        assert "spec.runtime.volumes[0].hostPath: volume type not allowed here" in refused.stderr, refused.stderr
        assert "ValidatingAdmissionPolicy 'krpol-kuberollout-rolloutjobs'" in refused.stderr

        as_default = create_as_user(cluster, ns, job("as-default", serviceAccountName="default"))
        assert as_default.returncode != 0
        assert "spec.runtime.serviceAccountName: ServiceAccount default is not allowed here" in as_default.stderr
        host_pool = create_as_user(cluster, ns, pool("host-pool", volumes=HOST_ROOT, volumeMounts=MOUNT_ROOT))
        assert host_pool.returncode != 0 and "spec.volumes[0].hostPath: volume type not allowed" in host_pool.stderr
        other_image = create_as_user(cluster, ns, job("other-image", image="evil.example.org/miner:1"))
        assert other_image.returncode != 0
        assert "spec.runtime.image: image evil.example.org/miner:1 is not from an allowed registry" in other_image.stderr
        router_image = create_as_user(cluster, ns, pool("other-router", router={"image": "evil.example.org/r:1"}))
        assert router_image.returncode != 0 and "spec.router.image: image evil.example.org/r:1" in router_image.stderr
        for kind, name in (("rj", "host-root"), ("rj", "as-default"), ("sgp", "host-pool"), ("rj", "other-image")):
            assert try_get(cluster, kind, name, "-n", ns) is None
        # Within the policy: an allowed ServiceAccount glob, and the volume types of the restricted profile.
        fine = job("fine", serviceAccountName="trainer-7", image="registry.example.com/ml/runtime:2",
                   volumes=[{"name": "d", "persistentVolumeClaim":
                                                                     {"claimName": "data"}}],
                   volumeMounts=[{"name": "d", "mountPath": "/data"}])
        ok = create_as_user(cluster, ns, fine, "--dry-run=server")
        assert ok.returncode == 0, ok.stderr
        # Only the objects themselves are matched: never the operator's status writes, scale or delete.
        for policy in policies:
            (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
            assert rule["operations"] == ["CREATE", "UPDATE"] and "/" not in "".join(rule["resources"])
        rendered = cluster.helm("get", "manifest", "krpol", "--namespace", release_ns).stdout
        binding = next(d for d in yaml.safe_load_all(rendered)
                       if d and d["kind"] == "ValidatingAdmissionPolicyBinding")
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == [ns]
    finally:
        cluster.helm("uninstall", "krpol", "--namespace", release_ns)
        cluster.delete_namespace(release_ns)
    left = cluster.kubectl("get", "validatingadmissionpolicies,validatingadmissionpolicybindings",
                           "-l", "app.kubernetes.io/instance=krpol", "-o", "name").stdout.strip()
    assert left == ""
