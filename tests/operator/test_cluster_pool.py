"""SGLangPool on the test control plane: `kubectl apply -f examples/k8s/`, children, readiness, scaling."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.harness import Cluster
from tests.operator.kube_helpers import REPO, condition, get_json, status, try_get, wait

pytestmark = pytest.mark.cluster

POOL, JOB = "qwen3-8b", "qwen3-8b-math"


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    return deploy["spec"]["template"]["spec"]["containers"][0]


def test_examples_create_a_ready_pool_and_a_job(operator: Any, kro_namespace: str, gpu_nodes: list[str]) -> None:
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    cluster.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "k8s"))

    # The children appear as specified.
    server = wait("server Deployment", lambda: try_get(cluster, "deployment", f"{POOL}-server", "-n", ns))
    c = container(server)
    assert c["command"] == ["python3", "-m", "sglang.launch_server"]
    assert c["args"][c["args"].index("--tp-size") + 1] == "1"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health_generate"
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert server["spec"]["template"]["spec"]["readinessGates"] == [{"conditionType": "kuberollout.io/weights-synced"}]
    shm = next(v for v in server["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    svc = get_json(cluster, "service", f"{POOL}-server", "-n", ns)
    assert svc["spec"]["clusterIP"] == "None"
    router = wait("router Deployment", lambda: try_get(cluster, "deployment", f"{POOL}-router", "-n", ns))
    args = container(router)["args"]
    assert "--service-discovery" in args and args[args.index("--service-discovery-namespace") + 1] == ns
    assert router["spec"]["template"]["spec"]["serviceAccountName"] == f"{POOL}-router"
    role = wait("router Role", lambda: try_get(cluster, "role", f"{POOL}-router", "-n", ns))
    assert role["rules"][0]["verbs"] == ["get", "list", "watch"]
    assert get_json(cluster, "rolebinding", f"{POOL}-router", "-n", ns)["subjects"][0]["name"] == f"{POOL}-router"
    get_json(cluster, "serviceaccount", f"{POOL}-router", "-n", ns)
    get_json(cluster, "service", f"{POOL}-router", "-n", ns)
    can = cluster.kubectl("auth", "can-i", "watch", "pods", "-n", ns,
                          f"--as=system:serviceaccount:{ns}:{POOL}-router", check=False).stdout.strip()
    assert can == "yes"

    # Nothing can schedule yet (the fake GPU nodes are tainted), and the job waits for the pool.
    job_status = wait("the job to wait for its pool",
                      lambda: (s := status(cluster, ns, "rj", JOB)).get("phase") == "WaitingForPool" and s)
    assert condition(job_status, "PoolReady")["reason"] in ("PoolNotReady", "PoolNotFound")
    unschedulable = wait("a scheduling problem in the pool status", lambda: "Unschedulable" in (
        condition(status(cluster, ns, "sgp", POOL), "ServersReady").get("message") or ""))
    assert unschedulable

    # Let the pods onto the kwok GPU nodes (a test-only toleration): kwok marks them Ready.
    fake = cluster.gpu_toleration
    patch = [{"op": "add", "path": "/spec/scheduling/tolerations/-", "value": fake},
             {"op": "add", "path": "/spec/router/scheduling", "value": {"tolerations": [fake]}}]
    cluster.kubectl("patch", "sgp", POOL, "-n", ns, "--type=json", "-p", json.dumps(patch))
    pool_status = wait("the pool to be Ready", lambda: (s := status(cluster, ns, "sgp", POOL)).get("phase") == "Ready"
                       and condition(s, "ServersReady").get("status") == "True" and s, timeout=90)
    assert pool_status["endpoint"] == f"http://{POOL}-router.{ns}.svc:30000"
    assert pool_status["readyReplicas"] == 2 and pool_status["observedGeneration"] == 2
    pods = get_json(cluster, "pods", "-n", ns, "-l", f"kuberollout.io/pool={POOL},kuberollout.io/role=server")
    assert {p["spec"]["nodeName"] for p in pods["items"]} <= set(gpu_nodes)
    wide = cluster.kubectl("get", "sgp", POOL, "-n", ns, "-o", "wide").stdout
    assert "True" in wide and "Qwen/Qwen3-8B" in wide and pool_status["endpoint"] in wide

    # The job starts against the pool's endpoint.
    job_status = wait("the job's first attempt", lambda: (s := status(cluster, ns, "rj", JOB)).get("attempt") and s)
    assert job_status["endpoint"] == pool_status["endpoint"] and job_status["phase"] == "Pending"
    batch = get_json(cluster, "job", f"{JOB}-1", "-n", ns)
    cmd = batch["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--sglang-router-url") + 1] == pool_status["endpoint"]
    assert batch["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "rollout-data"


def test_scale_and_spec_changes_roll_out(operator: Any, kro_namespace: str, gpu_nodes: list[str]) -> None:
    cluster: Cluster = operator.cluster
    ns = kro_namespace
    fake = cluster.gpu_toleration
    pool = {"apiVersion": "kuberollout.io/v1alpha1", "kind": "SGLangPool", "metadata": {"name": "sim"},
            "spec": {"engine": "simulated", "gpusPerReplica": 1, "replicas": 1,
                     "scheduling": {"tolerations": [fake]},
                     "router": {"scheduling": {"tolerations": [fake]}}}}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pool))
    wait("the pool to be Ready", lambda: status(cluster, ns, "sgp", "sim").get("phase") == "Ready", timeout=60)
    server = get_json(cluster, "deployment", "sim-server", "-n", ns)
    assert container(server)["command"] == ["rollout-runtime"]

    cluster.kubectl("scale", "sgp", "sim", "-n", ns, "--replicas=3")
    wait("3 ready servers", lambda: status(cluster, ns, "sgp", "sim").get("readyReplicas") == 3, timeout=60)
    assert get_json(cluster, "deployment", "sim-server", "-n", ns)["spec"]["replicas"] == 3
    scale = get_json(cluster, "sgp", "sim", "-n", ns, "--subresource=scale")
    assert scale["status"]["replicas"] == 3 and "kuberollout.io/pool=sim" in scale["status"]["selector"]

    # More GPUs than the fake nodes have: the pool says why, and stays Ready with what it has.
    cluster.kubectl("scale", "sgp", "sim", "-n", ns, "--replicas=20")
    def gpu_shortage() -> str | None:
        message = condition(status(cluster, ns, "sgp", "sim"), "ServersReady").get("message") or ""
        return message if "Insufficient nvidia.com/gpu" in message else None

    message = wait("Insufficient GPUs in the status", gpu_shortage, timeout=60)
    assert "/20 servers ready" in message
    cluster.kubectl("scale", "sgp", "sim", "-n", ns, "--replicas=1")

    # A spec change rolls the Deployment; disabling the router removes its objects.
    cluster.kubectl("patch", "sgp", "sim", "-n", ns, "--type=merge",
                    "-p", json.dumps({"spec": {"extraArgs": ["--token-latency", "0.01"], "router": {"enabled": False}}}))
    wait("the new server args", lambda: container(get_json(cluster, "deployment", "sim-server", "-n", ns))["args"][-2:]
         == ["--token-latency", "0.01"])
    wait("the router to be removed", lambda: try_get(cluster, "deployment", "sim-router", "-n", ns) is None
         and try_get(cluster, "role", "sim-router", "-n", ns) is None)
    st = wait("the headless endpoint", lambda: (s := status(cluster, ns, "sgp", "sim"))
              .get("endpoint") == f"http://sim-server.{ns}.svc:30000" and s)
    assert condition(st, "RouterReady")["reason"] == "RouterDisabled"
