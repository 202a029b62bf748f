"""Rollout idle time, measured at the engines: how long each engine decoded nothing.

A background thread polls every engine's `/v1/loads` (SGLang's load snapshot) and counts an interval
as idle for an engine when it had no running request. `take()` returns the idle seconds accumulated
since the previous call, averaged over the engines: the rollout side's idle time for one training
step (waiting for weights, paused for an update, or starved of work).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request


class IdleMeter:
    def __init__(self, engine_urls: list[str], interval: float = 0.1) -> None:
        self.urls = list(engine_urls)
        self.interval = interval
        self._idle = [0.0] * len(self.urls)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-meter", daemon=True)

    def __enter__(self) -> IdleMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _running(self, url: str) -> int | None:
        try:
            with urllib.request.urlopen(f"{url}/v1/loads?include=core", timeout=2) as r:
                loads = json.loads(r.read())["loads"]
            return sum(int(x.get("num_running_reqs", 0)) for x in loads)
        except (OSError, ValueError, KeyError):
            return None  # unknown: counted as neither busy nor idle

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            running = [self._running(u) for u in self.urls]
            now = time.monotonic()
            with self._lock:
                for i, n in enumerate(running):
                    if n == 0:
                        self._idle[i] += now - last
            last = now

    def take(self) -> float:
        """Mean idle seconds per engine since the last `take()`."""
        with self._lock:
            total, self._idle = sum(self._idle), [0.0] * len(self.urls)
        return total / max(1, len(self.urls))
