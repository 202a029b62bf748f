"""Start the process kubelet (tests/cluster/kubelet) next to a plane, and the handle tests use.

Pods that tolerate the process node's taint (``kubelet.scheduling`` / ``kubelet.pod_placement``)
run as local processes with pod IPs on loopback, their own probes, cluster DNS and Service
routing; everything else is as before (kwok fakes pods on its GPU nodes, other pods stay Pending).
See docs/contributing-cluster.md, "Pods that run for real".
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.cluster.harness import Cluster, Component, ControlPlaneError, wait_for

REPO = Path(__file__).resolve().parents[2]
NODE_NAME = "process-0"
LABEL = "kuberollout.io/process-node"
START_TIMEOUT_S = 90.0


class ProcessKubelet:
    """The running process kubelet of a plane: where its pods go, their logs, PIDs and names."""

    def __init__(self, cluster: Cluster, component: Component, workdir: Path, ready: dict[str, Any]) -> None:
        self.cluster = cluster
        self.component = component
        self.workdir = workdir
        self.node: str = ready["node"]
        self.node_ip: str = ready["node_ip"]
        self.pod_cidr: str = ready["pod_cidr"]
        self.dns_file = Path(ready["dns_file"])
        self.pods_dir = Path(ready["pods_dir"])
        self.toleration = {"key": LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        self.node_selector = {LABEL: "true"}

    # -- placement ----------------------------------------------------------------------------

    @property
    def scheduling(self) -> dict[str, Any]:
        """A kuberollout `scheduling` block (SGLangPool servers/router, RolloutJob runtime) that
        puts pods on the process node."""
        return {"nodeSelector": dict(self.node_selector), "tolerations": [dict(self.toleration)]}

    @property
    def pod_placement(self) -> dict[str, Any]:
        """The same, as pod-spec fields (for plain Pods and Deployments)."""
        return self.scheduling

    # -- looking inside ------------------------------------------------------------------------

    def pod_dir(self, namespace: str, name: str) -> Path:
        """The newest directory of a pod with this name (a re-created pod has a new UID)."""
        dirs = sorted(self.pods_dir.glob(f"{namespace}_{name}_*"), key=lambda p: p.stat().st_mtime)
        if not dirs:
            raise FileNotFoundError(f"no process pod {namespace}/{name} under {self.pods_dir}")
        return dirs[-1]

    def pod_log(self, namespace: str, name: str, container: str | None = None, previous: bool = False) -> str:
        """`kubectl logs [--previous]` for a process pod: the container's stdout and stderr."""
        d = self.pod_dir(namespace, name)
        c = d / container if container else next(p for p in sorted(d.iterdir()) if p.is_dir()
                                                  and p.name != "serviceaccount")
        logs = sorted(c.glob("*.log"), key=lambda p: int(p.stem))
        if previous:
            logs = logs[:-1]
        return logs[-1].read_text(errors="replace") if logs else ""

    def pid(self, namespace: str, name: str, container: str | None = None) -> int:
        """PID of the container's current process (from status.containerStatuses[].containerID)."""
        pod = json.loads(self.cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        st = next((s for s in statuses if container is None or s["name"] == container), None)
        if st is None or not str(st.get("containerID", "")).startswith("process://"):
            raise LookupError(f"pod {namespace}/{name} has no running process container: {statuses}")
        return int(st["containerID"].split("://", 1)[1])

    def resolve(self, host: str) -> list[str]:
        """What cluster DNS answers for a fully qualified `<svc>.<ns>.svc[.cluster.local]` name."""
        data = json.loads(self.dns_file.read_text())
        name = host.rstrip(".")
        if not name.endswith("." + data["domain"]):
            name = f"{name}.{data['domain']}"
        answer = data["records"].get(name)
        return list(answer) if isinstance(answer, list) else []

    def log_tail(self, lines: int = 40) -> str:
        return self.component.tail(lines)

    def pod_log_tails(self, lines: int = 25, pods: int = 8) -> str:
        """The newest process pods' log tails, for failure reports."""
        if not self.pods_dir.exists():
            return "(no process pods)"
        out = []
        for d in sorted(self.pods_dir.iterdir(), key=lambda p: p.stat().st_mtime)[-pods:]:
            for c in sorted(p for p in d.iterdir() if p.is_dir() and p.name != "serviceaccount"):
                logs = sorted(c.glob("*.log"), key=lambda p: int(p.stem))
                if logs:
                    text = "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:])
                    out.append(f"----- {d.name}/{c.name}/{logs[-1].name} -----\n{text}")
        return "\n".join(out) or "(no process pod logs)"


def start_process_kubelet(cluster: Cluster, node: str = NODE_NAME) -> ProcessKubelet:
    """Start the process kubelet as one more plane component and wait until its node takes pods.

    It stops with the plane (before the apiserver), and its processes die with it.
    """
    plane = cluster.plane
    if plane is None:
        raise ControlPlaneError("the process kubelet runs only on the harness's own control plane")
    workdir = plane.workdir / "process-kubelet"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    comp = Component("process-kubelet",
                     [sys.executable, "-m", "tests.cluster.kubelet", "--kubeconfig", str(plane.kubeconfig),
                      "--workdir", str(workdir), "--node", node],
                     plane.workdir / "logs" / "process-kubelet.log", env)
    plane.components.append(comp)
    started = time.monotonic()
    comp.start()
    ready_file = workdir / "ready.json"
    wait_for("the process kubelet's ready.json", ready_file.exists, START_TIMEOUT_S, [comp])
    core = cluster.core()

    def schedulable() -> bool:
        n = core.read_node(node)
        ready = any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        return ready and not any(t.key.startswith("node.kubernetes.io/") for t in n.spec.taints or [])

    wait_for(f"node {node} Ready and schedulable", schedulable, START_TIMEOUT_S, [comp])
    kubelet = ProcessKubelet(cluster, comp, workdir, json.loads(ready_file.read_text()))
    print(f"[kuberollout cluster] process kubelet up in {time.monotonic() - started:.1f}s "
          f"(node {node}, pods on {kubelet.pod_cidr})", flush=True)
    return kubelet
