"""One persistent background event loop for the synchronous rollout entry points.

slime's `generate_rollout` is synchronous and runs its coroutines on a process-wide loop
thread, so the semaphore, the pooled HTTP client and any pending tasks live on one loop
across rollouts. We keep that shape (it is what slime callers expect) but make the loop
an object that can be closed, instead of a hidden singleton.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class AsyncLoopThread:
    """A daemon thread running an event loop; `run(coro)` blocks until the coroutine ends."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="rollout-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def _shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(_shutdown(), self.loop).result(timeout=5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


_LOOP: AsyncLoopThread | None = None
_LOCK = threading.Lock()


def get_async_loop() -> AsyncLoopThread:
    """The shared rollout loop thread, started on first use (slime's name; `.loop` is the asyncio loop)."""
    global _LOOP
    with _LOCK:
        if _LOOP is None or _LOOP.loop.is_closed():
            _LOOP = AsyncLoopThread()
            atexit.register(_LOOP.close)
        return _LOOP


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the shared rollout loop and wait for it (slime's `async_utils.run`)."""
    return get_async_loop().run(coro)
