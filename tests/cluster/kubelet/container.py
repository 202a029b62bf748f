"""One container as a local process: start, probe, restart with back-off, stop.

The process runs in its own session (process group), so stopping it reaches whatever it spawned;
it gets PR_SET_PDEATHSIG, so it dies with the kubelet even if the kubelet is SIGKILLed. Its
stdout/stderr go to `<pod dir>/<container>/<restartCount>.log`, like /var/log/pods.

Restart rules follow the kubelet: restartPolicy Always restarts every exit, OnFailure only a
non-zero one, Never none; the first restart is immediate, later ones wait 10 s, 20 s, 40 s ...
up to 300 s (CrashLoopBackOff), and the back-off resets after 10 minutes of running. A liveness or
startup probe that reaches its failure threshold kills the process (SIGTERM, then SIGKILL after
the probe's or the pod's terminationGracePeriodSeconds) and the restart rules apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.cluster.kubelet.context import KubeletContext
from tests.cluster.kubelet.probes import ProbeSpec, ProbeState, Ticker, parse_probe, run_probe
from tests.cluster.kubelet.status import ContainerRecord, now_rfc3339, terminated_state

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
BACKOFF_RESET_AFTER = 600.0
LOG_LINES, LOG_BYTES = 80, 2048  # FallbackToLogsOnError: the kubelet's tail of the log


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def exit_code_of(returncode: int) -> int:
    """A shell-style exit code: killed by signal N -> 128 + N, as container runtimes report."""
    return 128 - returncode if returncode < 0 else returncode


def log_tail(path: Path, lines: int = LOG_LINES, limit: int = LOG_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-limit:]


class ContainerRunner:
    """Supervises one container of a pod for as long as the pod runs."""

    def __init__(self, ctx: KubeletContext, pod: Callable[[], Mapping[str, Any]], container: Mapping[str, Any],
                 argv: list[str], env: Mapping[str, str], cwd: Path, pod_ip: str, notify: Callable[[], None],
                 record: ContainerRecord | None = None) -> None:
        self.ctx = ctx
        self.pod = pod  # the latest pod object (it changes: deletionTimestamp, gates)
        self.spec = container
        self.argv = argv
        self.env = dict(env)
        self.cwd = cwd
        self.notify = notify
        self.record = record or ContainerRecord(name=container["name"], image=container.get("image", ""))
        self.log_dir = cwd / container["name"]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.probes = {kind: parse_probe(kind, container[f"{kind}Probe"], container, pod_ip)
                       for kind in ("startup", "liveness", "readiness") if container.get(f"{kind}Probe")}
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self._kill_reason = ""
        self._started_event = asyncio.Event()
        self._stop_event = asyncio.Event()

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.record.restart_count}.log"

    def _policy_restarts(self, exit_code: int) -> bool:
        policy = self.pod()["spec"].get("restartPolicy", "Always")
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    async def run(self) -> None:
        """Start, supervise and restart until the container is done or the pod is stopped."""
        backoff = 0.0
        while not self.stopping:
            started = time.monotonic()
            exit_code = await self._run_once()
            if self.stopping or not self._policy_restarts(exit_code):
                break
            self.record.last_state = {"terminated": self.record.state["terminated"]}
            if time.monotonic() - started >= BACKOFF_RESET_AFTER:
                backoff = 0.0
            if backoff > 0:
                meta = self.pod()["metadata"]
                message = (f"back-off {backoff:g}s restarting failed container={self.record.name} "
                           f"pod={meta['name']}_{meta['namespace']}({meta.get('uid', '')})")
                self.record.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
                self.notify()
                self.ctx.event(self.pod(), "Warning", "BackOff", "Back-off restarting failed container "
                               f"{self.record.name} in pod {meta['name']}", self.record.name)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), backoff)
                if self.stopping:
                    break
            backoff = self.ctx.crash_backoff if backoff == 0 else min(backoff * 2, MAX_BACKOFF)
            self.record.restart_count += 1
        self.record.done = True
        self.notify()

    async def _run_once(self) -> int:
        """One process lifetime; returns its exit code (128 for a process that could not start)."""
        rec = self.record
        started_at = now_rfc3339()
        try:
            with open(self.log_path, "ab") as out:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv, env=self.env, cwd=str(self.cwd), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_die_with_parent)  # noqa: PLW1509 - only calls prctl
        except OSError as exc:
            rec.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(exc),
                                        "startedAt": started_at, "finishedAt": now_rfc3339()}}
            rec.ever_ran, rec.ready, rec.started = True, False, False
            self.ctx.event(self.pod(), "Warning", "Failed", f"Error: {exc}", rec.name)
            self.notify()
            return 128
        rec.container_id = f"process://{self.proc.pid}"
        rec.state = {"running": {"startedAt": started_at}}
        rec.ever_ran = True
        rec.started = "startup" not in self.probes
        rec.ready = "readiness" not in self.probes and rec.started
        self._started_event.clear()
        if rec.started:
            self._started_event.set()
        log.info("started %s/%s[%s] pid %s: %s", self.pod()["metadata"]["namespace"], self.pod()["metadata"]["name"],
                 rec.name, self.proc.pid, " ".join(self.argv))
        self.ctx.event(self.pod(), "Normal", "Started", f"Started container {rec.name} (pid {self.proc.pid})",
                       rec.name)
        self.notify()
        if self.stopping:  # stop() came while the process was being created
            asyncio.get_running_loop().create_task(self.kill(0.0, "pod stopping"))
        probe_tasks = [asyncio.create_task(self._probe_loop(spec, time.monotonic())) for spec in self.probes.values()]
        try:
            returncode = await self.proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # never leave a process behind
            raise
        finally:
            for t in probe_tasks:
                t.cancel()
            await asyncio.gather(*probe_tasks, return_exceptions=True)
        code = exit_code_of(returncode)
        message = ""
        if code != 0 and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = log_tail(self.log_path)
        rec.state = terminated_state(code, started_at, message)
        rec.ready = rec.started = False
        log.info("container %s/%s[%s] exited %s%s", self.pod()["metadata"]["namespace"],
                 self.pod()["metadata"]["name"], rec.name, code, f" ({self._kill_reason})" if self._kill_reason else "")
        self._kill_reason = ""
        self.notify()
        return code

    # -- probes -----------------------------------------------------------------------------

    async def _probe_loop(self, spec: ProbeSpec, container_start: float) -> None:
        state = ProbeState(spec)
        ticker = Ticker(spec.period)
        trigger = None
        if spec.kind == "readiness":
            # The kubelet runs readiness at once when the container becomes started.
            trigger = asyncio.get_running_loop().create_task(self._trigger_on_start(ticker))
        meta = self.pod()["metadata"]
        env = self.ctx.base_env(meta["namespace"], meta["name"]) if spec.action == "exec" else None
        try:
            while not self.stopping:
                gated = spec.kind != "startup" and not self.record.started
                delayed = time.monotonic() - container_start < spec.initial_delay
                if not gated and not delayed:
                    ok, message = await run_probe(spec, self.ctx.session(), env=env, cwd=str(self.cwd))
                    if self.stopping or self.proc is None or self.proc.returncode is not None:
                        return
                    if not ok:
                        self.ctx.event(self.pod(), "Warning", "Unhealthy",
                                       f"{spec.kind.capitalize()} probe failed: {message}", self.record.name)
                    if state.record(ok) and self._apply(spec, state.result):
                        return  # a liveness/startup verdict ends this worker
                await ticker.wait()
        finally:
            if trigger is not None:
                trigger.cancel()

    async def _trigger_on_start(self, ticker: Ticker) -> None:
        await self._started_event.wait()
        ticker.trigger.set()

    def _apply(self, spec: ProbeSpec, result: bool | None) -> bool:
        """Act on a thresholded probe result; True when the worker should stop probing."""
        rec = self.record
        if spec.kind == "readiness":
            if rec.ready != bool(result):
                rec.ready = bool(result)
                self.notify()
            return False
        if spec.kind == "startup" and result:
            rec.started = True
            rec.ready = "readiness" not in self.probes
            self._started_event.set()
            self.notify()
            return True
        if spec.kind == "liveness" and result:
            return False
        reason = f"failed {spec.kind} probe, will be restarted"
        grace = spec.termination_grace if spec.termination_grace is not None else self._pod_grace()
        self.ctx.event(self.pod(), "Normal", "Killing", f"Container {rec.name} {reason}", rec.name)
        asyncio.get_running_loop().create_task(self.kill(grace, reason))
        return True

    def _pod_grace(self) -> float:
        value = self.pod()["spec"].get("terminationGracePeriodSeconds")
        return 30.0 if value is None else float(value)

    # -- stopping ---------------------------------------------------------------------------

    async def kill(self, grace: float, reason: str = "") -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; returns once it exited."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self._kill_reason = reason
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), max(grace, 0.0))
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        # Children that outlived their leader (a grandchild holding the port) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    async def stop(self, grace: float, reason: str = "") -> None:
        """Stop for good (pod deletion): no restart afterwards."""
        self.stopping = True
        self._stop_event.set()
        if self.proc is not None and self.proc.returncode is None:
            self.ctx.event(self.pod(), "Normal", "Killing", f"Stopping container {self.record.name}",
                           self.record.name)
        await self.kill(grace, reason)
