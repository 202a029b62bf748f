"""SGLangPools that run for real in the test cluster: simulated servers and the real sglang-router
as process pods (tests/cluster/kubelet), created by the operator from the SGLangPool.

    def test_x(real_pool):
        pool = real_pool("sim", replicas=3)          # applies the SGLangPool, waits until Ready
        pool.workers()                               # the router's GET /workers, as the router sees it
        pool.scale(1); pool.wait_workers(1)
        pool.delete_server(pool.server_pods()[0])    # graceful delete, as a drain would
        pool.kill_server(pod)                        # SIGKILL the process: a crash (restartCount + 1)

Everything goes through the apiserver: the operator builds the Deployments, the scheduler places
the pods on the process node, the process kubelet runs `rollout-runtime sim-engine` and
`python3 -m sglang_router.launch_router` with the pods' own arguments, probes them, and the router
discovers the servers through the Kubernetes API with its ServiceAccount. ``pool.endpoint`` is the
Service URL a RolloutJob with ``poolRef`` uses; process pods resolve it through cluster DNS.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from tests.cluster.harness import Cluster
from tests.cluster.process_node import ProcessKubelet
from tests.operator.kube_helpers import TINY, apply, get_json, rolloutjob, status, wait

SERVER_ROLE = "kuberollout.io/role=server"


def simulated_pool(name: str, kubelet: ProcessKubelet, *, replicas: int = 3, engine_args: Sequence[str] = (),
                   router: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """An SGLangPool of simulated servers (tiny model's tokenizer) placed on the process node."""
    args = ["--tokenizer", TINY, *engine_args]
    body: dict[str, Any] = {
        "apiVersion": "kuberollout.io/v1alpha1", "kind": "SGLangPool", "metadata": {"name": name},
        "spec": {"engine": "simulated", "replicas": replicas, "gpusPerReplica": 1, "extraArgs": args,
                 "scheduling": kubelet.scheduling,
                 "router": {"scheduling": kubelet.scheduling, **(router or {})}},
    }
    body["spec"].update(spec)
    return body


def apply_pool_job(pool: RealPool, name: str, dataset: str, out: Any, *, batch: int, samples: int,
                   rollouts: int, **rollout: Any) -> None:
    """A RolloutJob with poolRef on `pool`, whose runtime runs on the process node (`rollout`: more
    spec.rollout keys, e.g. maxStaleness)."""
    body = rolloutjob(name, "", dataset, out, runtime={"scheduling": pool.kubelet.scheduling},
                      rollout={"batchSize": batch, "samplesPerPrompt": samples, "numRollouts": rollouts,
                               "maxResponseLength": 32, **rollout})
    body["spec"].pop("endpoint")
    body["spec"]["poolRef"] = {"name": pool.name}
    apply(pool.cluster, pool.namespace, body)


class RealPool:
    """One SGLangPool running on the process node, and what a test needs to watch and disturb it."""

    def __init__(self, cluster: Cluster, kubelet: ProcessKubelet, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.kubelet = kubelet
        self.namespace = namespace
        self.name = name

    # -- state --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return status(self.cluster, self.namespace, "sgp", self.name)

    @property
    def endpoint(self) -> str:
        return str(self.status()["endpoint"])

    def pods(self, role: str) -> list[dict[str, Any]]:
        items = get_json(self.cluster, "pods", "-n", self.namespace, "-l",
                         f"kuberollout.io/pool={self.name},kuberollout.io/role={role}")["items"]
        return sorted(items, key=lambda p: p["metadata"]["name"])

    def server_pods(self, ready_only: bool = False) -> list[dict[str, Any]]:
        pods = [p for p in self.pods("server") if not p["metadata"].get("deletionTimestamp")]
        return [p for p in pods if is_ready(p)] if ready_only else pods

    def router_pod(self) -> dict[str, Any]:
        """The router pod that runs (Ready or not: it is NotReady while it has no healthy worker)."""
        pods = [p for p in self.pods("router") if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") == "Running" and p["status"].get("podIP")]
        if not pods:
            raise AssertionError(f"no running router pod for pool {self.name}")
        return sorted(pods, key=is_ready)[-1]

    @property
    def router_url(self) -> str:
        """The router pod's own address (reachable from the test process: pod IPs are loopback)."""
        pod = self.router_pod()
        return f"http://{pod['status']['podIP']}:{pod['spec']['containers'][0]['ports'][0]['containerPort']}"

    @staticmethod
    def server_url(pod: dict[str, Any]) -> str:
        return f"http://{pod['status']['podIP']}:{pod['spec']['containers'][0]['ports'][0]['containerPort']}"

    def workers(self) -> list[dict[str, Any]]:
        """GET /workers on the router: every worker it has registered, with is_healthy."""
        with urllib.request.urlopen(self.router_url + "/workers", timeout=10) as resp:
            return list(json.loads(resp.read())["workers"])

    def worker_urls(self, healthy_only: bool = True) -> set[str]:
        return {w["url"] for w in self.workers() if w.get("is_healthy") or not healthy_only}

    # -- waiting ------------------------------------------------------------------------------

    def wait_ready(self, replicas: int | None = None, timeout: float = 240) -> dict[str, Any]:
        """Pool Ready with ``replicas`` (default: spec.replicas) ready servers, and the router
        serving exactly those servers' URLs."""
        want = replicas if replicas is not None else int(get_json(
            self.cluster, "sgp", self.name, "-n", self.namespace)["spec"]["replicas"])

        def ready() -> dict[str, Any] | None:
            st = self.status()
            ok = st.get("phase") == "Ready" and st.get("readyReplicas") == want
            return st if ok and len(self.server_pods(ready_only=True)) == want else None

        st = self.wait(f"pool {self.name} Ready with {want} servers", ready, timeout)
        self.wait_workers(want, timeout=timeout)
        return st

    def wait_workers(self, count: int, timeout: float = 120) -> set[str]:
        """Until the router's healthy workers are exactly the ready server pods (``count`` of them)."""
        def matched() -> set[str] | None:
            expected = {self.server_url(p) for p in self.server_pods(ready_only=True)}
            urls = self.worker_urls()
            return urls if len(expected) == count and urls == expected else None

        return self.wait(f"the router of {self.name} to serve exactly {count} ready servers", matched, timeout)

    def wait(self, what: str, fn: Callable[[], Any], timeout: float) -> Any:
        """kube_helpers.wait with the pool's state (pods, workers, kubelet log) in the failure message."""
        try:
            return wait(what, fn, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def describe(self) -> str:
        lines = [f"pool status: {json.dumps(self.status())}"]
        for pod in self.pods("server") + self.pods("router"):
            st = pod.get("status") or {}
            conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
            lines.append(f"  pod {pod['metadata']['name']} {st.get('phase')} ip={st.get('podIP')} "
                         f"ready={conds.get('Ready')} deleting={bool(pod['metadata'].get('deletionTimestamp'))} "
                         f"restarts={[c.get('restartCount') for c in st.get('containerStatuses') or []]}")
        try:
            lines.append(f"router workers: {json.dumps(self.workers())}")
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            lines.append(f"router workers: unavailable ({exc!r})")
        lines.append(f"process kubelet log:\n{self.kubelet.log_tail(30)}")
        return "\n".join(lines)

    # -- disturbing it ------------------------------------------------------------------------

    def scale(self, replicas: int) -> None:
        self.cluster.kubectl("scale", "sgp", self.name, "-n", self.namespace, f"--replicas={replicas}")

    def delete_server(self, pod: dict[str, Any], wait_gone: bool = False) -> None:
        """Delete a server pod gracefully (SIGTERM, then its grace period), as a drain would."""
        self.cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", self.namespace,
                             f"--wait={str(wait_gone).lower()}")

    def kill_server(self, pod: dict[str, Any], sig: int = signal.SIGKILL) -> int:
        """Signal the server's process directly (a crash); the kubelet restarts it. Returns the pid."""
        pid = self.kubelet.pid(self.namespace, pod["metadata"]["name"])
        os.kill(pid, sig)
        return pid


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def start_real_pool(cluster: Cluster, kubelet: ProcessKubelet, namespace: str, name: str = "sim", *,
                    replicas: int = 3, wait_ready: bool = True, **kwargs: Any) -> RealPool:
    """Apply a simulated pool on the process node; by default wait until it and its router are up."""
    apply(cluster, namespace, simulated_pool(name, kubelet, replicas=replicas, **kwargs))
    pool = RealPool(cluster, kubelet, namespace, name)
    if wait_ready:
        pool.wait_ready(replicas)
    return pool
