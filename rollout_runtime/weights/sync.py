"""Bring running SGLang servers to new weights: pause, load from disk, continue; all servers at once.

Servers are updated concurrently: one after another, the pool's pause window would grow with its
size, and a trainer that waits on each call in turn is a known cause of weight-sync deadlocks. Each
server's sequence is independent: one that fails is reported by its URL with the server's own
message, and the others go on. Whatever happens after a server was paused (a failed load, a lost
connection, a cancelled task) it is told to continue, so it keeps serving, on its old weights if the
load failed.

Timeouts: the pause and continue calls get `step_timeout` (they return at once on a healthy
server; `abort` waits for in-flight requests to drain, so it gets `timeout`), the load gets
`timeout`. Retries: calls that never reached the server, always; pause, continue and version reads
(idempotent) also after a timeout or a 502/503/504; the load itself is never resent once it may
have arrived (a second load would run next to the first on a paused server): instead the server is
asked which version it serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import aiohttp

from rollout_runtime.weights.calls import CallFailed, call, new_session
from rollout_runtime.weights.servers import resolve_servers, served_version
from rollout_runtime.weights.target import CONTINUE_PATH, PAUSE_PATH, UPDATE_PATH, PauseMode, WeightsTarget

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_STEP_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 2


@dataclass
class ServerOutcome:
    """What happened to one server. Times are in seconds; `started_at` is wall-clock (time.time())."""

    url: str
    ok: bool = False
    message: str = ""
    failed_step: str | None = None  # model_info | pause | update | continue | verify
    skipped: bool = False  # it already served the target version
    paused: bool = False
    version_before: int | None = None  # read only when asked to skip servers that are current
    version_after: int | None = None  # what it reports afterwards; None when unknown
    started_at: float = 0.0
    update_seconds: float | None = None  # its own /update_weights_from_disk call
    pause_seconds: float | None = None  # paused (acknowledged) -> continued (acknowledged)
    duration_seconds: float = 0.0

    def fail(self, step: str, message: str) -> ServerOutcome:
        """Record a failure; the first failed step is the one reported, later messages are appended."""
        self.ok = False
        self.message = f"{self.message}; {message}" if self.failed_step else message
        self.failed_step = self.failed_step or step
        return self


@dataclass
class UpdateReport:
    """The outcome of one update over a set of servers."""

    target: WeightsTarget
    outcomes: list[ServerOutcome] = field(default_factory=list)
    started_at: float = 0.0
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> list[ServerOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def slowest_update_seconds(self) -> float:
        return max((o.update_seconds or 0.0 for o in self.outcomes), default=0.0)

    def summary(self) -> str:
        done = sum(1 for o in self.outcomes if o.ok)
        head = f"{done}/{len(self.outcomes)} servers serve {self.target.describe()} ({self.duration_seconds:.2f}s)"
        return head + "".join(f"; {o.url} failed at {o.failed_step}: {o.message}" for o in self.failures)


async def sync_servers(session: aiohttp.ClientSession, servers: Sequence[str], target: WeightsTarget, *,
                       no_pause: Collection[str] = (), skip_current: bool = False,
                       timeout: float = DEFAULT_TIMEOUT_S, step_timeout: float = DEFAULT_STEP_TIMEOUT_S,
                       retries: int = DEFAULT_RETRIES,
                       on_outcome: Callable[[ServerOutcome], None] | None = None) -> UpdateReport:
    """Update `servers` (URLs of SGLang servers, not routers) to `target`, concurrently.

    `no_pause`: servers that take no traffic yet (a new pod behind its readiness gate): loaded
    without a pause. `skip_current`: first read each server's version and leave alone those that
    already serve the target. `on_outcome` is called as each server finishes.
    """
    report = UpdateReport(target=target, started_at=time.time())
    started = time.monotonic()

    async def one(url: str) -> ServerOutcome:
        outcome = await _sync_one(session, url.rstrip("/"), target, pause=url not in no_pause,
                                  skip_current=skip_current, timeout=timeout, step_timeout=step_timeout,
                                  retries=retries)
        if on_outcome is not None:
            on_outcome(outcome)
        return outcome

    report.outcomes = list(await asyncio.gather(*(one(u) for u in servers)))
    report.duration_seconds = time.monotonic() - started
    return report


async def update_weights(urls: Sequence[str], path: str, version: int, *, pause_mode: PauseMode = "retract",
                         load_format: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                         step_timeout: float = DEFAULT_STEP_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                         skip_current: bool = False) -> UpdateReport:
    """Load the weights in `path` as `version` into every server behind `urls` (servers or routers).

    The one-call form for trainers and scripts (`rollout-runtime update-weights` is this). Any
    version may be loaded, a lower one included: a rollback is the caller's right.
    """
    target = WeightsTarget(path=path, version=version, load_format=load_format, pause_mode=pause_mode)
    async with new_session() as session:
        servers = await resolve_servers(session, urls, retries=retries)
        return await sync_servers(session, servers, target, skip_current=skip_current, timeout=timeout,
                                  step_timeout=step_timeout, retries=retries)


async def _sync_one(session: aiohttp.ClientSession, url: str, target: WeightsTarget, *, pause: bool,
                    skip_current: bool, timeout: float, step_timeout: float, retries: int) -> ServerOutcome:
    out = ServerOutcome(url=url, started_at=time.time())
    started = time.monotonic()
    try:
        if skip_current:
            try:
                out.version_before, _ = await served_version(session, url, retries=retries, timeout=step_timeout)
            except CallFailed as exc:
                return out.fail("model_info", str(exc))
            if out.version_before == target.version:
                out.ok, out.skipped, out.version_after = True, True, target.version
                out.message = f"already serves version {target.version}"
                return out
        await _load(session, url, target, out, pause=pause, timeout=timeout, step_timeout=step_timeout,
                    retries=retries)
        return out
    finally:
        out.duration_seconds = time.monotonic() - started


async def _load(session: aiohttp.ClientSession, url: str, target: WeightsTarget, out: ServerOutcome, *,
                pause: bool, timeout: float, step_timeout: float, retries: int) -> None:
    paused_at: float | None = None
    try:
        if pause:
            pause_timeout = timeout if target.pause_mode == "abort" else step_timeout
            try:
                await call(session, "POST", url + PAUSE_PATH, target.pause_body(), timeout=pause_timeout,
                           retries=retries, idempotent=True)
            except CallFailed as exc:
                out.fail("pause", str(exc))
                paused_at = time.monotonic()  # a pause that timed out may still have paused: continue
                return
            paused_at = time.monotonic()
            out.paused = True
        load_error = await _update(session, url, target, out, paused=pause, timeout=timeout, retries=retries)
        if load_error is not None:
            out.fail("update", load_error)
    finally:
        if paused_at is not None:
            await _continue(session, url, out, paused_at, step_timeout=step_timeout, retries=retries)
    if out.failed_step is not None:
        return
    try:
        out.version_after, raw = await served_version(session, url, retries=retries, timeout=step_timeout)
    except CallFailed as exc:
        out.fail("verify", f"loaded, but the version could not be read back: {exc}")
        return
    if out.version_after != target.version:
        out.fail("verify", f"loaded, but the server reports weight_version {raw!r}, not {target.version}")
        return
    out.ok = True
    out.message = f"serves version {target.version}"


async def _update(session: aiohttp.ClientSession, url: str, target: WeightsTarget, out: ServerOutcome, *,
                  paused: bool, timeout: float, retries: int) -> str | None:
    """The load itself; None on success, else why it failed (the server's own message when it answered)."""
    started = time.monotonic()
    try:
        await call(session, "POST", url + UPDATE_PATH, target.update_body(paused), timeout=timeout,
                   retries=retries, idempotent=False)
        return None
    except CallFailed as exc:
        if exc.status is not None:
            return str(exc)
        try:  # sent, then lost: did it load anyway?
            version, _ = await served_version(session, url, retries=retries)
        except CallFailed as again:
            return f"{exc}; then {again}"
        return None if version == target.version else str(exc)
    finally:
        out.update_seconds = time.monotonic() - started


async def _continue(session: aiohttp.ClientSession, url: str, out: ServerOutcome, paused_at: float, *,
                    step_timeout: float, retries: int) -> None:
    try:
        await call(session, "POST", url + CONTINUE_PATH, {}, timeout=step_timeout, retries=retries, idempotent=True)
    except CallFailed as exc:
        out.fail("continue", f"may be left paused: {exc}")
    out.pause_seconds = time.monotonic() - paused_at
