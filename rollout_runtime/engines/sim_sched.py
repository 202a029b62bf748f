"""When the simulated engine's tokens appear: decode slots, and sleeps that stop with a pause.

* :class:`Slots`: ``max_running_requests`` as FIFO admission; a waiting request can be aborted.
* :func:`sleep_until` / :func:`hold`: a request sleeps on the pause-aware clock of
  :class:`~rollout_runtime.engines.locks.Pause` until its next tokens are due; an abort or a scheduler
  pause wakes it early, and while paused it holds (a ``retract`` pause puts it back in the running
  batch when generation continues).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from .backend import RequestState


class Slots:
    """FIFO admission with a fixed number of running slots; waiting requests can be aborted."""

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, state: RequestState) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        state.on_abort(lambda: fut.cancel() if not fut.done() else None)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled
            if state.aborted:
                return False
            raise
        return True

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1

    def num_waiting(self) -> int:
        return sum(1 for f in self.waiters if not f.done())


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _wait(state: RequestState, register: Callable[[asyncio.Future[None]], None], delay: float | None) -> None:
    """Sleep until woken (abort, or what ``register`` arranges) or ``delay`` seconds pass."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    state._waker = fut
    register(fut)
    handle = loop.call_later(delay, _resolve, fut) if delay is not None else None
    try:
        await fut
    finally:
        if handle is not None:
            handle.cancel()
        state._waker = None
        state.pause.remove_sleeper(fut)


async def sleep_until(state: RequestState, when: float) -> None:
    """Sleep until the pause-aware clock reads ``when``; an abort or a pause ends it early."""
    delay = when - state.pause.clock()
    if delay > 0 and not state.aborted and state.pause.mode is None:
        await _wait(state, state.pause.add_sleeper, delay)


async def hold(state: RequestState) -> None:
    """Wait out a scheduler pause; a retracted request rejoins the running batch afterwards."""
    pause = state.pause
    while pause.mode is not None and not state.abort_effective:
        await _wait(state, pause.add_resume_waiter, None)
    if not state.running and not state.aborted and pause.mode is None and state.retractions:
        state.running = True
