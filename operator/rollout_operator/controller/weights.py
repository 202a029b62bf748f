"""The weight syncer: runs each pool's weight updates as background tasks, and tells the reconcile what happened.

A weight load takes seconds to minutes, so it never runs inside a reconcile: the decision
(`reconcile/sglangpool_weights.py`) orders a sync, `start` launches it as an asyncio task (at
most one per pool: a newer order waits for the next reconcile after this one ends), and the task
records each server's outcome as it arrives and enqueues the pool, whose next reconcile reads
`observe` and turns it into status. The orchestration is `rollout_runtime.weights.sync_servers`,
the same code as `rollout-runtime update-weights`.

What it remembers is a cache, not the truth: after an operator restart every server's version is
unknown, and the next sync reads it from the server (`GET /model_info`) before loading anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from rollout_operator.reconcile.sglangpool_weights import (
    ServerState,
    SyncInFlight,
    SyncOrder,
    SyncRecord,
    WeightsObserved,
)
from rollout_runtime.weights import ServerOutcome, new_session, sync_servers

log = logging.getLogger("rollout_operator")

Key = tuple[str, str]


@dataclass
class _PoolSync:
    servers: dict[str, ServerState] = field(default_factory=dict)
    in_flight: SyncInFlight | None = None
    last: SyncRecord | None = None
    task: asyncio.Task[None] | None = None
    newest_version: int = 0  # never load an older version than one ordered before (a decision from a stale view)


class WeightSyncer:
    """One background sync at a time per pool; `on_change(ns, name)` is called whenever there is news."""

    def __init__(self, on_change: Callable[[str, str], None], *, timeout: float, step_timeout: float = 30.0,
                 retries: int = 2) -> None:
        self.on_change = on_change
        self.timeout = timeout
        self.step_timeout = step_timeout
        self.retries = retries
        self._pools: dict[Key, _PoolSync] = {}
        self._session: aiohttp.ClientSession | None = None

    def observe(self, ns: str, name: str) -> WeightsObserved:
        p = self._pools.get((ns, name))
        if p is None:
            return WeightsObserved()
        return WeightsObserved(servers=dict(p.servers), in_flight=p.in_flight, last=p.last)

    def running(self, ns: str, name: str) -> bool:
        p = self._pools.get((ns, name))
        return p is not None and p.task is not None

    def start(self, ns: str, name: str, order: SyncOrder) -> bool:
        """Launch `order` unless a sync is running for the pool; False when it was not started."""
        p = self._pools.setdefault((ns, name), _PoolSync())
        if p.task is not None:
            return False
        if order.key.version < p.newest_version:
            log.warning("SGLangPool %s/%s: not loading weights version %d: version %d was ordered before", ns, name,
                        order.key.version, p.newest_version)
            return False
        p.newest_version = order.key.version
        p.in_flight = SyncInFlight(order.key, tuple(s.pod for s in order.servers), datetime.now(UTC),
                                   order.probe_only)
        p.task = asyncio.create_task(self._run((ns, name), p, order), name=f"weights-{ns}/{name}")
        return True

    def forget(self, ns: str, name: str) -> None:
        """The pool is gone: stop its sync (paused servers are still continued) and drop what we know."""
        p = self._pools.pop((ns, name), None)
        if p is not None and p.task is not None:
            p.task.cancel()

    async def close(self) -> None:
        tasks = [p.task for p in self._pools.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, key: Key, p: _PoolSync, order: SyncOrder) -> None:
        refs = {s.url: s for s in order.servers}
        started = datetime.now(UTC)
        reported: set[str] = set()

        def record(o: ServerOutcome) -> None:
            ref = refs[o.url]
            reported.add(ref.uid)
            version = o.version_after if o.version_after is not None else o.version_before
            message = o.message if o.ok else f"{o.failed_step} failed: {o.message}"
            p.servers[ref.uid] = ServerState(ref.pod, ref.restarts, version, order.key, o.ok, message,
                                             datetime.now(UTC))
            self.on_change(*key)

        try:
            if self._session is None or self._session.closed:
                self._session = new_session()
            report = await sync_servers(self._session, list(refs), order.target,
                                        no_pause={s.url for s in order.servers if not s.pause}, skip_current=True,
                                        timeout=self.timeout, step_timeout=self.step_timeout, retries=self.retries,
                                        on_outcome=record)
            loaded = [o for o in report.outcomes if o.ok and not o.skipped]
            failures = tuple((refs[o.url].pod, p.servers[refs[o.url].uid].message) for o in report.failures)
            if loaded or failures:
                pauses = [o.pause_seconds for o in report.outcomes if o.pause_seconds is not None]
                loads = [o.update_seconds for o in report.outcomes if o.update_seconds is not None]
                p.last = SyncRecord(order.key, started, datetime.now(UTC), len(loaded), failures,
                                    max(pauses) if pauses else None, max(loads) if loads else None)
                log.info("SGLangPool %s/%s: %s", *key, report.summary())
                for o in report.outcomes:
                    if not o.skipped:
                        log.info("SGLangPool %s/%s: server %s (%s) %s: load %s, paused %s", *key, refs[o.url].pod,
                                 o.url, "ok" if o.ok else f"failed at {o.failed_step}", _secs(o.update_seconds),
                                 _secs(o.pause_seconds))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, not a server's failure: report it on every server of the order
            log.exception("SGLangPool %s/%s: weight sync failed", *key)
            now = datetime.now(UTC)
            for ref in (r for r in order.servers if r.uid not in reported):
                p.servers[ref.uid] = dataclasses.replace(
                    p.servers.get(ref.uid) or ServerState(ref.pod, ref.restarts, None, order.key, False, "", now),
                    ok=False, key=order.key, message=f"weight sync error: {exc}", at=now)
        finally:
            p.in_flight, p.task = None, None
        self.on_change(*key)


def _secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}s"
