"""A de-duplicating work queue with delayed re-adds (client-go's workqueue, in asyncio).

kopf delivers one call per watch event; a RolloutJob sees events from itself, its Jobs, its
ConfigMap, its pods and its pool. Reconciling once per event would repeat the same work many
times, and two events of one job could reconcile it concurrently. The queue fixes both: a key
is queued at most once, is never processed by two workers at the same time, and a key that
changes while it is being processed is processed once more afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._failures: dict[K, int] = {}

    def add(self, key: K) -> None:
        if key in self._queued:
            return
        if key in self._active:
            self._dirty.add(key)
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` after `delay` seconds; an earlier pending timer for it wins."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def backoff(self, key: K, base: float = 0.5, cap: float = 60.0) -> float:
        """Next retry delay for a failing key (exponential, capped)."""
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        return min(cap, base * 2 ** (n - 1))

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def depth(self) -> int:
        return len(self._queued)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
