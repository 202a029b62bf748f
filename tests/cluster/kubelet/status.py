"""Pod status as the kubelet reports it, computed from what the process kubelet knows.

Pure functions over `ContainerRecord`s (mutated by the runner) and the pod object, so the rules are
unit tested on their own:

- container state: waiting (ContainerCreating, CrashLoopBackOff, CreateContainerError, ...),
  running, terminated (exit code, reason Completed/Error, message), plus lastState after a restart,
  restartCount, `started` (startup probe passed) and `ready` (readiness probe passed);
- phase: Pending until a container ran; Running while one runs or will be restarted; Succeeded /
  Failed once every container terminated for good (restartPolicy Never/OnFailure, or deletion);
- conditions: PodReadyToStartContainers, Initialized, ContainersReady and Ready. Ready also
  requires every `spec.readinessGates` condition to be True in status.conditions: those gate
  conditions are written by controllers (never by the kubelet) and are left alone by the status
  patch, which merges conditions by type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerRecord:
    """Everything reported about one container (the runner updates it as the process lives)."""

    name: str
    image: str
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    container_id: str = ""
    started: bool = False
    ready: bool = False
    ever_ran: bool = False
    done: bool = False  # terminated and will not be restarted

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        term = self.state.get("terminated")
        return None if term is None else int(term["exitCode"])

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "image": self.image, "imageID": "", "ready": self.ready,
            "restartCount": self.restart_count, "started": self.started, "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def terminated_state(exit_code: int, started_at: str, message: str = "") -> dict[str, Any]:
    term: dict[str, Any] = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                            "startedAt": started_at, "finishedAt": now_rfc3339()}
    if exit_code == 137:
        term["signal"] = 9
    if message:
        term["message"] = message
    return {"terminated": term}


def pod_phase(restart_policy: str, containers: Sequence[ContainerRecord]) -> str:
    """The kubelet's getPhase for pods without init containers."""
    if any(c.running for c in containers):
        return "Running"
    if not all(c.ever_ran for c in containers):
        return "Pending"
    if all(c.done for c in containers):
        return "Succeeded" if all(c.exit_code == 0 for c in containers) else "Failed"
    # Some container exited and is waiting to be restarted (Always, or OnFailure after a failure).
    return "Running"


def readiness_gate_problem(pod: Mapping[str, Any]) -> str | None:
    """Why the readiness gates hold the pod back, or None when every gate is True."""
    conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    for gate in pod["spec"].get("readinessGates") or []:
        kind = gate["conditionType"]
        cond = conditions.get(kind)
        if cond is None:
            return f'corresponding condition of pod readiness gate "{kind}" does not exist.'
        if cond.get("status") != "True":
            return f'the status of pod readiness gate "{kind}" is not "True", but {cond.get("status")}'
    return None


def pod_conditions(pod: Mapping[str, Any], containers: Sequence[ContainerRecord], phase: str,
                   previous: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The four kubelet-owned conditions; lastTransitionTime moves only when a status flips."""
    now = now_rfc3339()
    unready = [c.name for c in containers if not c.ready]
    terminal = phase in ("Succeeded", "Failed")
    wanted: list[tuple[str, bool, str, str]] = [
        ("PodReadyToStartContainers", not terminal, "", ""),
        ("Initialized", True, "", ""),
    ]
    if terminal:
        wanted += [("ContainersReady", False, "PodCompleted", ""), ("Ready", False, "PodCompleted", "")]
    elif unready:
        msg = f"containers with unready status: [{' '.join(unready)}]"
        wanted += [("ContainersReady", False, "ContainersNotReady", msg), ("Ready", False, "ContainersNotReady", msg)]
    else:
        wanted.append(("ContainersReady", True, "", ""))
        gate = readiness_gate_problem(pod)
        wanted.append(("Ready", gate is None, "ReadinessGatesNotReady" if gate else "", gate or ""))
    out = []
    for kind, ok, reason, message in wanted:
        status = "True" if ok else "False"
        prev = previous.get(kind) or {}
        # reason/message are always sent, None when empty: the status patch merges conditions by
        # type, and a key left out would keep the previous condition's text.
        out.append({
            "type": kind, "status": status, "lastProbeTime": None,
            "lastTransitionTime": prev.get("lastTransitionTime") if prev.get("status") == status else now,
            "reason": reason or None, "message": message or None,
        })
    return out


def is_ready(conditions: Sequence[Mapping[str, Any]]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pod_status(pod: Mapping[str, Any], containers: Sequence[ContainerRecord], *, pod_ip: str, host_ip: str,
               start_time: str) -> dict[str, Any]:
    """The status the kubelet writes (its own fields only; the patch merges conditions by type)."""
    phase = pod_phase(pod["spec"].get("restartPolicy", "Always"), containers)
    previous = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "conditions": pod_conditions(pod, containers, phase, previous),
        "containerStatuses": [c.as_status() for c in containers],
        "qosClass": (pod.get("status") or {}).get("qosClass") or "BestEffort",
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status


def comparable(status: Mapping[str, Any]) -> Any:
    """The status minus timestamps that only move when something else changed (for skip-if-same)."""
    conds = [(c["type"], c["status"], c.get("reason"), c.get("message")) for c in status.get("conditions") or []]
    return (status.get("phase"), status.get("podIP"), conds, status.get("containerStatuses"))
