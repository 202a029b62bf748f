"""The process kubelet's rules as pure functions: image swap, env, probes, status, endpoints, DNS."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.kubelet import podspec
from tests.cluster.kubelet.netblock import Allocator, NetBlock
from tests.cluster.kubelet.probes import ProbeState, Ticker, parse_probe
from tests.cluster.kubelet.services import endpoints, target_port
from tests.cluster.kubelet.status import ContainerRecord, pod_conditions, pod_phase, pod_status, terminated_state

PY, SCRIPTS = sys.executable, os.path.dirname(sys.executable)


def pod(**spec: Any) -> dict[str, Any]:
    base = {"containers": [{"name": "c", "image": "img", "command": ["rollout-runtime"]}], "nodeName": "process-0",
            "serviceAccountName": "sa"}
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"},
                         "annotations": {"a": "1"}, "resourceVersion": "5"},
            "spec": {**base, **spec}, "status": {}}


# ------------------------------------------------------------------------------ image swap


def test_runtime_router_and_python_commands_map_to_this_environment() -> None:
    runtime = podspec.local_command({"name": "s", "command": ["rollout-runtime"],
                                     "args": ["sim-engine", "--host", "0.0.0.0", "--port", "30000"]},
                                    {}, "127.9.0.7", PY, SCRIPTS)
    assert runtime.argv == [os.path.join(SCRIPTS, "rollout-runtime"), "sim-engine", "--host", "127.9.0.7",
                            "--port", "30000"]
    router = podspec.local_command({"name": "r", "command": ["python3", "-m", "sglang_router.launch_router"],
                                    "args": ["--host", "0.0.0.0", "--prometheus-host=0.0.0.0"]},
                                   {}, "127.9.0.8", PY, SCRIPTS)
    assert router.argv == [PY, "-m", "sglang_router.launch_router", "--host", "127.9.0.8",
                           "--prometheus-host=127.9.0.8"]


def test_real_sglang_and_unknown_images_are_refused_with_the_reason() -> None:
    with pytest.raises(podspec.Unsupported, match="needs GPUs and the SGLang image"):
        podspec.local_command({"name": "s", "image": "lmsysorg/sglang", "command": ["python3", "-m",
                                                                                    "sglang.launch_server"]},
                              {}, "127.9.0.1", PY, SCRIPTS)
    with pytest.raises(podspec.Unsupported, match="no local equivalent"):
        podspec.local_command({"name": "s", "image": "nginx", "command": ["nginx"]}, {}, "127.9.0.1", PY, SCRIPTS)
    with pytest.raises(podspec.Unsupported, match="entrypoint is not known"):
        podspec.local_command({"name": "s", "image": "nginx"}, {}, "127.9.0.1", PY, SCRIPTS)


def test_var_expansion_follows_kubernetes() -> None:
    env = {"A": "x", "B": "y"}
    assert podspec.expand_vars("$(A)-$(B)-$(C)-$$(A)-$", env) == "x-y-$(C)-$(A)-$"


def test_volumes_that_would_alias_host_paths_are_refused() -> None:
    ok = pod(volumes=[{"name": "shm", "emptyDir": {"medium": "Memory"}}],
             containers=[{"name": "c", "command": ["x"], "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}]}])
    podspec.check_supported(ok)
    bad = pod(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
              containers=[{"name": "c", "command": ["x"], "volumeMounts": [{"name": "data", "mountPath": "/data"}]}])
    with pytest.raises(podspec.Unsupported, match="persistentVolumeClaim volume at /data"):
        podspec.check_supported(bad)
    with pytest.raises(podspec.Unsupported, match="initContainers"):
        podspec.check_supported(pod(initContainers=[{"name": "i"}]))


def test_env_downward_api_configmaps_secrets_and_expansion() -> None:
    p = pod()
    p["status"] = {"podIP": "127.9.0.3", "podIPs": [{"ip": "127.9.0.3"}]}
    container = {
        "name": "c", "resources": {"limits": {"memory": "1Gi"}},
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "gone", "optional": True}}],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "GREETING", "value": "$(CM_hello) $(NAME)"},
        ],
    }
    secret = {"data": {"pw": base64.b64encode(b"hunter2").decode()}}
    env = podspec.container_env(p, container, configmaps={"cm": {"data": {"hello": "hi"}}}, secrets={"s": secret},
                                node_ip="127.9.255.254", node_capacity={"cpu": "32"})
    assert env == {"CM_hello": "hi", "NAME": "p", "NS": "ns", "IP": "127.9.0.3", "HOST": "127.9.255.254",
                   "APP": "x", "MEM": "1024", "CPU": "32", "PW": "hunter2", "GREETING": "hi p"}
    with pytest.raises(podspec.ConfigMissing, match="configMap 'cm' key 'nope' not found"):
        podspec.container_env(p, {"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {
            "name": "cm", "key": "nope"}}}]}, configmaps={"cm": {"data": {}}}, secrets={}, node_ip="", node_capacity={})
    assert podspec.referenced_objects({"spec": {"containers": [container]}}) == ({"cm"}, {"gone", "s"})


# ---------------------------------------------------------------------------------- probes


def test_probe_defaults_and_named_ports() -> None:
    container = {"name": "c", "ports": [{"name": "http", "containerPort": 30000}]}
    spec = parse_probe("readiness", {"httpGet": {"path": "/health", "port": "http"}}, container, "127.9.0.2")
    assert (spec.url, spec.period, spec.timeout, spec.success_threshold, spec.failure_threshold) == (
        "http://127.9.0.2:30000/health", 10.0, 1.0, 1, 3)
    tcp = parse_probe("liveness", {"tcpSocket": {"port": 8080}, "periodSeconds": 2, "timeoutSeconds": 5},
                      container, "127.9.0.2")
    assert (tcp.action, tcp.host, tcp.port, tcp.period, tcp.timeout) == ("tcp", "127.9.0.2", 8080, 2.0, 5.0)
    with pytest.raises(podspec.Unsupported, match="no port named 'metrics'"):
        parse_probe("readiness", {"httpGet": {"port": "metrics"}}, container, "127.9.0.2")


def test_probe_thresholds_and_initial_results() -> None:
    spec = parse_probe("readiness", {"exec": {"command": ["true"]}, "successThreshold": 2, "failureThreshold": 3},
                       {"name": "c"}, "")
    st = ProbeState(spec)
    assert st.result is False  # readiness starts as failure
    assert [st.record(ok) for ok in (True, True)] == [False, True] and st.result is True
    assert [st.record(ok) for ok in (False, False, True, False, False, False)] == [False, False, False, False,
                                                                                      False, True]
    assert st.result is False
    live = ProbeState(parse_probe("liveness", {"exec": {"command": ["true"]}}, {"name": "c"}, ""))
    start = ProbeState(parse_probe("startup", {"exec": {"command": ["true"]}}, {"name": "c"}, ""))
    assert live.result is True and start.result is None


async def test_ticker_keeps_a_fixed_grid_and_buffers_one_tick() -> None:
    ticker = Ticker(0.2)
    t0 = time.monotonic()
    await ticker.wait()
    assert 0.15 <= time.monotonic() - t0 < 0.35
    await asyncio.sleep(0.5)  # a probe slower than the period: the buffered tick fires at once
    t1 = time.monotonic()
    await ticker.wait()
    assert time.monotonic() - t1 < 0.05
    await ticker.wait()  # then back on the grid
    assert time.monotonic() - t1 <= 0.25
    ticker.trigger.set()  # the manual trigger fires at once
    t2 = time.monotonic()
    await ticker.wait()
    assert time.monotonic() - t2 < 0.05


# ---------------------------------------------------------------------------------- status


def running(name: str = "c", ready: bool = True) -> ContainerRecord:
    rec = ContainerRecord(name, "img", state={"running": {"startedAt": "t"}}, ever_ran=True, started=True)
    rec.ready = ready
    return rec


def test_phase_follows_the_kubelet() -> None:
    waiting = ContainerRecord("c", "img")
    assert pod_phase("Always", [waiting]) == "Pending"
    assert pod_phase("Always", [running()]) == "Running"
    failed = ContainerRecord("c", "img", state=terminated_state(3, "t"), ever_ran=True, done=True)
    ok = ContainerRecord("d", "img", state=terminated_state(0, "t"), ever_ran=True, done=True)
    assert pod_phase("Never", [failed, ok]) == "Failed"
    assert pod_phase("Never", [ok]) == "Succeeded"
    restarting = ContainerRecord("c", "img", state={"waiting": {"reason": "CrashLoopBackOff"}}, ever_ran=True)
    assert pod_phase("Always", [restarting]) == "Running"
    assert terminated_state(137, "t")["terminated"]["reason"] == "Error"


def test_ready_needs_containers_and_every_readiness_gate() -> None:
    p = pod(readinessGates=[{"conditionType": "kuberollout.io/weights"}])
    conds = {c["type"]: c for c in pod_conditions(p, [running()], "Running", {})}
    assert conds["ContainersReady"]["status"] == "True"
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ReadinessGatesNotReady"
    assert "does not exist" in conds["Ready"]["message"]
    p["status"]["conditions"] = [{"type": "kuberollout.io/weights", "status": "False"}]
    assert "is not \"True\", but False" in {c["type"]: c for c in pod_conditions(p, [running()], "Running", {})
                                            }["Ready"]["message"]
    p["status"]["conditions"] = [{"type": "kuberollout.io/weights", "status": "True"}]
    assert {c["type"]: c["status"] for c in pod_conditions(p, [running()], "Running", {})}["Ready"] == "True"
    unready = {c["type"]: c for c in pod_conditions(p, [running(ready=False)], "Running", {})}
    assert unready["Ready"]["reason"] == "ContainersNotReady" and "[c]" in unready["Ready"]["message"]


def test_status_keeps_transition_times_and_never_writes_gate_conditions() -> None:
    p = pod(readinessGates=[{"conditionType": "kuberollout.io/weights"}])
    p["status"]["conditions"] = [{"type": "Ready", "status": "False", "lastTransitionTime": "old"},
                                 {"type": "kuberollout.io/weights", "status": "False"}]
    status = pod_status(p, [running(ready=False)], pod_ip="127.9.0.4", host_ip="127.9.255.254", start_time="t")
    types = [c["type"] for c in status["conditions"]]
    assert "kuberollout.io/weights" not in types
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["lastTransitionTime"] == "old"
    assert status["podIP"] == "127.9.0.4" and status["podIPs"] == [{"ip": "127.9.0.4"}]
    assert status["containerStatuses"][0]["ready"] is False


# ------------------------------------------------------------------------ services and DNS


def server_pod(name: str, ip: str, ready: bool = True, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}, **meta},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_endpoints_are_ready_matching_pods_and_named_target_ports_resolve() -> None:
    svc = {"metadata": {"name": "web", "namespace": "ns"}, "spec": {"selector": {"app": "web"}}}
    pods = [server_pod("a", "127.9.0.1"), server_pod("b", "127.9.0.2", ready=False),
            server_pod("c", "127.9.0.3", deletionTimestamp="now"), server_pod("d", "")]
    other_ns = server_pod("e", "127.9.0.5")
    other_ns["metadata"]["namespace"] = "other"
    assert [p["metadata"]["name"] for p in endpoints(svc, [*pods, other_ns])] == ["a"]
    svc["spec"]["publishNotReadyAddresses"] = True
    assert [p["metadata"]["name"] for p in endpoints(svc, pods)] == ["a", "b"]
    assert target_port(pods[0], {"port": 80, "targetPort": "http"}) == 8080
    assert target_port(pods[0], {"port": 80}) == 80
    assert target_port(pods[0], {"port": 80, "targetPort": "grpc"}) is None


def test_net_blocks_are_exclusive_and_addresses_are_not_reused_early(tmp_path: Path) -> None:
    first = NetBlock.claim(tmp_path)
    second = NetBlock.claim(tmp_path)
    assert first.block != second.block and first.pod_cidr == f"127.{first.block}.0.0/17"
    first.release()
    assert NetBlock.claim(tmp_path).block == first.block  # a released (or dead) holder frees it
    alloc = Allocator("127.9.0.0/29")  # .1 - .6
    a, b = alloc.allocate(), alloc.allocate()
    alloc.release(a)
    assert [alloc.allocate() for _ in range(4)] == ["127.9.0.3", "127.9.0.4", "127.9.0.5", "127.9.0.6"]
    assert alloc.allocate() == a  # next-fit: a freed address comes back only after all others


def _load_shim(dns_file: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("KUBEROLLOUT_PROCESS_DNS", str(dns_file))
    monkeypatch.setenv("KUBEROLLOUT_PROCESS_NAMESPACE", namespace)
    path = Path(podspec.__file__).with_name("childpath") / "sitecustomize.py"
    spec = importlib.util.spec_from_file_location("kuberollout_dns_shim", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    original = socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex
    try:
        spec.loader.exec_module(module)
    finally:
        socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = original
    return module


def test_dns_shim_answers_cluster_names_like_coredns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dns = tmp_path / "dns.json"
    dns.write_text(json.dumps({"domain": "cluster.local", "records": {
        "router.ns.svc.cluster.local": ["127.9.128.1"],
        "servers.ns.svc.cluster.local": ["127.9.0.1", "127.9.0.2"],
        "ext.ns.svc.cluster.local": {"cname": "localhost"},
    }}))
    shim = _load_shim(dns, "ns", monkeypatch)
    for name in ("router", "router.ns", "router.ns.svc", "router.ns.svc.cluster.local", "router.ns.svc.cluster.local."):
        assert shim.resolve(name) == ["127.9.128.1"], name
    assert shim.resolve("servers.ns.svc") == ["127.9.0.1", "127.9.0.2"]
    assert shim.resolve("missing.ns.svc") == [] and shim.resolve("missing.ns.svc.cluster.local") == []
    assert shim.resolve("example.com") is None and shim.resolve("127.0.0.1") is None
    assert "127.0.0.1" in shim.resolve("ext.ns.svc")
    infos = shim.getaddrinfo("router.ns.svc", 30000, type=socket.SOCK_STREAM)
    assert {i[4] for i in infos} == {("127.9.128.1", 30000)}
    with pytest.raises(socket.gaierror):
        shim.getaddrinfo("missing.ns.svc", 80)
    dns.write_text(json.dumps({"domain": "cluster.local", "records": {"router.ns.svc.cluster.local": ["127.9.128.9"]}}))
    os.utime(dns, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert shim.resolve("router.ns.svc") == ["127.9.128.9"]  # the table is re-read when it changes
