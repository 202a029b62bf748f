"""Running an engine (or a cluster of them) from synchronous code, tests and CLIs.

:class:`ServerThread` runs any async-started object with an async ``stop()`` in a daemon thread
with its own event loop; :func:`run_until_signal` is the CLIs' main loop (stop cleanly on SIGINT or
SIGTERM).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Self


async def _call_stop(value: Any) -> None:
    """Default shutdown: engines and clusters all have an async ``stop()``."""
    await value.stop()


class ServerThread:
    """An asyncio server running in a daemon thread, for synchronous code and tests.

    ``value`` is whatever the async factory returned (an engine or a cluster); ``url`` its URL.
    """

    def __init__(self, factory: Callable[[], Awaitable[Any]],
                 stop: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self._factory = factory
        self._stop_fn = stop or _call_stop
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.value: Any = None
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kuberollout-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("engine failed to start") from self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._stop_event = asyncio.Event()
            try:
                self.value = await self._factory()
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            await self._stop_event.wait()
            await self._stop_fn(self.value)

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    @property
    def url(self) -> str:
        return str(self.value.url)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self._stop_event is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def run_until_signal(start: Callable[[], Awaitable[Any]], stop: Callable[[Any], Awaitable[None]]) -> None:
    """Start something, then wait for SIGINT/SIGTERM and stop it cleanly (CLI entry points)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, done.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread / Windows
            pass
    value = await start()
    try:
        await done.wait()
    finally:
        await stop(value)
