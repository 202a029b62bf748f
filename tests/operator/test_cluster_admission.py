"""Every bad manifest gets a named answer on a real API server, with the operator running.

The seven cases that used to get no answer at all (a pool whose Deployment the API server refuses:
a bad shmSize, a bad CPU quantity, an env var name with '=', a volume mount without its volume;
a job's eval.interval without datasets, remote_rm without a URL, a missing maxResponseLength),
and a bad quantity in spec.runtime.resources (which used to quote a regex naming no field), are
refused at `kubectl apply` by the CRDs' CEL rules, naming the field. What CEL cannot see (a
volume source the API server refuses) is refused by the operator, in status, naming the field.
Each case: the answer within 2 s of apply, no server Deployment or runtime Job for it, and the
fixed spec runs.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from tests.cluster.harness import Cluster
from tests.operator.kube_helpers import apply, condition, events, status, try_get, wait

pytestmark = pytest.mark.cluster

ANSWER_WITHIN = 2.0  # seconds from apply to the named answer


def pool(name: str, **spec: Any) -> dict[str, Any]:
    base = {"engine": "simulated", "gpusPerReplica": 0, "replicas": 1, "router": {"enabled": False}}
    return {"apiVersion": "kuberollout.io/v1alpha1", "kind": "SGLangPool", "metadata": {"name": name},
            "spec": {**base, **spec}}


def job(name: str, **spec: Any) -> dict[str, Any]:
    base = {"endpoint": "http://engine.invalid:30000", "dataset": {"path": "/data/train.jsonl"},
            "rollout": {"batchSize": 4, "numRollouts": 2, "maxResponseLength": 64}}
    return {"apiVersion": "kuberollout.io/v1alpha1", "kind": "RolloutJob", "metadata": {"name": name},
            "spec": {**base, **spec}}


BAD_POOLS = [
    ({"shmSize": "lots"}, ["spec.shmSize", "'lots' is not a non-negative Kubernetes quantity"]),
    ({"resources": {"requests": {"cpu": "two"}}}, ["spec.resources.requests[cpu]", "'two' is not a non-negative"]),
    ({"env": [{"name": "MODE=fast", "value": "1"}]},
     ["spec.env[0].name", "'MODE=fast' is not a valid environment variable name"]),
    ({"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
     ["spec.volumeMounts", "a volumeMounts[].name names no volume in volumes"]),
]
BAD_JOBS = [
    ({"eval": {"interval": 5}}, ["spec.eval.interval", "needs spec.eval.datasets"]),
    ({"reward": {"type": "remote_rm"}}, ["spec.reward.url", "remote_rm needs spec.reward.url"]),
    ({"rollout": {"batchSize": 4, "numRollouts": 2}},
     ["spec.rollout.maxResponseLength", "required by the default generate function"]),
    # The misleading one: the API server used to answer with a regex and no field.
    ({"runtime": {"resources": {"requests": {"cpu": "lots"}}}},
     ["spec.runtime.resources.requests[cpu]", "'lots' is not a non-negative Kubernetes quantity"]),
]


def refused_at_apply(cluster: Cluster, ns: str, doc: dict[str, Any], fields: list[str]) -> None:
    started = time.monotonic()
    proc = apply(cluster, ns, doc, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0, f"accepted: {doc['spec']}"
    for text in fields:
        assert text in proc.stderr, proc.stderr
    assert elapsed < ANSWER_WITHIN, elapsed


def watched(cluster: Cluster, ns: str) -> None:
    """Make sure the operator watches the fresh namespace (kopf discovers kro-* namespaces by a watch)."""
    apply(cluster, ns, pool("warmup", replicas=0))
    wait("the operator to reconcile in this namespace",
         lambda: status(cluster, ns, "sgp", "warmup").get("observedGeneration"), timeout=60)


def refuse_each(cluster: Cluster, ns: str, cases: list[tuple[dict[str, Any], list[str]]],
                build: Any, kind: str, child: str) -> None:
    """Apply each bad case: refused naming the field, nothing stored, no child (`child` % name) created."""
    watched(cluster, ns)
    for i, (change, fields) in enumerate(cases):
        name = f"bad-{i}"
        refused_at_apply(cluster, ns, build(name, **change), fields)
        assert try_get(cluster, kind, name, "-n", ns) is None
        assert try_get(cluster, *(child % name).split("/"), "-n", ns) is None


def test_bad_pools_are_refused_at_apply_naming_the_field(operator: Any, kro_namespace: str) -> None:
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    refuse_each(cluster, ns, BAD_POOLS, pool, "sgp", "deployment/%s-server")
    # Fixed: the pool's server Deployment appears, and its conditions say the spec is fine.
    fixed = pool("bad-3", volumes=[{"name": "data", "emptyDir": {}}],
                 volumeMounts=[{"name": "data", "mountPath": "/data"}], env=[{"name": "MODE", "value": "fast"}],
                 shmSize="64Mi", resources={"requests": {"cpu": "100m"}})
    apply(cluster, ns, fixed)
    wait("the fixed pool's server Deployment", lambda: try_get(cluster, "deployment", "bad-3-server", "-n", ns))
    st = wait("ConfigValid", lambda: condition(status(cluster, ns, "sgp", "bad-3"), "ConfigValid"))
    assert st["status"] == "True"


def test_bad_jobs_are_refused_at_apply_naming_the_field(operator: Any, kro_namespace: str) -> None:
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    refuse_each(cluster, ns, BAD_JOBS, job, "rj", "job/%s-1")
    fixed = job("bad-0", eval={"interval": 5, "datasets": [{"name": "aime", "path": "/data/aime.jsonl"}]},
                reward={"type": "remote_rm", "url": "http://rm.invalid:8000"},
                runtime={"resources": {"requests": {"cpu": "500m"}}})
    apply(cluster, ns, fixed)
    batch = wait("the fixed job's runtime Job", lambda: try_get(cluster, "job", "bad-0-1", "-n", ns))
    assert batch["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "500m"


def failed_after_apply(cluster: Cluster, ns: str, kind: str, doc: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Apply, then (status, seconds) once the operator has failed the object."""
    name = doc["metadata"]["name"]
    started = time.monotonic()
    apply(cluster, ns, doc)
    st = wait(f"{kind}/{name} to fail naming the field",
              lambda: (s := status(cluster, ns, kind, name)).get("phase") == "Failed" and s, timeout=10,
              interval=0.05)
    return st, time.monotonic() - started


