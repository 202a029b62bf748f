"""The process kubelet on the test control plane: pods on its node are real local processes.

Each test drives plain Kubernetes objects through the apiserver and checks what a kubelet is
responsible for: the pod's IP, environment and ServiceAccount identity; cluster DNS and Service
routing; probes with their thresholds, restarts and restartPolicy; exit codes and termination
messages; graceful deletion; readiness gates; and pods it cannot run, which kwok keeps faking.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import ssl
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster
from tests.cluster.process_node import ProcessKubelet
from tests.operator.kube_helpers import apply, events, get_json, try_get, wait

pytestmark = pytest.mark.cluster

WEB = """
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["HOSTNAME"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], 8080), H).serve_forever()
"""


def proc_pod(kubelet: ProcessKubelet, name: str, script: str, *, args: list[str] | None = None,
             env: dict[str, str] | None = None, labels: dict[str, str] | None = None,
             container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A pod on the process node running a Python script (the image is swapped for this venv)."""
    c: dict[str, Any] = {"name": "main", "image": "python:3.11-slim",
                         "command": ["python3", "-c", textwrap.dedent(script)], "args": args or [],
                         "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    c.update(container or {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {**kubelet.pod_placement, "containers": [c], **spec}}


def pod_json(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return get_json(cluster, "pod", name, "-n", ns)


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def cstatus(pod: dict[str, Any]) -> dict[str, Any]:
    return ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]


def wait_pod(cluster: Cluster, kubelet: ProcessKubelet, ns: str, name: str, what: str,
             check: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
    """Poll the pod until ``check`` holds; on timeout show its status and the kubelet's log."""
    try:
        return wait(f"pod {name}: {what}", lambda: (lambda p: p if check(p) else None)(pod_json(cluster, ns, name)),
                    timeout)
    except AssertionError as exc:
        p = try_get(cluster, "pod", name, "-n", ns)
        raise AssertionError(f"{exc}\nstatus: {json.dumps((p or {}).get('status'), indent=1)}\n"
                             f"kubelet log:\n{kubelet.log_tail(40)}") from None


def ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True"


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: (p.get("status") or {}).get("phase") in phases


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------------------------------


IDENTITY = """
import json, os, sys
from kubernetes import client, config
report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in (
    "POD_NAME", "POD_NAMESPACE", "POD_IP", "NODE_NAME", "GREETING", "COMBINED", "HOSTNAME", "KUBECONFIG")}}
api = client.CoreV1Api(config.new_client_from_config(config_file=os.environ["KUBECONFIG"]))
report["me"] = api.read_namespaced_pod(os.environ["POD_NAME"], os.environ["POD_NAMESPACE"]).metadata.name
try:
    api.list_namespaced_pod(os.environ["POD_NAMESPACE"])
    report["list"] = "allowed"
except client.ApiException as exc:
    report["list"] = exc.status
with open(os.environ["REPORT"], "w") as f:
    json.dump(report, f)
"""


def test_pod_runs_with_its_ip_env_and_serviceaccount(cluster: Cluster, namespace: str,
                                                     process_kubelet: ProcessKubelet, tmp_path: Path) -> None:
    ns, kubelet = namespace, process_kubelet
    report = tmp_path / "report.json"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "resourceNames": ["who"], "verbs": ["get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"greeting": "hello"}}
    pod = proc_pod(kubelet, "who", IDENTITY, args=["--bind", "0.0.0.0"], env={"REPORT": str(report)},
                   restartPolicy="Never", serviceAccountName="reader")
    pod["spec"]["containers"][0]["env"] += [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
        {"name": "COMBINED", "value": "$(GREETING) from $(POD_NAME)"},
    ]
    cluster.kubectl("create", "serviceaccount", "reader", "-n", ns)
    apply(cluster, ns, role, binding, cm, pod)

    done = wait_pod(cluster, kubelet, ns, "who", "Succeeded", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", kubelet.pod_log(ns, "who")
    term = cstatus(done)["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    ip = done["status"]["podIP"]
    assert done["spec"]["nodeName"] == kubelet.node
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(kubelet.pod_cidr)
    assert condition(done, "Ready")["reason"] == "PodCompleted"
    got = json.loads(report.read_text())
    assert got["argv"] == ["--bind", ip]  # 0.0.0.0 becomes the pod IP
    assert got["env"] == {
        "POD_NAME": "who", "POD_NAMESPACE": ns, "POD_IP": ip, "NODE_NAME": kubelet.node, "GREETING": "hello",
        "COMBINED": "hello from who", "HOSTNAME": "who",
        "KUBECONFIG": str(kubelet.pod_dir(ns, "who") / "kubeconfig")}
    # The pod's own ServiceAccount, with RBAC enforced by the apiserver.
    assert got["me"] == "who" and got["list"] == 403

    # Its token is a TokenRequest bound to the pod: it works while the pod exists, not after.
    token = (kubelet.pod_dir(ns, "who") / "serviceaccount" / "token").read_text()
    assert api_status(cluster, token, f"/api/v1/namespaces/{ns}/pods/who") == 200
    cluster.kubectl("delete", "pod", "who", "-n", ns, "--timeout=60s")
    assert wait("the bound token to be rejected",
                lambda: api_status(cluster, token, f"/api/v1/namespaces/{ns}/pods/who") == 401, timeout=30)


def api_status(cluster: Cluster, token: str, path: str) -> int:
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    req = urllib.request.Request(cluster.server + path, headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


CLIENT = """
import json, os, socket, urllib.request
ns = os.environ["POD_NAMESPACE"]
def addrs(name):
    try:
        return sorted({i[4][0] for i in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        return "error: " + str(exc)
names = ["web", f"web.{ns}", f"web.{ns}.svc", f"web.{ns}.svc.cluster.local", f"web-headless.{ns}.svc",
         f"nope.{ns}.svc"]
report = {n: addrs(n) for n in names}
report["bodies"] = [urllib.request.urlopen(f"http://web.{ns}.svc/", timeout=10).read().decode() for _ in range(8)]
with open(os.environ["REPORT"], "w") as f:
    json.dump(report, f)
"""


def test_cluster_dns_and_service_routing(cluster: Cluster, namespace: str, process_kubelet: ProcessKubelet,
                                         tmp_path: Path) -> None:
    ns, kubelet = namespace, process_kubelet
    probe = {"readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
             "ports": [{"name": "http", "containerPort": 8080}]}
    webs = [proc_pod(kubelet, n, WEB, args=["0.0.0.0"], labels={"app": "web"}, container=probe)
            for n in ("web-a", "web-b")]
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-headless"},
                "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 8080}]}}
    apply(cluster, ns, svc, headless, *webs)
    ip = {n: wait_pod(cluster, kubelet, ns, n, "Ready", ready)["status"]["podIP"] for n in ("web-a", "web-b")}
    pod_ips = sorted(ip.values())

    def client(name: str) -> dict[str, Any]:
        report = tmp_path / f"{name}.json"
        pod = proc_pod(kubelet, name, CLIENT, env={"REPORT": str(report)}, restartPolicy="Never")
        pod["spec"]["containers"][0]["env"].append(
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
        apply(cluster, ns, pod)
        done = wait_pod(cluster, kubelet, ns, name, "finished", phase_is("Succeeded", "Failed"))
        assert done["status"]["phase"] == "Succeeded", kubelet.pod_log(ns, name)
        return json.loads(report.read_text())

    wait("both endpoints behind the Service", lambda: kubelet.resolve(f"web-headless.{ns}.svc") == pod_ips)
    got = client("client-1")
    service_ip = kubelet.resolve(f"web.{ns}.svc")
    assert len(service_ip) == 1 and service_ip[0] not in pod_ips
    # Every form of the name a pod may use resolves through its search path to the Service IP.
    for name in ("web", f"web.{ns}", f"web.{ns}.svc", f"web.{ns}.svc.cluster.local"):
        assert got[name] == service_ip, name
    assert got[f"web-headless.{ns}.svc"] == pod_ips  # headless: the ready pods themselves
    assert str(got[f"nope.{ns}.svc"]).startswith("error:")  # NXDOMAIN
    # Port 80 reaches targetPort "http" (8080) on both endpoints, one connection at a time.
    assert set(got["bodies"]) == {"web-a", "web-b"}
    # The test process reaches the Service too (its IP is on loopback).
    with urllib.request.urlopen(f"http://{service_ip[0]}:80/", timeout=10) as resp:
        assert resp.read().decode() in ("web-a", "web-b")

    # Endpoints follow the pods: after web-b is gone, every connection lands on web-a.
    cluster.kubectl("delete", "pod", "web-b", "-n", ns, "--timeout=60s")
    wait("web-b out of the Service", lambda: kubelet.resolve(f"web-headless.{ns}.svc") == [ip["web-a"]])
    assert set(client("client-2")["bodies"]) == {"web-a"}


PROBED = """
import http.server, os, pathlib, sys
flags, pid = pathlib.Path(os.environ["FLAGS"]), os.getpid()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("probe", self.path, flush=True)
        ok = {"/started": (flags / "started").exists(), "/ready": (flags / "ready").exists(),
              "/live": not (flags / f"dead-{pid}").exists()}.get(self.path, False)
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], 8080), H).serve_forever()
"""


def test_probes_gate_readiness_and_liveness_restarts(cluster: Cluster, namespace: str,
                                                     process_kubelet: ProcessKubelet, tmp_path: Path) -> None:
    ns, kubelet = namespace, process_kubelet

    def http(path: str, **extra: Any) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": 1, **extra}

    probes = {"ports": [{"name": "http", "containerPort": 8080}],
              "startupProbe": http("/started", failureThreshold=600),
              "readinessProbe": http("/ready", successThreshold=2, failureThreshold=2),
              "livenessProbe": http("/live", failureThreshold=2)}
    apply(cluster, ns, proc_pod(kubelet, "probed", PROBED, args=["0.0.0.0"], env={"FLAGS": str(tmp_path)},
                                container=probes, terminationGracePeriodSeconds=5))

    # Until the startup probe passes, neither readiness nor liveness runs.
    wait("three startup probes", lambda: kubelet.pod_log(ns, "probed").count("probe /started") >= 3)
    pod = pod_json(cluster, ns, "probed")
    assert pod["status"]["phase"] == "Running" and cstatus(pod)["started"] is False and not ready(pod)
    log = kubelet.pod_log(ns, "probed")
    assert "/ready" not in log and "/live" not in log, log

    (tmp_path / "started").touch()
    (tmp_path / "ready").touch()
    pod = wait_pod(cluster, kubelet, ns, "probed", "Ready", ready)
    assert cstatus(pod)["started"] is True and condition(pod, "ContainersReady")["status"] == "True"

    (tmp_path / "ready").unlink()
    pod = wait_pod(cluster, kubelet, ns, "probed", "NotReady", lambda p: not ready(p))
    assert condition(pod, "Ready")["reason"] == "ContainersNotReady" and cstatus(pod)["restartCount"] == 0
    (tmp_path / "ready").touch()
    wait_pod(cluster, kubelet, ns, "probed", "Ready again", ready)

    # Liveness failing twice kills the process; restartPolicy Always starts a new one.
    pid = kubelet.pid(ns, "probed")
    (tmp_path / f"dead-{pid}").touch()
    pod = wait_pod(cluster, kubelet, ns, "probed", "restarted and Ready",
                   lambda p: cstatus(p).get("restartCount") == 1 and ready(p))
    assert not alive(pid) and kubelet.pid(ns, "probed") != pid
    assert cstatus(pod)["lastState"]["terminated"]["exitCode"] == 128 + signal.SIGTERM
    evs = events(cluster, ns, "probed")
    assert any(e["reason"] == "Unhealthy" and e["message"].startswith("Liveness probe failed") for e in evs)
    assert any(e["reason"] == "Killing" and e["message"] == "Container main failed liveness probe, will be "
               "restarted" for e in evs)
    assert "probe /started" in kubelet.pod_log(ns, "probed")  # the new process has its own log


FAILS = """
import sys
print("loading configuration")
print("configuration error: spec.rollout.batchSize must be positive", file=sys.stderr)
sys.exit(3)
"""
FLAKY = """
import os, pathlib, sys
marker = pathlib.Path(os.environ["FLAGS"]) / "flaky-ran"
if not marker.exists():
    marker.touch()
    sys.exit(1)
"""


def test_exit_codes_termination_messages_and_restart_policies(cluster: Cluster, namespace: str,
                                                              process_kubelet: ProcessKubelet,
                                                              tmp_path: Path) -> None:
    ns, kubelet = namespace, process_kubelet
    fails = proc_pod(kubelet, "fails", FAILS, restartPolicy="Never",
                     container={"terminationMessagePolicy": "FallbackToLogsOnError"})
    flaky = proc_pod(kubelet, "flaky", FLAKY, env={"FLAGS": str(tmp_path)}, restartPolicy="OnFailure")
    job_pod = proc_pod(kubelet, "unused", "print('done')", restartPolicy="Never")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch"},
           "spec": {"backoffLimit": 0, "template": {"spec": job_pod["spec"]}}}
    apply(cluster, ns, fails, flaky, job)

    pod = wait_pod(cluster, kubelet, ns, "fails", "Failed", phase_is("Failed", "Succeeded"))
    term = cstatus(pod)["state"]["terminated"]
    assert pod["status"]["phase"] == "Failed" and (term["exitCode"], term["reason"]) == (3, "Error")
    assert "configuration error: spec.rollout.batchSize must be positive" in term["message"]
    assert cstatus(pod)["restartCount"] == 0
    # `kubectl logs` works through the apiserver, which asks the process kubelet for the log.
    logs = cluster.kubectl("logs", "fails", "-n", ns).stdout
    assert logs.splitlines() == ["loading configuration", "configuration error: spec.rollout.batchSize must be "
                                 "positive"]
    assert cluster.kubectl("logs", "fails", "-n", ns, "--tail=1").stdout.startswith("configuration error")

    pod = wait_pod(cluster, kubelet, ns, "flaky", "Succeeded", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded" and cstatus(pod)["restartCount"] == 1
    assert cstatus(pod)["lastState"]["terminated"]["exitCode"] == 1
    assert cluster.kubectl("logs", "flaky", "-n", ns, "--previous", check=False).returncode == 0

    complete = wait("Job batch Complete", lambda: any(
        c["type"] == "Complete" and c["status"] == "True"
        for c in (get_json(cluster, "job", "batch", "-n", ns).get("status") or {}).get("conditions") or []))
    assert complete


GRACEFUL = """
import os, pathlib, signal, sys, time
flag = pathlib.Path(os.environ["FLAGS"]) / os.environ["HOSTNAME"]
def on_term(signum, frame):
    time.sleep(0.3)
    flag.write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("STUBBORN") else on_term)
print("running", flush=True)
while True:
    time.sleep(1)
"""


def test_deletion_is_graceful_then_forceful(cluster: Cluster, namespace: str, process_kubelet: ProcessKubelet,
                                            tmp_path: Path) -> None:
    ns, kubelet = namespace, process_kubelet
    env = {"FLAGS": str(tmp_path)}
    apply(cluster, ns,
          proc_pod(kubelet, "graceful", GRACEFUL, env=env),
          proc_pod(kubelet, "stubborn", GRACEFUL, env={**env, "STUBBORN": "1"}, terminationGracePeriodSeconds=2),
          proc_pod(kubelet, "forced", GRACEFUL, env={**env, "STUBBORN": "1"}))
    pids = {}
    for name in ("graceful", "stubborn", "forced"):
        wait_pod(cluster, kubelet, ns, name, "Running", lambda p: "running" in cstatus(p).get("state", {}))
        wait(f"{name} to print", lambda n=name: "running" in kubelet.pod_log(ns, n))
        pids[name] = kubelet.pid(ns, name)

    cluster.kubectl("delete", "pod", "graceful", "-n", ns, "--timeout=60s")
    assert (tmp_path / "graceful").read_text() == "SIGTERM" and not alive(pids["graceful"])

    started = time.monotonic()
    cluster.kubectl("delete", "pod", "stubborn", "-n", ns, "--timeout=60s")
    assert time.monotonic() - started >= 2.0  # SIGTERM ignored: SIGKILL only after the grace period
    assert not alive(pids["stubborn"]) and not (tmp_path / "stubborn").exists()

    cluster.kubectl("delete", "pod", "forced", "-n", ns, "--grace-period=0", "--force")
    wait("the force-deleted pod's process to die", lambda: not alive(pids["forced"]), timeout=30)


def test_readiness_gates_hold_ready_until_every_gate_is_true(cluster: Cluster, namespace: str,
                                                             process_kubelet: ProcessKubelet) -> None:
    ns, kubelet = namespace, process_kubelet
    gate = "kuberollout.io/test-gate"
    apply(cluster, ns, proc_pod(kubelet, "gated", "import time; time.sleep(3600)",
                                readinessGates=[{"conditionType": gate}]))
    pod = wait_pod(cluster, kubelet, ns, "gated", "containers ready",
                   lambda p: condition(p, "ContainersReady").get("status") == "True")
    assert not ready(pod) and condition(pod, "Ready")["reason"] == "ReadinessGatesNotReady"

    def set_gate(value: str) -> None:
        patch = {"status": {"conditions": [{"type": gate, "status": value, "reason": "Test"}]}}
        cluster.kubectl("patch", "pod", "gated", "-n", ns, "--subresource=status", "--type=strategic",
                        "-p", json.dumps(patch))

    set_gate("True")
    pod = wait_pod(cluster, kubelet, ns, "gated", "Ready once the gate is True", ready)
    assert condition(pod, gate)["status"] == "True"  # the kubelet's status writes keep the gate
    set_gate("False")
    pod = wait_pod(cluster, kubelet, ns, "gated", "NotReady once the gate is False", lambda p: not ready(p))
    assert condition(pod, "ContainersReady")["status"] == "True"
    assert 'readiness gate "kuberollout.io/test-gate" is not "True"' in condition(pod, "Ready")["message"]


def test_pods_it_cannot_run_are_refused_and_kwok_still_fakes_them(cluster: Cluster, namespace: str,
                                                                  process_kubelet: ProcessKubelet,
                                                                  gpu_nodes: list[str]) -> None:
    ns, kubelet = namespace, process_kubelet
    server = {"name": "server", "image": "lmsysorg/sglang:v0.5.3", "command": ["python3", "-m", "sglang.launch_server"],
              "args": ["--model-path", "Qwen/Qwen3-8B", "--host", "0.0.0.0"]}
    on_process = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "real-sglang"},
                  "spec": {**kubelet.pod_placement, "containers": [server]}}
    on_kwok = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "faked-sglang"},
               "spec": {"tolerations": [cluster.gpu_toleration], "nodeSelector": {"type": "kwok"},
                        "containers": [server]}}
    apply(cluster, ns, on_process, on_kwok)

    pod = wait_pod(cluster, kubelet, ns, "real-sglang", "refused",
                   lambda p: cstatus(p).get("state", {}).get("waiting", {}).get("reason") == "CreateContainerError")
    assert pod["status"]["phase"] == "Pending"
    assert "needs GPUs and the SGLang image" in cstatus(pod)["state"]["waiting"]["message"]
    assert any(e["reason"] == "Failed" and "sglang.launch_server" in e["message"]
               for e in events(cluster, ns, "real-sglang"))

    faked = wait_pod(cluster, kubelet, ns, "faked-sglang", "faked Ready by kwok", ready)
    assert faked["spec"]["nodeName"] in gpu_nodes
    assert ipaddress.ip_address(faked["status"]["podIP"]) in ipaddress.ip_network("10.244.0.0/16")
