"""Turn pod status into one line a user can act on ("Unschedulable: 0/3 nodes ... nvidia.com/gpu").

Users of GPU operators keep asking why a workload is "stuck" (KubeRay #1990, #2182): the answer
is almost always in a pod's status, which they do not look at. Pools and jobs copy the first
problem into their status message.
"""

from __future__ import annotations

from typing import Any

# Waiting reasons that mean "this will not fix itself soon".
_BAD_WAITING = {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError",
                "CreateContainerError", "InvalidImageName", "RunContainerError"}


def pod_problem(pod: dict[str, Any]) -> str | None:
    """The most useful reason this pod is not running/ready, or None."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return f"pod {name}: {c.get('reason') or 'NotScheduled'}: {c.get('message') or ''}".rstrip(": ")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _BAD_WAITING:
            return f"pod {name}: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if last.get("reason") == "OOMKilled":
            return f"pod {name}: container {cs.get('name')} was OOMKilled (raise its memory limit)"
    return None


def termination_message(pod: dict[str, Any], container: str) -> tuple[int | None, str | None]:
    """(exit code, message) of a terminated container (the runtime prints its error last)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") != container:
            continue
        term = (cs.get("state") or {}).get("terminated") or {}
        if term:
            message = (term.get("message") or term.get("reason") or "").strip()
            return term.get("exitCode"), (message.splitlines()[-1] if message else None)
    return None, None


def summarize(pods: list[dict[str, Any]]) -> str | None:
    problems = [p for p in (pod_problem(pod) for pod in pods) if p]
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more
