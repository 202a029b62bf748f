"""Exactly-once batches and the trainer's reader on the test control plane (the ConfigMap state store).

The overlap test plays the operator's part in fencing (it raises `kuberollout.io/attempt` before
the newer attempt starts, as the operator does before creating that attempt's Job) so that the two
runtime processes can be interleaved exactly; the operator's own fencing is covered by
test_cluster_job.py. The reader test runs as a trainer with its own ServiceAccount and a Role that
grants only what docs/operator.md says a trainer needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout_runtime.contract import ATTEMPT_ANNOTATION, CONSUMED_KEY
from rollout_runtime.kube import KubernetesAccessError
from rollout_runtime.reader import BatchDeletedError, RolloutReader
from rollout_runtime.runner import Runner
from rollout_runtime.state import ConfigMapStateStore
from tests.cluster.harness import Cluster
from tests.conftest import REPO, TINY_MODEL, write_jsonl
from tests.operator.kube_helpers import apply, get_json
from tests.runtime.overlap import Scenario, check_exactly_once, check_zombie_lost, job, run_overlap

pytestmark = pytest.mark.cluster

REPEATS = 20


@pytest.fixture(scope="module")
def shared_ns(cluster: Cluster) -> Iterator[str]:
    name = cluster.new_namespace("batches")
    yield name
    cluster.delete_namespace(name)


def state_configmap(cluster: Cluster, ns: str, name: str, attempt: int = 1) -> None:
    """What the operator creates: an empty `<job>-state` whose annotation is the fence."""
    from kubernetes import client

    meta = client.V1ObjectMeta(name=name, annotations={ATTEMPT_ANNOTATION: str(attempt)})
    cluster.core().create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta))


def raise_fence(cluster: Cluster, ns: str, name: str, attempt: int) -> None:
    cluster.core().patch_namespaced_config_map(name, ns, {"metadata": {"annotations": {ATTEMPT_ANNOTATION: str(attempt)}}})


@pytest.mark.parametrize("seed", range(REPEATS))
def test_overlapping_attempts_configmap_store(cluster: Cluster, shared_ns: str, sim_engines: Any, tmp_path: Path,
                                              arith_rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
                                              seed: int) -> None:
    scenario = Scenario.draw(seed)
    cm = f"overlap{seed}-state"
    state_configmap(cluster, shared_ns, cm)
    config_path, args = job(tmp_path, sim_engines.url, arith_rows, state_backend="configmap", state_configmap=cm,
                            state_namespace=shared_ns)
    out = tmp_path / "out"
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    reader = RolloutReader(out, state=ConfigMapStateStore(cm, shared_ns, "", api=cluster.core()))
    t0 = time.perf_counter()

    def before_b(attempt: int) -> None:
        if attempt > 1:
            raise_fence(cluster, shared_ns, cm, attempt)

    outcome = run_overlap(scenario, config_path, args, cluster.env(), reader, monkeypatch, before_b)
    check_zombie_lost(outcome, scenario, reader, out)
    final, _ = ConfigMapStateStore(cm, shared_ns, "", api=cluster.core()).read()  # buffer loaded from its blob
    check_exactly_once(reader, final, args)
    blobs = out / ".state"
    assert final.data_source.buffer_ref and Path(final.data_source.buffer_ref).parent == blobs
    # A later attempt's start sweeps the stale attempt's batch and blob: only what the commit names remains.
    raise_fence(cluster, shared_ns, cm, 3)
    monkeypatch.setenv("KUBEROLLOUT_ATTEMPT", "3")
    assert Runner(args).run().rollouts == 0
    committed = reader.committed()
    assert sorted(p.name for p in out.glob("rollout_*")) == sorted(committed.batch_name(k) for k in range(5))
    assert [p.name for p in blobs.iterdir()] == [Path(committed.data_source.buffer_ref).name]
    print(f"seed {seed}: {scenario} in {time.perf_counter() - t0:.1f}s {outcome.timings}")


def test_an_eval_stopped_before_on_the_configmap_store_runs_on_resume(cluster: Cluster, shared_ns: str,
                                                                      sim_engines: Any, tmp_path: Path,
                                                                      arith_rows: list[dict[str, Any]]) -> None:
    """Eval reports are named by the commits on the ConfigMap store too; the eval commit after rollout
    r re-commits r with its partial-rollout buffer blob (the same bytes, never replaced)."""
    from rollout_runtime.fault_hooks import CRASH_BEFORE_EVAL_ENV, CRASH_EXIT_CODE

    cm = "evals-state"
    state_configmap(cluster, shared_ns, cm)
    evald = write_jsonl(tmp_path / "e.jsonl", arith_rows[:3])
    config_path, _ = job(tmp_path, sim_engines.url, arith_rows, state_backend="configmap", state_configmap=cm,
                         state_namespace=shared_ns, eval_interval=2, eval_prompt_data=["arith", evald],
                         n_samples_per_eval_prompt=2)
    cmd = [sys.executable, "-m", "rollout_runtime.cli", "run", "--no-progress", "--config", str(config_path)]
    crashed = subprocess.run(cmd, cwd=REPO, env=cluster.env(KUBEROLLOUT_ATTEMPT="1", **{CRASH_BEFORE_EVAL_ENV: "1"}),
                             capture_output=True, text=True, timeout=180)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    reader = RolloutReader(tmp_path / "out", state=ConfigMapStateStore(cm, shared_ns, "", api=cluster.core()))
    state = reader.committed()
    assert state.rollout_id == 1 and sorted(state.evals) == [-1]
    raise_fence(cluster, shared_ns, cm, 2)  # the operator's part: the next attempt
    resumed = subprocess.run(cmd, cwd=REPO, env=cluster.env(KUBEROLLOUT_ATTEMPT="2"), capture_output=True, text=True,
                             timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert "rollout 1 was committed but not its eval: evaluating now" in resumed.stderr
    state = reader.committed()
    assert state.finished and sorted(state.evals) == [-1, 1, 3]
    assert state.evals[-1].startswith("a1-") and state.evals[1].startswith("a2-") and state.evals[3] == state.evals[1]
    assert [r["rollout_id"] for r in reader.eval_reports()] == [0, 1, 3]
    assert sorted(p.name for p in (tmp_path / "out").glob("eval_*")) == sorted(state.eval_name(k) for k in state.evals)


# ------------------------------------------------------------------------------- the trainer's reader

TRAINER_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "trainer"},
    "rules": [
        {"apiGroups": ["kuberollout.io"], "resources": ["rolloutjobs"], "resourceNames": ["rl"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["rl-state"], "verbs": ["get", "patch"]},
    ],
}


def rolloutjob(dataset: str, out: Path, keep_last: int) -> dict[str, Any]:
    return {
        "apiVersion": "kuberollout.io/v1alpha1", "kind": "RolloutJob", "metadata": {"name": "rl"},
        "spec": {
            "endpoint": "http://unused.invalid:1",
            "dataset": {"path": dataset, "tokenizer": str(TINY_MODEL), "inputKey": "prompt", "labelKey": "label",
                        "applyChatTemplate": True},
            "rollout": {"batchSize": 3, "samplesPerPrompt": 2, "numRollouts": 5, "maxResponseLength": 32,
                        "overSamplingBatchSize": 4, "partialRollout": True},
            "reward": {"type": "math"},
            "output": {"path": str(out), "keepLast": keep_last},
        },
    }


def runtime(cluster: Cluster, ns: str, engine_url: str, attempt: int, **env: str) -> subprocess.Popen[str]:
    """The runtime as the operator's pod runs it (admin credentials here; its Role is tested elsewhere)."""
    cmd = [sys.executable, "-m", "rollout_runtime.cli", "run", "--no-progress", "--rolloutjob", "rl", "--namespace", ns,
           "--sglang-router-url", engine_url, "--state-backend", "configmap", "--state-configmap", "rl-state",
           "--state-namespace", ns]
    return subprocess.Popen(cmd, cwd=REPO, env=cluster.env(KUBEROLLOUT_ATTEMPT=str(attempt), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_reader_from_rolloutjob_with_trainer_credentials(crds_installed: Cluster, namespace: str, sim_engines: Any,
                                                         tmp_path: Path, arith_rows: list[dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, ns, out = crds_installed, namespace, tmp_path / "out"
    apply(cluster, ns, rolloutjob(write_jsonl(tmp_path / "d.jsonl", arith_rows), out, keep_last=1))
    state_configmap(cluster, ns, "rl-state")
    cluster.kubectl("create", "serviceaccount", "trainer", "-n", ns)
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    apply(cluster, ns, TRAINER_ROLE, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "trainer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trainer"},
        "subjects": [{"kind": "ServiceAccount", "name": "trainer", "namespace": ns}]})

    # Attempt 1 dies between publishing batch 2 and committing it.
    first = runtime(cluster, ns, sim_engines.url, 1, KUBEROLLOUT_CRASH_AFTER_WRITE="2")
    assert first.wait(180) == 137, first.stdout.read()
    assert len(list(out.glob("rollout_000002.*"))) == 1  # on disk, not committed

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig_for_sa(ns, "nobody")))
    with pytest.raises(KubernetesAccessError, match=r"access denied \(403\).*get on the RolloutJob and get/patch"):
        RolloutReader.from_rolloutjob("rl", ns)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig_for_sa(ns, "trainer")))
    trainer = RolloutReader.from_rolloutjob("rl", ns, max_poll_interval=0.2)  # spec.output.path, <job>-state
    assert trainer.output_dir == str(out)
    with pytest.raises(TimeoutError):
        trainer.get(2, timeout=0.5)
    before = {k: trainer.get_bytes(k, timeout=0) for k in (0, 1)}

    # Attempt 2 (fence raised first, as the operator does). The trainer reads batch 2 as soon as it is
    # committed and acks batch 0 while the runtime is parked before writing 3: the runtime's next commit
    # meets a resourceVersion changed by the trainer's key only, and must go through.
    raise_fence(cluster, ns, "rl-state", 2)
    second = runtime(cluster, ns, sim_engines.url, 2, KUBEROLLOUT_PAUSE_BEFORE_WRITE="3:3")
    got: dict[str, Any] = {}

    def train() -> None:
        got["2"] = trainer.get(2, timeout=120)
        got["ack"] = trainer.ack(0)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join(150)
    log = second.communicate(timeout=180)[0]
    assert second.returncode == 0, log
    assert "only in keys this runtime does not own; committing on top" in log
    assert got["ack"] == 0 and len(got["2"]) == 3
    cm = get_json(cluster, "configmap", "rl-state", "-n", ns)["data"]
    assert cm[CONSUMED_KEY] == "0" and cm["rolloutId"] == "4" and cm["finished"] == "true"

    # The trainer restarts: batch 1 is the same bytes; batch 0 (acked, older than keepLast) is gone, with a
    # clear error; nothing it has not acked was deleted.
    restarted = RolloutReader.from_rolloutjob("rl", ns)
    assert restarted.get_bytes(1) == before[1]
    with pytest.raises(BatchDeletedError, match=r"output.keepLast=1"):
        restarted.get(0)
    assert [k for k, _ in restarted.iter_batches(start=1)] == [1, 2, 3, 4]
    state = json.loads(cm["state.json"])
    assert state["pruned_through"] == 0 and state["keep_last"] == 1
    assert sorted(int(p.name[8:14]) for p in out.glob("rollout_*")) == [1, 2, 3, 4]
