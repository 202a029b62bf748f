"""SGLang's two gates in front of generation: the weight-update lock and the pause flags.

* :class:`RWLock` is ``sglang/srt/utils/aio_rwlock.py``'s writer-preferring lock, which
  ``TokenizerManager.model_update_lock`` is: every /generate (health checks included) holds the
  reader side for its whole life; ``/update_weights_from_disk`` on a server that is not paused
  takes the writer side, so it waits for the requests in flight to finish and new ones (and health
  checks) wait behind it. Unlike the original it takes the reader side without awaiting when no
  writer is active or waiting (the hot path of every request).
* :class:`Pause` holds the two pause flags: the tokenizer's ``is_pause`` (``/pause_generation`` in
  any mode: new requests wait before they are tokenized) and the scheduler's ``_engine_paused``
  (modes ``retract`` and ``in_place`` only: no decode step runs). It also keeps a clock that stops
  while the scheduler is paused, so the simulated engine's token timing freezes with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

PauseMode = Literal["abort", "retract", "in_place"]


class RWLock:
    """Writer-preferring asyncio reader/writer lock (see module docstring)."""

    def __init__(self) -> None:
        self.readers = 0
        self.writer_active = False
        self.waiting_writers = 0
        self._changed: asyncio.Future[None] | None = None

    def _notify(self) -> None:
        fut, self._changed = self._changed, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _wait_change(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    async def acquire_read(self) -> None:
        while self.writer_active or self.waiting_writers > 0:
            await self._wait_change()
        self.readers += 1

    def release_read(self) -> None:
        self.readers -= 1
        if self.readers == 0:
            self._notify()

    async def acquire_write(self) -> None:
        self.waiting_writers += 1
        try:
            while self.writer_active or self.readers > 0:
                await self._wait_change()
            self.writer_active = True
        finally:
            self.waiting_writers -= 1
            if not self.writer_active:  # cancelled while waiting: readers may go on
                self._notify()

    def release_write(self) -> None:
        self.writer_active = False
        self._notify()

    def is_locked(self) -> bool:
        return self.writer_active or self.readers > 0

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        if self.writer_active or self.waiting_writers > 0:
            await self.acquire_read()
        else:
            self.readers += 1
        try:
            yield
        finally:
            self.release_read()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        await self.acquire_write()
        try:
            yield
        finally:
            self.release_write()


class Pause:
    """The tokenizer's and the scheduler's pause flags, and a clock that stops with the scheduler."""

    def __init__(self) -> None:
        self.is_paused = False  # TokenizerManager.is_pause
        self.mode: PauseMode | None = None  # the scheduler's pause (retract / in_place), else None
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._paused_total = 0.0
        self._paused_since: float | None = None
        self._sleepers: set[asyncio.Future[None]] = set()
        self._resume_waiters: set[asyncio.Future[None]] = set()

    @property
    def scheduler_paused(self) -> bool:
        return self.mode is not None

    async def wait_unpaused(self) -> None:
        """Where a new /generate waits (``generate_request``: ``is_pause_cond.wait_for``)."""
        while self.is_paused:
            await self._unpaused.wait()

    async def wait_resumed(self) -> None:
        """Where a decode loop waits while the scheduler is paused."""
        while self.mode is not None:
            await self._resumed.wait()

    def pause(self, mode: PauseMode) -> None:
        self.is_paused = True
        self._unpaused.clear()
        if mode != "abort" and self.mode is None:
            self.mode = mode
            self._resumed.clear()
            self._paused_since = time.monotonic()
            sleepers, self._sleepers = self._sleepers, set()
            for fut in sleepers:
                if not fut.done():
                    fut.set_result(None)
        elif mode != "abort":
            self.mode = mode

    def resume(self) -> None:
        self.is_paused = False
        self._unpaused.set()
        if self.mode is not None:
            assert self._paused_since is not None
            self._paused_total += time.monotonic() - self._paused_since
            self._paused_since = None
            self.mode = None
            self._resumed.set()
            waiters, self._resume_waiters = self._resume_waiters, set()
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def clock(self) -> float:
        """Monotonic seconds that do not advance while the scheduler is paused."""
        now = time.monotonic()
        if self._paused_since is not None:
            now = self._paused_since
        return now - self._paused_total

    def add_sleeper(self, fut: asyncio.Future[None]) -> None:
        """Resolve ``fut`` when the scheduler pauses (a decode loop's sleep must stop then)."""
        self._sleepers.add(fut)

    def remove_sleeper(self, fut: asyncio.Future[None]) -> None:
        self._sleepers.discard(fut)
        self._resume_waiters.discard(fut)

    def add_resume_waiter(self, fut: asyncio.Future[None]) -> None:
        """Resolve ``fut`` when the scheduler resumes."""
        self._resume_waiters.add(fut)
