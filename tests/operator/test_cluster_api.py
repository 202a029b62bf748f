"""The generated CRDs on a real API server: invalid manifests are rejected at `kubectl apply`."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.cluster.harness import Cluster
from tests.operator.kube_helpers import apply, get_json

pytestmark = pytest.mark.cluster


def job(**spec: Any) -> dict[str, Any]:
    base = {"apiVersion": "kuberollout.io/v1alpha1", "kind": "RolloutJob", "metadata": {"name": "j"},
            "spec": {"endpoint": "http://engine:30000", "dataset": {"path": "/data/train.jsonl"},
                     "rollout": {"batchSize": 4, "numRollouts": 2, "maxResponseLength": 64}}}
    for key, value in spec.items():
        if value is None:
            base["spec"].pop(key)
        else:
            base["spec"][key] = value
    return base


def rejected(cluster: Cluster, ns: str, doc: dict[str, Any]) -> str:
    proc = apply(cluster, ns, doc, check=False)
    assert proc.returncode != 0, f"accepted: {doc}"
    return proc.stderr


@pytest.fixture
def ns(crds_installed: Cluster) -> Any:
    name = crds_installed.new_namespace("kroapi", wait_for_default_sa=False)
    yield name
    crds_installed.delete_namespace(name)


@pytest.mark.parametrize("doc,message", [
    (job(dataset={"inputKey": "prompt"}), "spec.dataset.path: Required value"),
    (job(poolRef={"name": "p"}), "set exactly one of spec.poolRef or spec.endpoint"),
    (job(endpoint=None), "set exactly one of spec.poolRef or spec.endpoint"),
    (job(rollout={"batchSize": -4, "numRollouts": 1}), "spec.rollout.batchSize"),
    (job(rollout={"batchSize": 4}), "set spec.rollout.numRollouts or spec.rollout.numEpochs"),
    (job(reward={"type": "vibes"}), "unknown reward type 'vibes'"),
    (job(rollout={"batchSize": 4, "numRollouts": 1, "topP": 1.5}), "spec.rollout.topP"),
    (job(rollout={"batchSize": 4, "numRollouts": 1, "customGenerateFunctionPath": "no spaces please"}),
     "spec.rollout.customGenerateFunctionPath"),
    (job(endpoint="engine:30000"), "spec.endpoint"),
    (job(output={"format": "csv"}), "spec.output.format"),
], ids=["no-dataset-path", "pool-and-endpoint", "neither", "negative-batch", "no-count", "reward-type", "top-p",
        "plugin-path", "endpoint-url", "format"])
def test_invalid_rolloutjobs_are_rejected(crds_installed: Cluster, ns: str, doc: dict[str, Any], message: str) -> None:
    assert message in rejected(crds_installed, ns, doc)


def test_long_names_are_rejected(crds_installed: Cluster, ns: str) -> None:
    doc = job()
    doc["metadata"]["name"] = "j" * 53
    assert "at most 52 characters" in rejected(crds_installed, ns, doc)


def test_defaults_and_immutability(crds_installed: Cluster, ns: str) -> None:
    cluster = crds_installed
    apply(cluster, ns, job())
    stored = get_json(cluster, "rj", "j", "-n", ns)["spec"]
    # Defaults come from RolloutConfig (through the generated schema).
    assert stored["rollout"]["samplesPerPrompt"] == 1 and stored["rollout"]["concurrency"] == 512
    assert stored["dataset"]["inputKey"] == "input" and stored["output"] == {"path": "./outputs", "format": "jsonl"}
    assert stored["backoffLimit"] == 3 and stored["suspend"] is False
    # Mutable settings change; the ones that would corrupt committed state do not.
    changed = job(rollout={"batchSize": 4, "numRollouts": 5, "temperature": 0.7, "maxResponseLength": 64})
    apply(cluster, ns, changed)
    for field, value, message in [
        ("rollout", {"batchSize": 8, "numRollouts": 5}, "spec.rollout.batchSize is immutable"),
        ("rollout", {"batchSize": 4, "numRollouts": 5, "samplesPerPrompt": 4}, "spec.rollout.samplesPerPrompt is immutable"),
        ("dataset", {"path": "/data/other.jsonl"}, "spec.dataset.path is immutable"),
        ("dataset", {"path": "/data/train.jsonl", "maxPromptLength": 512}, "cannot be added or removed"),
        ("output", {"path": "/elsewhere"}, "spec.output.path is immutable"),
    ]:
        doc = copy.deepcopy(changed)
        doc["spec"][field] = value
        assert message in rejected(cluster, ns, doc), field


def test_pool_rules(crds_installed: Cluster, ns: str) -> None:
    cluster = crds_installed
    pool = {"apiVersion": "kuberollout.io/v1alpha1", "kind": "SGLangPool", "metadata": {"name": "p"},
            "spec": {"model": {"path": "Qwen/Qwen3-8B"}}}
    bad_cases = [
        ({"model": None}, "spec.model is required for engine sglang"),
        ({"model": {"path": "x", "pvc": {"claimName": "m"}}}, "set exactly one of model.path or model.pvc"),
        ({"gpusPerReplica": 0}, "engine sglang needs gpusPerReplica >= 1"),
        ({"resources": {"limits": {"nvidia.com/gpu": 2}}}, "set GPUs with spec.gpusPerReplica"),
        ({"router": {"policy": "consistent_hashing"}}, "spec.router.policy"),  # not a 0.3.2 --policy
    ]
    for change, message in bad_cases:
        doc = copy.deepcopy(pool)
        for key, value in change.items():
            if value is None:
                doc["spec"].pop(key)
            else:
                doc["spec"][key] = value
        assert message in rejected(cluster, ns, doc), change
    simulated = copy.deepcopy(pool)
    simulated["spec"] = {"engine": "simulated", "gpusPerReplica": 0}
    apply(cluster, ns, simulated)
    stored = get_json(cluster, "sgp", "p", "-n", ns)["spec"]
    assert stored["router"] == {"enabled": True, "policy": "cache_aware", "port": 30000, "replicas": 1}
    assert stored["shmSize"] == "16Gi" and stored["port"] == 30000


def test_categories_and_short_names(crds_installed: Cluster, ns: str) -> None:
    apply(crds_installed, ns, job())
    out = crds_installed.kubectl("get", "kuberollout", "-n", ns).stdout
    assert "rolloutjob.kuberollout.io/j" in out
    header = crds_installed.kubectl("get", "rj", "-n", ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "REASON", "POOL", "ROLLOUT", "TOTAL", "COMPLETED", "ABORTED", "AGE"]
