"""`WeightGate`: hold a rollout back until the served weights are new enough for it, and say so while waiting.

One gate per `args` (it lives on the GenerateState). The runner asks it before each rollout, and the
batch loop before each refill; both are no-ops without `max_staleness`. The served version is cached:
versions only rise while a job runs, so a reading that admitted rollout N still admits it, and the
source is asked again only when the cached version is too old. (A server that restarts on older
weights is caught when its tokens come back: the batch loop judges every finished group by its
oldest token and asks the gate to read the version again.)

While it waits, the gate reports `contract.WeightWait` through `reporter` (the runner points it at
its state store: the state ConfigMap in a cluster, so the RolloutJob shows `WaitingForWeights`),
once when the wait starts, again when the served version moves, and once when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from rollout_runtime.config import option
from rollout_runtime.contract import WeightWait, format_time
from rollout_runtime.staleness.rule import admits, oldest_allowed
from rollout_runtime.staleness.served import ServedReading, VersionSource, version_source

log = logging.getLogger(__name__)

Reporter = Callable[[WeightWait], None]


class WeightGate:
    """Waits until the served version admits a rollout (`rule.admits`); reports the wait."""

    def __init__(self, owner: Any) -> None:
        # `owner` (a GenerateState) holds `args` weakly; the gate must not keep args alive either.
        self._owner = owner
        self.served: int | None = None
        self.detail = ""
        self.reporter: Reporter | None = None
        self.attempt: int | None = None
        self.waited_seconds = 0.0  # in total, for the runner's metrics
        self._source: VersionSource | None = None
        self._source_loop: int | None = None

    @property
    def args(self) -> Any:
        return self._owner.args

    @property
    def max_staleness(self) -> int | None:
        return option(self.args, "max_staleness")

    def admits_cached(self, rollout_id: int) -> bool:
        return admits(self.served, rollout_id, self.max_staleness)

    async def refresh(self) -> ServedReading:
        """Read the served version from the source now."""
        loop = id(asyncio.get_running_loop())
        if self._source is None or self._source_loop != loop:  # HTTP sessions are bound to their loop
            self._source, self._source_loop = version_source(self.args), loop
        try:
            reading = await self._source.read()
        except Exception as exc:  # noqa: BLE001 - the API server or an engine is unreachable: try again later
            reading = ServedReading(None, f"could not read the served weight version: {exc}")
        self.served, self.detail = reading.version, reading.detail
        return reading

    async def wait(self, rollout_id: int) -> float:
        """Return once a group may start in `rollout_id`; the seconds waited (0.0 when it could at once)."""
        eta = self.max_staleness
        if eta is None or self.admits_cached(rollout_id):
            return 0.0
        await self.refresh()
        if self.admits_cached(rollout_id):
            return 0.0
        need = oldest_allowed(rollout_id, eta)
        started = time.monotonic()
        since = format_time()
        log.info("rollout %d waits for weight version %d (maxStaleness %d): %s", rollout_id, need, eta, self.detail)
        reported = self.served
        await self._report(WeightWait(waiting_for=need, served=self.served, rollout_id=rollout_id,
                                      attempt=self.attempt, since=since))
        interval = option(self.args, "weight_poll_interval") or self._poll_default()
        while True:
            await asyncio.sleep(interval)
            await self.refresh()
            if self.admits_cached(rollout_id):
                break
            if self.served != reported:
                reported = self.served
                await self._report(WeightWait(waiting_for=need, served=self.served, rollout_id=rollout_id,
                                              attempt=self.attempt, since=since))
        waited = time.monotonic() - started
        self.waited_seconds += waited
        log.info("rollout %d resumes after %.1fs: %s", rollout_id, waited, self.detail)
        await self._report(WeightWait(waiting_for=None, served=self.served, rollout_id=rollout_id,
                                      attempt=self.attempt, since=None))
        return waited

    def _poll_default(self) -> float:
        return self._source.poll_interval if self._source is not None else 0.5

    async def _report(self, wait: WeightWait) -> None:
        """Tell the reporter; a failed report is logged, never fatal (the wait itself goes on)."""
        if self.reporter is None:
            return
        try:
            await asyncio.to_thread(self.reporter, wait)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not report the weight wait: %s", exc)

    async def aclose(self) -> None:
        if self._source is not None:
            await self._source.aclose()
            self._source = None