def test_what_only_the_api_server_refuses_is_named_in_status_and_recovers(operator: Any, kro_namespace: str) -> None:
    """A volume source CEL cannot see (the CRDs keep volume sources opaque): the operator names it."""
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    watched(cluster, ns)
    broken = [{"name": "data", "persistentVolumeClaim": {}}]  # claimName missing
    mounts = [{"name": "data", "mountPath": "/data"}]

    doc = pool("pvc", volumes=broken, volumeMounts=mounts)
    st, elapsed = failed_after_apply(cluster, ns, "sgp", doc)
    message = condition(st, "ConfigValid")["message"]
    assert condition(st, "ConfigValid")["reason"] == "SpecRejected"
    assert "spec.volumes[0].persistentVolumeClaim.claimName: Required value" in message, message
    assert elapsed < ANSWER_WITHIN, elapsed
    assert try_get(cluster, "deployment", "pvc-server", "-n", ns) is None
    warning = [e for e in events(cluster, ns, "pvc") if e["reason"] == "SpecRejected"]
    assert warning and warning[0]["type"] == "Warning" and "spec.volumes[0]" in warning[0]["message"]
    fixed = copy.deepcopy(doc)
    fixed["spec"]["volumes"][0]["persistentVolumeClaim"] = {"claimName": "rollout-data"}
    apply(cluster, ns, fixed)
    wait("the fixed pool's server Deployment", lambda: try_get(cluster, "deployment", "pvc-server", "-n", ns))
    st = wait("ConfigValid again", lambda: (s := status(cluster, ns, "sgp", "pvc")).get("phase") != "Failed" and s)
    assert condition(st, "ConfigValid")["status"] == "True"

    doc = job("pvc", runtime={"volumes": broken, "volumeMounts": mounts})
    st, elapsed = failed_after_apply(cluster, ns, "rj", doc)
    assert st["reason"] == "JobRejected"
    assert "spec.runtime.volumes[0].persistentVolumeClaim.claimName: Required value" in st["message"], st["message"]
    assert elapsed < ANSWER_WITHIN, elapsed
    assert try_get(cluster, "job", "pvc-1", "-n", ns) is None
    fixed = copy.deepcopy(doc)
    fixed["spec"]["runtime"]["volumes"][0]["persistentVolumeClaim"] = {"claimName": "rollout-data"}
    apply(cluster, ns, fixed)
    st = wait("the fixed job's attempt", lambda: (s := status(cluster, ns, "rj", "pvc")).get("jobName") and s)
    batch = wait("the fixed job's runtime Job", lambda: try_get(cluster, "job", st["jobName"], "-n", ns))
    assert batch["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "rollout-data"
