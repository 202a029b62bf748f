"""Container probes with the kubelet's semantics (pkg/kubelet/prober in Kubernetes 1.34).

- Actions: httpGet (success is 200 <= status < 400, redirects followed, `User-Agent: kube-probe/1.34`),
  tcpSocket (a connection within the timeout), exec (exit status 0 within the timeout). The host
  defaults to the pod IP; a named port is looked up in the container's ports.
- Timing: a probe worker starts with the container; it probes at once, then on a fixed ticker of
  `periodSeconds` (a probe slower than the period is followed immediately by the next one, as
  Go's buffered ticker does); nothing is probed before `initialDelaySeconds`; each probe may take
  `timeoutSeconds`.
- Thresholds: a result changes only after `failureThreshold` consecutive failures or
  `successThreshold` consecutive successes. Initial results: readiness Failure, liveness
  Success, startup Unknown.
- Ordering: while a startup probe has not succeeded, liveness and readiness do not run; when it
  succeeds the readiness probe runs at once (the kubelet's manual trigger), then on its ticker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.cluster.kubelet.podspec import container_port

USER_AGENT = "kube-probe/1.34"
MAX_BODY = 10 * 1024


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of one container, with defaults filled in and ports resolved."""

    kind: str  # readiness | liveness | startup
    action: str  # http | tcp | exec
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None  # probe-level terminationGracePeriodSeconds
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    host: str = ""
    port: int = 0
    command: tuple[str, ...] = ()

    def describe(self) -> str:
        target = self.url or (f"{self.host}:{self.port}" if self.action == "tcp" else " ".join(self.command))
        return (f"{self.kind} {self.action} {target} delay={self.initial_delay:g}s period={self.period:g}s "
                f"timeout={self.timeout:g}s #success={self.success_threshold} #failure={self.failure_threshold}")


def parse_probe(kind: str, raw: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str) -> ProbeSpec:
    """The container's `<kind>Probe` with the API's defaults (period 10, timeout 1, thresholds 1/3)."""
    common: dict[str, Any] = {
        "kind": kind,
        "initial_delay": float(raw.get("initialDelaySeconds") or 0),
        "period": float(raw.get("periodSeconds") or 10),
        "timeout": float(raw.get("timeoutSeconds") or 1),
        "success_threshold": int(raw.get("successThreshold") or 1),
        "failure_threshold": int(raw.get("failureThreshold") or 3),
        "termination_grace": (float(raw["terminationGracePeriodSeconds"])
                              if raw.get("terminationGracePeriodSeconds") is not None else None),
    }
    if "httpGet" in raw:
        h = raw["httpGet"]
        host = h.get("host") or pod_ip
        port = container_port(container, h["port"])
        path = h.get("path") or "/"
        scheme = (h.get("scheme") or "HTTP").lower()
        headers = tuple((x["name"], x["value"]) for x in h.get("httpHeaders") or [])
        return ProbeSpec(action="http", url=f"{scheme}://{host}:{port}{path if path.startswith('/') else '/' + path}",
                         headers=headers, **common)
    if "tcpSocket" in raw:
        t = raw["tcpSocket"]
        return ProbeSpec(action="tcp", host=t.get("host") or pod_ip, port=container_port(container, t["port"]),
                         **common)
    if "exec" in raw:
        return ProbeSpec(action="exec", command=tuple(raw["exec"].get("command") or ()), **common)
    raise ValueError(f"{kind} probe has no supported action: {sorted(raw)}")


async def run_probe(spec: ProbeSpec, session: aiohttp.ClientSession, *, env: Mapping[str, str] | None = None,
                    cwd: str | None = None) -> tuple[bool, str]:
    """One probe: (success, a message like the kubelet's event text on failure)."""
    try:
        if spec.action == "http":
            headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **dict(spec.headers)}
            async with session.get(spec.url, headers=headers, timeout=aiohttp.ClientTimeout(total=spec.timeout),
                                   ssl=False, allow_redirects=True, max_redirects=10) as resp:
                body = await resp.content.read(MAX_BODY)
                if 200 <= resp.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {resp.status} {body[:200]!r}"
        if spec.action == "tcp":
            _, writer = await asyncio.wait_for(asyncio.open_connection(spec.host, spec.port), spec.timeout)
            writer.close()
            return True, ""
        proc = await asyncio.create_subprocess_exec(
            *spec.command, env=dict(env) if env is not None else None, cwd=cwd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), spec.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"command timed out after {spec.timeout:g}s"
        if proc.returncode == 0:
            return True, ""
        return False, f"command exited {proc.returncode}: {out[-200:].decode(errors='replace')}"
    except asyncio.TimeoutError:
        return False, f"Get {spec.url or spec.host}: context deadline exceeded (timeout {spec.timeout:g}s)"
    except (aiohttp.ClientError, OSError) as exc:
        return False, f"{spec.action} probe failed: {exc}"


@dataclass
class ProbeState:
    """The thresholded result of one probe worker (pure: fed results, says when the result flips)."""

    spec: ProbeSpec
    result: bool | None = field(init=False)  # None: unknown (startup before its first verdict)
    _last: bool | None = field(default=None, init=False)
    _run: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.result = {"readiness": False, "liveness": True, "startup": None}[self.spec.kind]

    def record(self, ok: bool) -> bool:
        """Count one probe result; True when the thresholded result was (re)set by it."""
        if ok == self._last:
            self._run += 1
        else:
            self._last, self._run = ok, 1
        needed = self.spec.success_threshold if ok else self.spec.failure_threshold
        if self._run < needed:
            return False
        self.result = ok
        return True


class Ticker:
    """Go's time.Ticker as the prober uses it: ticks on a fixed grid from its start, at most one
    tick buffered while a probe runs; `trigger` (the kubelet's manual run) fires at once and
    restarts the grid."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.origin = self.last_fire = time.monotonic()
        self.trigger = asyncio.Event()

    async def wait(self) -> None:
        now = time.monotonic()
        ticks = int((now - self.origin) // self.period)
        latest = self.origin + ticks * self.period
        if ticks >= 1 and latest > self.last_fire:  # fell while the last probe ran: buffered
            self.last_fire = now
            return
        try:
            await asyncio.wait_for(self.trigger.wait(), latest + self.period - now)
            self.trigger.clear()
            self.origin = time.monotonic()
        except asyncio.TimeoutError:
            pass
        self.last_fire = time.monotonic()
