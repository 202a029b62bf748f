"""The pool path for real: SGLangPool -> simulated servers + the real sglang-router -> RolloutJob.

Everything goes through the test apiserver. The operator creates the pool's Deployments and the
router's ServiceAccount/Role; the process kubelet runs the pods as local processes with pod IPs,
their own probes and ServiceAccount tokens; sglang-router 0.3.2 discovers the servers through the
Kubernetes API (`--service-discovery`); the RolloutJob's runtime pod reaches the router through
its Service name (`http://<pool>-router.<ns>.svc:30000`, cluster DNS + Service proxy).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster
from tests.cluster.process_node import ProcessKubelet
from tests.operator.kube_helpers import apply, batch_lines, get_json, status
from tests.operator.real_pool import RealPool, apply_pool_job, is_ready

pytestmark = pytest.mark.cluster

NUM_ROLLOUTS, BATCH, SAMPLES = 16, 4, 2
# ~1 s per request (32 tokens at 30 ms): a run of 16 rollouts takes long enough to disturb it.
ENGINE_ARGS = ["--token-latency", "0.03", "--length-median", "24"]


def start_job(pool: RealPool, name: str, dataset: str, out: Path) -> dict[str, Any]:
    """A RolloutJob with poolRef whose runtime runs on the process node; returns once it has
    committed two rollouts and has more to go."""
    apply_pool_job(pool, name, dataset, out, batch=BATCH, samples=SAMPLES, rollouts=NUM_ROLLOUTS)
    return wait_for_commit(pool, name, 1)


def job_status(pool: RealPool, name: str) -> dict[str, Any]:
    return status(pool.cluster, pool.namespace, "rj", name)


def wait_for_commit(pool: RealPool, name: str, rollout_id: int) -> dict[str, Any]:
    """Until rollout ``rollout_id`` is committed, while the job still has rollouts to go."""
    st = pool.wait(f"job {name} to commit rollout {rollout_id}",
                   lambda: (s := job_status(pool, name)).get("rolloutId", -1) >= rollout_id and s, timeout=240)
    assert st["phase"] == "Running" and st["rolloutId"] < NUM_ROLLOUTS - 1, f"the run ended too early: {st}"
    return st


def assert_every_batch_committed(pool: RealPool, name: str, out: Path) -> dict[str, Any]:
    """The job Succeeded; every rollout id has its batch file with all its samples; counts agree."""
    final = pool.wait(f"job {name} to finish", lambda: (s := job_status(pool, name)).get("phase")
                      in ("Succeeded", "Failed") and s, timeout=300)
    assert final["phase"] == "Succeeded", (final, pool.kubelet.pod_log_tails())
    lines = batch_lines(pool.cluster, pool.namespace, name, out)
    assert sorted(lines) == list(range(NUM_ROLLOUTS))
    assert set(lines.values()) == {BATCH * SAMPLES}, lines
    assert final["completed"] == sum(lines.values()) == NUM_ROLLOUTS * BATCH * SAMPLES
    assert final["rolloutId"] == NUM_ROLLOUTS - 1
    cm = get_json(pool.cluster, "configmap", f"{name}-state", "-n", pool.namespace)["data"]
    assert int(cm["completed"]) == final["completed"] and int(cm["rolloutId"]) == final["rolloutId"]
    # The runtime itself ran as a pod on the process node and exited 0 (the job's phase comes
    # from the committed state, so the process may still be exiting when it reads Succeeded).
    pod = pool.wait("the runtime pod to finish", lambda: next(
        (p for p in get_json(pool.cluster, "pods", "-n", pool.namespace, "-l", f"job-name={name}-1")["items"]
         if p["status"].get("phase") in ("Succeeded", "Failed")), None), timeout=60)
    assert pod["spec"]["nodeName"] == pool.kubelet.node
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    return final


def test_router_discovers_the_pool_and_a_job_survives_scale_down(
        operator: Any, kro_namespace: str, process_kubelet: ProcessKubelet, real_pool: Any, dataset: str,
        tmp_path: Path) -> None:
    cluster: Cluster = operator.cluster
    ns, out = kro_namespace, tmp_path / "out"
    pool: RealPool = real_pool("sim", replicas=3, engine_args=ENGINE_ARGS)

    # The router found exactly the three server pods, through the Kubernetes API.
    servers = pool.server_pods()
    assert len(servers) == 3 and all(is_ready(p) for p in servers)
    assert pool.worker_urls() == {pool.server_url(p) for p in servers}
    assert {p["spec"]["nodeName"] for p in [*servers, pool.router_pod()]} == {process_kubelet.node}
    # ... as its own ServiceAccount (the credentials the kubelet gave the router pod).
    router_kubeconfig = process_kubelet.pod_dir(ns, pool.router_pod()["metadata"]["name"]) / "kubeconfig"
    who = cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=router_kubeconfig).stdout
    assert json.loads(who)["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:sim-router"
    assert pool.endpoint == f"http://sim-router.{ns}.svc:30000"
    assert len(process_kubelet.resolve(f"sim-router.{ns}.svc")) == 1

    start_job(pool, "run", dataset, out)
    pool.scale(1)
    pool.wait_workers(1)
    st = job_status(pool, "run")
    assert st["phase"] == "Running" and st["rolloutId"] < NUM_ROLLOUTS - 1, f"scaled down after the run: {st}"
    final = assert_every_batch_committed(pool, "run", out)
    assert final["endpoint"] == pool.endpoint
    assert len(pool.server_pods()) == 1


def test_deleting_a_server_mid_rollout_loses_no_committed_batch(real_pool: Any, dataset: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pool: RealPool = real_pool("sim", replicas=3, engine_args=ENGINE_ARGS)
    start_job(pool, "crash", dataset, out)
    victim = pool.server_pods()[0]
    victim_url = pool.server_url(victim)
    pool.delete_server(victim)
    pool.wait(f"the router to drop the deleted server {victim_url}",
              lambda: victim_url not in pool.worker_urls(healthy_only=False), timeout=60)
    # The Deployment replaces it; the router adds the new pod once it is Ready.
    urls = pool.wait_workers(3, timeout=240)
    assert victim_url not in urls
    assert victim["metadata"]["name"] not in {p["metadata"]["name"] for p in pool.server_pods()}
    assert_every_batch_committed(pool, "crash", out)


def test_router_discovery_follows_pod_readiness_as_sglang_router_0_3_2_does(
        operator: Any, kro_namespace: str, process_kubelet: ProcessKubelet, real_pool: Any, tmp_path: Path) -> None:
    """What the real router does with pod readiness, observed (sglang-router 0.3.2):

    - a pod that is not Ready is not registered; once Ready, it is;
    - a registered pod that becomes NotReady stays registered (discovery only adds Ready pods
      and removes pods that get a deletionTimestamp; it never removes on NotReady);
    - what takes a worker out of traffic is the router's own health check of `/health`
      (`--health-check-*` flags), and it puts the worker back when `/health` passes again;
    - a pod deleted while NotReady is never removed (discovery matches the pod's whole state,
      Ready included, against what it registered), so it lingers as an unhealthy worker.
    The servers here are the pool's own (labels, port, the router's selector); only their
    readiness probe is a file the test controls, so that readiness changes on demand.
    """
    cluster: Cluster = operator.cluster
    ns, kubelet = kro_namespace, process_kubelet
    # SGLang's /health is a one-token generation polled once a second (http_server.health_generate),
    # so it answers after >= 1 s: a router timeout of 1 s would fail every check of a real server.
    fast_health = ["--health-check-interval-secs", "1", "--health-check-timeout-secs", "4",
                   "--health-failure-threshold", "2", "--health-success-threshold", "1"]
    pool: RealPool = real_pool("probe", replicas=0, wait_ready=False, router={"extraArgs": fast_health})
    pool.wait("the router to run", lambda: pool.router_pod(), timeout=120)
    labels = {"kuberollout.io/pool": "probe", "kuberollout.io/role": "server", "test": "readiness"}
    servers = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "probe-servers"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            **kubelet.pod_placement,
            "containers": [{
                "name": "server", "image": "ghcr.io/kuberollout/runtime:test", "command": ["rollout-runtime"],
                "args": ["sim-engine", "--host", "0.0.0.0", "--port", "30000"],
                "ports": [{"name": "http", "containerPort": 30000}],
                "readinessProbe": {"exec": {"command": ["sh", "-c", f'test -e {tmp_path}/"$HOSTNAME"']},
                                   "periodSeconds": 1, "failureThreshold": 1},
            }]}}}}
    apply(cluster, ns, servers)

    def pods() -> list[dict[str, Any]]:
        items = get_json(cluster, "pods", "-n", ns, "-l", "test=readiness")["items"]
        return sorted((p for p in items if not p["metadata"].get("deletionTimestamp")),
                      key=lambda p: p["metadata"]["name"])

    def running() -> list[dict[str, Any]] | None:
        ps = pods()
        ok = len(ps) == 3 and all((p.get("status") or {}).get("phase") == "Running" for p in ps)
        return ps if ok else None

    a, b, c = pool.wait("three running server processes", running, 120)
    url = {n: pool.server_url(p) for n, p in zip("abc", (a, b, c))}
    workers = lambda: {w["url"]: w["is_healthy"] for w in pool.workers()}  # noqa: E731

    def make_ready(pod: dict[str, Any]) -> None:
        (tmp_path / pod["metadata"]["name"]).touch()

    # Not Ready: not registered. Ready: registered.
    make_ready(a)
    pool.wait("a registered", lambda: url["a"] in workers(), timeout=60)
    assert set(workers()) == {url["a"]}  # b and c run, but are not Ready
    make_ready(b)
    pool.wait("b registered", lambda: url["b"] in workers(), timeout=60)

    # a becomes NotReady. Registering c afterwards proves the router has seen a's change (the
    # watch delivers events in order): a is still there, healthy, and gets traffic.
    (tmp_path / a["metadata"]["name"]).unlink()
    pool.wait("a NotReady", lambda: not is_ready(get_json(cluster, "pod", a["metadata"]["name"], "-n", ns)), 30)
    make_ready(c)
    pool.wait("c registered", lambda: url["c"] in workers(), timeout=60)
    assert workers() == {url["a"]: True, url["b"]: True, url["c"]: True}

    # The router's own health check is what takes a worker out, and back in.
    pid = kubelet.pid(ns, b["metadata"]["name"])
    os.kill(pid, signal.SIGSTOP)
    try:
        pool.wait("b marked unhealthy", lambda: workers().get(url["b"]) is False, timeout=60)
        assert workers()[url["c"]] is True
    finally:
        os.kill(pid, signal.SIGCONT)
    pool.wait("b healthy again", lambda: workers().get(url["b"]) is True, timeout=60)

    # Deleting a Ready pod removes its worker; deleting the NotReady one does not.
    cluster.kubectl("delete", "pod", a["metadata"]["name"], c["metadata"]["name"], "-n", ns, "--timeout=60s")
    pool.wait("c removed", lambda: url["c"] not in workers(), timeout=60)
    pool.wait("a's process gone: unhealthy", lambda: workers().get(url["a"]) is False, timeout=60)
    assert url["a"] in workers()
