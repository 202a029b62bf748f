"""RolloutJob end to end on the test control plane, with the runtime run for real.

The runtime runs as a local process with the Job pod's command, environment and ServiceAccount
credentials (there is no kubelet to run containers), against a simulated SGLang engine reached
through `spec.endpoint`. The test then reports the process's exit in the pod status, as a kubelet
would, so the Job controller and the operator see what they would see in a real cluster.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread
from tests.cluster.harness import Cluster
from tests.operator.kube_helpers import (
    TINY,
    apply,
    batch_files,
    batch_lines,
    condition,
    events,
    get_json,
    job_pod,
    report_exit,
    rolloutjob,
    run_pod_locally,
    status,
    try_get,
    wait,
)

pytestmark = pytest.mark.cluster

@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """A simulated engine whose responses take ~0.1 s, so that progress is visible while it runs."""
    handle = start_sim_engine_thread(SimEngineConfig(token_latency=0.008, length_dist="lognormal", length_median=24,
                                                     tokenizer=TINY, answer_accuracy=0.5))
    yield handle
    handle.stop()


def printed_row(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    """`kubectl get rolloutjobs` as a user sees it, parsed into {COLUMN: value}."""
    lines = cluster.kubectl("get", "rolloutjobs", name, "-n", ns).stdout.splitlines()
    header = lines[0].split()
    row = lines[1].split()
    if len(row) < len(header):  # empty cells: re-split on the header's column offsets
        starts = [lines[0].index(h) for h in header]
        row = [lines[1][a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
    return dict(zip(header, row))


def test_run_to_success_with_progress_in_kubectl(operator: Any, kro_namespace: str, engine: Any, dataset: str,
                                                 tmp_path: Path) -> None:
    cluster: Cluster = operator.cluster
    ns, out = kro_namespace, tmp_path / "out"
    # Over-sampling with partial rollout: 8 groups in flight for a batch of 4, so the groups still
    # running when a batch fills are aborted (and recycled): ABORTED climbs too.
    rollout = {"batchSize": 4, "samplesPerPrompt": 2, "numRollouts": 6, "maxResponseLength": 32,
               "overSamplingBatchSize": 8, "partialRollout": True}
    apply(cluster, ns, rolloutjob("run", engine.url, dataset, out, rollout=rollout))
    pod = job_pod(cluster, ns, "run-1")
    assert pod["spec"]["serviceAccountName"] == "run-runtime"
    assert status(cluster, ns, "rj", "run")["phase"] == "Pending"

    proc = run_pod_locally(cluster, pod, tmp_path, background=True)
    seen: list[tuple[str, ...]] = []
    while proc.poll() is None:
        row = printed_row(cluster, ns, "run")
        values = (row.get("PHASE", ""), row.get("ROLLOUT", ""), row.get("COMPLETED", ""), row.get("ABORTED", ""))
        if not seen or seen[-1] != values:
            seen.append(values)
        time.sleep(0.05)
    output = proc.stdout.read()
    assert proc.returncode == 0, output
    report_exit(cluster, pod, 0)

    final = wait("Succeeded", lambda: (s := status(cluster, ns, "rj", "run")).get("phase") == "Succeeded" and s)
    lines = batch_lines(cluster, ns, "run", out)
    assert sorted(lines) == list(range(6))
    assert final["completed"] == sum(lines.values()) == 6 * 4 * 2
    assert (final["rolloutId"], final["numRollouts"], final["attempt"]) == (5, 6, 1)
    cm = get_json(cluster, "configmap", "run-state", "-n", ns)["data"]
    assert final["aborted"] == int(cm["aborted"]) > 0 and final["completed"] == int(cm["completed"])
    assert condition(final, "Complete")["status"] == "True" and final["completionTime"]
    # Progress was visible while the runtime ran: ROLLOUT and COMPLETED climbed in `kubectl get`.
    running = [v for v in seen if v[0] == "Running" and v[1].isdigit()]
    rollout_ids = [int(v[1]) for v in running]
    completed = [int(v[2]) for v in running]
    aborted = [int(v[3]) for v in running]
    assert len(set(rollout_ids)) >= 2 and len(set(completed)) >= 2, seen
    for column in (rollout_ids, completed, aborted):
        assert column == sorted(column), seen
    row = printed_row(cluster, ns, "run")
    assert (row["PHASE"], row["ROLLOUT"], row["TOTAL"], row["COMPLETED"], row["ABORTED"]) == (
        "Succeeded", "5", "6", "48", str(final["aborted"]))
    reasons = [e["reason"] for e in events(cluster, ns, "run")]
    assert {"Started", "Running", "Succeeded"} <= set(reasons)
    metrics = operator.metrics()
    assert f'kuberollout_rolloutjob_samples{{namespace="{ns}",rolloutjob="run",state="completed"}} 48.0' in metrics
    assert 'kuberollout_reconcile_total{kind="rolloutjob",result="success"}' in metrics


def test_crash_between_write_and_commit_then_retry(operator: Any, kro_namespace: str, engine: Any, dataset: str,
                                                   tmp_path: Path) -> None:
    cluster: Cluster = operator.cluster
    ns, out = kro_namespace, tmp_path / "out"
    apply(cluster, ns, rolloutjob("crash", engine.url, dataset, out, backoffLimit=1))

    # Attempt 1 dies right after writing batch 3, before committing it.
    pod1 = job_pod(cluster, ns, "crash-1")
    first = run_pod_locally(cluster, pod1, tmp_path, {"KUBEROLLOUT_CRASH_AFTER_WRITE": "3"})
    assert first.returncode == 137, first.stdout + first.stderr
    assert batch_files(out) == [0, 1, 2, 3]  # batch 3 written, not committed
    assert wait("commit of rollout 2 mirrored", lambda: status(cluster, ns, "rj", "crash").get("rolloutId") == 2)
    report_exit(cluster, pod1, 137, "killed between write and commit")

    # The operator starts attempt 2, which resumes from the last commit (rollout 2).
    st = wait("attempt 2", lambda: (s := status(cluster, ns, "rj", "crash")).get("attempt") == 2 and s)
    assert st["failed"] == 1 and st["jobName"] == "crash-2"
    cm = get_json(cluster, "configmap", "crash-state", "-n", ns)
    assert cm["metadata"]["annotations"]["kuberollout.io/attempt"] == "2"
    pod2 = job_pod(cluster, ns, "crash-2")
    assert {e["name"]: e.get("value") for e in pod2["spec"]["containers"][0]["env"]}["KUBEROLLOUT_ATTEMPT"] == "2"
    # A leftover attempt-1 process is fenced off: it may not read or commit any more.
    zombie = run_pod_locally(cluster, pod1, tmp_path)
    assert zombie.returncode != 0 and "superseded" in zombie.stdout + zombie.stderr
    second = run_pod_locally(cluster, pod2, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "rollouts       3 (ids 3..5)" in second.stdout  # resumed after rollout 2
    report_exit(cluster, pod2, 0)

    final = wait("Succeeded", lambda: (s := status(cluster, ns, "rj", "crash")).get("phase") == "Succeeded" and s)
    lines = batch_lines(cluster, ns, "crash", out)
    assert sorted(lines) == list(range(6)) and batch_files(out) == list(range(6))  # every rollout id exactly once
    assert final["completed"] == sum(lines.values()) == 48
    assert (final["rolloutId"], final["attempt"], final["failed"]) == (5, 2, 1)
    state = json.loads(get_json(cluster, "configmap", "crash-state", "-n", ns)["data"]["state.json"])
    assert state["attempt"] == 2 and state["finished"] is True
    reasons = [e["reason"] for e in events(cluster, ns, "crash")]
    assert "AttemptFailed" in reasons and "Retrying" in reasons


def test_runtime_serviceaccount_is_least_privilege(operator: Any, kro_namespace: str, engine: Any,
                                                   dataset: str, tmp_path: Path) -> None:
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    apply(cluster, ns, rolloutjob("rbac", engine.url, dataset, tmp_path / "out"))
    wait("the runtime RoleBinding", lambda: try_get(cluster, "rolebinding", "rbac-runtime", "-n", ns))
    cluster.kubectl("create", "configmap", "other", "-n", ns, "--from-literal=a=b")
    sa = f"--as=system:serviceaccount:{ns}:rbac-runtime"

    def can(*args: str) -> str:
        return cluster.kubectl("auth", "can-i", *args, "-n", ns, sa, check=False).stdout.strip()

    assert can("get", "configmap/rbac-state") == "yes"
    assert can("patch", "configmap/rbac-state") == "yes"
    assert can("update", "configmap/rbac-state") == "yes"
    assert can("get", "rolloutjob.kuberollout.io/rbac") == "yes"
    assert can("get", "configmap/other") == "no"
    assert can("list", "configmaps") == "no"
    assert can("create", "configmaps") == "no"
    assert can("delete", "configmap/rbac-state") == "no"
    assert can("get", "secrets") == "no"
    assert can("list", "secrets") == "no"
    assert can("get", "rolloutjob.kuberollout.io/someone-else") == "no"
    assert can("patch", "rolloutjob.kuberollout.io/rbac") == "no"
    assert can("list", "pods") == "no"


def test_suspend_and_resume(operator: Any, kro_namespace: str, engine: Any, dataset: str, tmp_path: Path) -> None:
    cluster: Cluster = operator.cluster
    ns, out = kro_namespace, tmp_path / "out"
    apply(cluster, ns, rolloutjob("pause", engine.url, dataset, out))
    pod1 = job_pod(cluster, ns, "pause-1")
    run = run_pod_locally(cluster, pod1, tmp_path, {"KUBEROLLOUT_CRASH_AFTER_WRITE": "2"})
    assert run.returncode == 137
    wait("two commits mirrored", lambda: status(cluster, ns, "rj", "pause").get("rolloutId") == 1)

    cluster.kubectl("patch", "rj", "pause", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    st = wait("Suspended", lambda: (s := status(cluster, ns, "rj", "pause")).get("phase") == "Suspended"
              and condition(s, "Suspended").get("status") == "True" and s)
    assert try_get(cluster, "job", "pause-1", "-n", ns) is None  # Job and pod gone ...
    assert get_json(cluster, "configmap", "pause-state", "-n", ns)["data"]["rolloutId"] == "1"  # ... state kept
    assert st["rolloutId"] == 1 and "jobName" not in st

    cluster.kubectl("patch", "rj", "pause", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    st = wait("attempt 2 after resume", lambda: (s := status(cluster, ns, "rj", "pause")).get("attempt") == 2 and s)
    assert st.get("failed") is None  # suspending is not a failure
    pod2 = job_pod(cluster, ns, "pause-2")
    second = run_pod_locally(cluster, pod2, tmp_path)
    assert second.returncode == 0 and "(ids 2..5)" in second.stdout, second.stdout + second.stderr
    final = wait("Succeeded", lambda: (s := status(cluster, ns, "rj", "pause")).get("phase") == "Succeeded" and s)
    assert final["completed"] == sum(batch_lines(cluster, ns, "pause", out).values()) == 48
    assert {"Suspended", "Resumed"} <= {e["reason"] for e in events(cluster, ns, "pause")}


def test_invalid_spec_fails_visibly(operator: Any, kro_namespace: str, dataset: str, tmp_path: Path) -> None:
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    bad = rolloutjob("bad", "http://engine.invalid:1", dataset, tmp_path / "out",
                     filters={"overSamplingInputSize": 2})
    apply(cluster, ns, bad)
    st = wait("Failed", lambda: (s := status(cluster, ns, "rj", "bad")).get("phase") == "Failed" and s)
    assert st["reason"] == "InvalidSpec" and "spec.filters.overSamplingInputSize" in st["message"]
    assert condition(st, "ConfigValid")["status"] == "False"
    warning = [e for e in events(cluster, ns, "bad") if e["type"] == "Warning"]
    assert warning and "spec.filters.overSamplingInputSize" in warning[0]["message"]
    assert try_get(cluster, "job", "bad-1", "-n", ns) is None
    # Fixing the spec starts it.
    bad["spec"]["filters"] = {"overSamplingInputSize": 8}
    apply(cluster, ns, bad)
    wait("attempt 1 after the fix", lambda: status(cluster, ns, "rj", "bad").get("attempt") == 1)
    get_json(cluster, "job", "bad-1", "-n", ns)


def test_pool_reference_waits_then_deadline_and_ttl(operator: Any, kro_namespace: str, engine: Any, dataset: str,
                                                    tmp_path: Path) -> None:
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    doc = rolloutjob("late", engine.url, dataset, tmp_path / "out", activeDeadlineSeconds=3,
                     ttlSecondsAfterFinished=2)
    doc["spec"].pop("endpoint")
    doc["spec"]["poolRef"] = {"name": "missing"}
    apply(cluster, ns, doc)
    st = wait("WaitingForPool", lambda: (s := status(cluster, ns, "rj", "late")).get("phase") == "WaitingForPool"
              and s)
    assert condition(st, "PoolReady")["reason"] == "PoolNotFound" and "missing" in st["message"]
    # An endpoint instead: it starts, runs past its deadline, fails, and is deleted by its TTL.
    patch = {"spec": {"poolRef": None, "endpoint": engine.url}}
    cluster.kubectl("patch", "rj", "late", "-n", ns, "--type=merge", "-p", json.dumps(patch))
    job = wait("the Job", lambda: try_get(cluster, "job", "late-1", "-n", ns))
    assert 1 <= job["spec"]["activeDeadlineSeconds"] <= 3
    st = wait("DeadlineExceeded", lambda: (s := status(cluster, ns, "rj", "late")).get("reason") == "DeadlineExceeded"
              and s, timeout=30)
    assert st["phase"] == "Failed"
    wait("TTL deletion", lambda: try_get(cluster, "rj", "late", "-n", ns) is None, timeout=30)
    wait("children garbage-collected", lambda: try_get(cluster, "configmap", "late-state", "-n", ns) is None,
         timeout=30)


def test_operator_restart_is_safe(operator: Any, kro_namespace: str, engine: Any, dataset: str,
                                  tmp_path: Path) -> None:
    cluster: Cluster = operator.cluster
    ns, out = kro_namespace, tmp_path / "out"
    apply(cluster, ns, rolloutjob("restart", engine.url, dataset, out, backoffLimit=2))
    pod1 = job_pod(cluster, ns, "restart-1")
    operator.stop()
    try:
        # While the operator is down the runtime commits and then fails.
        run = run_pod_locally(cluster, pod1, tmp_path, {"KUBEROLLOUT_CRASH_AFTER_WRITE": "1"})
        assert run.returncode == 137
        report_exit(cluster, pod1, 137)
        wait("the Job to fail", lambda: any(c["type"] == "Failed" for c in (
            get_json(cluster, "job", "restart-1", "-n", ns).get("status") or {}).get("conditions") or []))
    finally:
        operator.start()
    # The restarted operator catches up: one retry, no duplicate Jobs or children.
    st = wait("attempt 2", lambda: (s := status(cluster, ns, "rj", "restart")).get("attempt") == 2 and s)
    assert st["failed"] == 1 and st["rolloutId"] == 0
    operator.restart()
    time.sleep(2)
    jobs = get_json(cluster, "jobs", "-n", ns, "-l", "kuberollout.io/rolloutjob=restart")["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == ["restart-1", "restart-2"]
    assert status(cluster, ns, "rj", "restart")["attempt"] == 2
    second = run_pod_locally(cluster, job_pod(cluster, ns, "restart-2"), tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    final = wait("Succeeded", lambda: (s := status(cluster, ns, "rj", "restart")).get("phase") == "Succeeded" and s)
    lines = batch_lines(cluster, ns, "restart", out)
    assert final["completed"] == sum(lines.values()) == 48 and sorted(lines) == list(range(6))


def test_operator_cli_help() -> None:
    proc = subprocess.run(["rollout-operator", "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0 and "--all-namespaces" in proc.stdout and "--metrics-port" in proc.stdout


def test_eviction_does_not_spend_an_attempt(operator: Any, kro_namespace: str, engine: Any, dataset: str,
                                            tmp_path: Path) -> None:
    """An evicted or preempted pod (condition DisruptionTarget) is replaced inside the same attempt."""
    cluster: Cluster = operator.cluster
    ns, out = kro_namespace, tmp_path / "out"
    apply(cluster, ns, rolloutjob("evict", engine.url, dataset, out, backoffLimit=0))  # a counted failure = Failed

    pod1 = job_pod(cluster, ns, "evict-1")
    first = run_pod_locally(cluster, pod1, tmp_path, {"KUBEROLLOUT_CRASH_AFTER_WRITE": "2"})  # killed mid-run
    assert first.returncode == 137, first.stdout + first.stderr
    report_exit(cluster, pod1, 137, "evicted")
    cluster.kubectl("patch", "pod", pod1["metadata"]["name"], "-n", ns, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
                                                           "reason": "EvictionByEvictionAPI",
                                                           "message": "Eviction API: evicting"}]}}))

    def replacement() -> dict[str, Any] | None:
        pods = get_json(cluster, "pods", "-n", ns, "-l", "job-name=evict-1")["items"]
        return next((p for p in pods if p["metadata"]["name"] != pod1["metadata"]["name"]), None)

    pod2 = wait("a replacement pod in the same Job", replacement)
    st = status(cluster, ns, "rj", "evict")
    assert st.get("attempt") == 1 and st.get("phase") != "Failed", st
    second = run_pod_locally(cluster, pod2, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "rollouts       4 (ids 2..5)" in second.stdout  # resumed after the last commit (rollout 1)
    report_exit(cluster, pod2, 0)
    final = wait("Succeeded", lambda: (s := status(cluster, ns, "rj", "evict")).get("phase") == "Succeeded" and s)
    assert final["attempt"] == 1 and not final.get("failed")
    assert sorted(batch_lines(cluster, ns, "evict", out)) == list(range(6))


def test_unwatched_children_deleted_by_hand_come_back(operator: Any, kro_namespace: str, engine: Any, dataset: str,
                                                      tmp_path: Path) -> None:
    """Role, RoleBinding and ServiceAccount are not watched; the periodic resync (20 s here) restores them."""
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    apply(cluster, ns, rolloutjob("drift", engine.url, dataset, tmp_path / "out"))
    job_pod(cluster, ns, "drift-1")  # reconciled: RBAC and Job exist
    children = ["role/drift-runtime", "rolebinding/drift-runtime", "serviceaccount/drift-runtime"]
    cluster.kubectl("delete", *children, "-n", ns)
    wait("the deleted RBAC to be restored",
         lambda: all(cluster.kubectl("get", c, "-n", ns, check=False).returncode == 0 for c in children), timeout=60)
    role = get_json(cluster, "role", "drift-runtime", "-n", ns)
    assert role["rules"][1]["resourceNames"] == ["drift-state"]
