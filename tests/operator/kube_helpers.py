"""Helpers for the operator's cluster tests: the operator process, kubectl JSON, "kubelet" chores.

Pods that do not tolerate the process node (tests/cluster/kubelet) are never run, so these tests
play the kubelet's part by hand where needed: they run a Job's pod as a local process (its
command, env and ServiceAccount credentials) and then record the container's exit in the pod
status, which the Job controller acts on. Tests that want pods run for real use the
`process_kubelet` / `real_pool` fixtures instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.harness import Cluster

REPO = Path(__file__).resolve().parents[2]
NAMESPACE_PREFIX = "kro"  # the test operator watches kro-* only
TINY = str(REPO / "examples" / "tiny-model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def try_get(cluster: Cluster, *args: str) -> Any | None:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def apply(cluster: Cluster, namespace: str, *docs: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess:
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(list(docs)), check=check)


def wait(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    """Poll until fn() returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - "not yet"
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})"
                                                                             if last_exc else ""))


def rolloutjob(name: str, endpoint: str, dataset: str, out: Path, **spec: Any) -> dict[str, Any]:
    """A RolloutJob on the tiny model's tokenizer with math rewards; ``spec`` keys override."""
    body: dict[str, Any] = {
        "apiVersion": "kuberollout.io/v1alpha1",
        "kind": "RolloutJob",
        "metadata": {"name": name},
        "spec": {
            "endpoint": endpoint,
            "dataset": {"path": dataset, "tokenizer": TINY, "inputKey": "prompt", "labelKey": "label"},
            "rollout": {"batchSize": 4, "samplesPerPrompt": 2, "numRollouts": 6, "maxResponseLength": 32},
            "reward": {"type": "math"},
            "output": {"path": str(out)},
        },
    }
    body["spec"].update(spec)
    return body


def batch_files(out: Path) -> list[int]:
    """The rollout ids of every batch file on disk, committed or not, one entry per file."""
    return [int(p.name.split(".")[0].split("_")[1]) for p in sorted(out.glob("rollout_*.jsonl"))]


def batch_lines(cluster: Cluster, namespace: str, job: str, out: Path) -> dict[int, int]:
    """rollout id -> samples in the batch file its commit names (read through the commit, as a trainer does).

    Also checks that no other batch file is left on disk: every file there is a committed one.
    """
    from rollout_runtime.state import RolloutState

    data = get_json(cluster, "configmap", f"{job}-state", "-n", namespace)["data"]
    state = RolloutState.model_validate_json(data["state.json"])
    names = {i: state.batch_name(i) for i in range(state.rollout_id + 1)}
    assert sorted(p.name for p in out.glob("rollout_*")) == sorted(names.values()), "uncommitted batch files left"
    return {i: sum(1 for _ in (out / name).open()) for i, name in names.items()}


def status(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return (get_json(cluster, kind, name, "-n", namespace).get("status")) or {}


def condition(obj_status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions") or [] if c["type"] == type_), {})


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items = get_json(cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or "")


class OperatorProcess:
    """`rollout-operator` as a subprocess (the real console entry point), watching kro-* namespaces."""

    def __init__(self, cluster: Cluster, log_path: Path, *extra: str, namespace: str = f"{NAMESPACE_PREFIX}-*") -> None:
        self.cluster = cluster
        self.log_path = log_path
        self.extra = extra
        self.namespace = namespace  # what it watches (a second operator must not share the session one's)
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "rollout_operator.cli", "--namespace", self.namespace,
               "--metrics-port", str(self.metrics_port),
               "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
               "--log-format", "plain", "--resync-seconds", "20", *self.extra]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.cluster.env(),
                                     cwd=str(REPO))
        wait("the operator's liveness endpoint", self.alive, timeout=60, interval=0.2)

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited; log tail:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# ------------------------------------------------------------------------- playing kubelet


def job_pod(cluster: Cluster, namespace: str, job_name: str, timeout: float = 60) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        items = get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={job_name}")["items"]
        return items[0] if items else None

    return wait(f"the pod of Job {job_name}", find, timeout)


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    """The container's environment, with the downward-API fields a kubelet would fill in."""
    env: dict[str, str] = {}
    fields = {"metadata.namespace": pod["metadata"]["namespace"], "metadata.name": pod["metadata"]["name"]}
    for var in pod["spec"]["containers"][0].get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in (var.get("valueFrom") or {}):
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def run_pod_locally(cluster: Cluster, pod: dict[str, Any], cwd: Path, extra_env: dict[str, str] | None = None,
                    timeout: float = 180, background: bool = False) -> Any:
    """Run the pod's container command here, authenticated as the pod's ServiceAccount."""
    ns = pod["metadata"]["namespace"]
    container = pod["spec"]["containers"][0]
    env = cluster.env_for_sa(ns, pod["spec"]["serviceAccountName"])
    env.update(pod_env(pod))
    env.update(extra_env or {})
    env.setdefault("KUBEROLLOUT_LOG_LEVEL", "INFO")
    cmd = list(container.get("command") or []) + list(container.get("args") or [])
    if background:
        return subprocess.Popen(cmd, env=env, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(cmd, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout, check=False)


def report_exit(cluster: Cluster, pod: dict[str, Any], exit_code: int, message: str = "") -> None:
    """Record the container's exit in the pod status, as the kubelet would."""
    container = pod["spec"]["containers"][0]["name"]
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
    if message:
        terminated["message"] = message
    patch = {"status": {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [{"name": container, "image": pod["spec"]["containers"][0]["image"], "imageID": "",
                               "ready": False, "restartCount": 0, "started": False,
                               "state": {"terminated": terminated}}],
    }}
    cluster.kubectl("patch", "pod", pod["metadata"]["name"], "-n", pod["metadata"]["namespace"],
                    "--subresource=status", "--type=merge", "-p", json.dumps(patch))


def env_without_cluster() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
