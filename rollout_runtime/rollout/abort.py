"""Ending a rollout: tell the engines to stop, then drain (or cancel) what is still in flight.

When the batch is full, every worker the router lists is told to abort (the router itself has no
`/abort_request`), and in-flight calls return with finish_reason abort. With `partial_rollout` the
unfinished groups come back whole for the buffer and continue later from `sample.tokens`.

Where we differ from slime: without partial rollout the discarded groups are cancelled instead of
waited on (their reward calls would be thrown away); `abort_scope: own` aborts only this runtime's
requests, by rid, so other jobs sharing the engine pool keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from rollout_runtime.config import option
from rollout_runtime.http_client import EngineError
from rollout_runtime.rollout.generate import GenerateState
from rollout_runtime.rollout.workers import worker_urls
from rollout_runtime.types import Sample

log = logging.getLogger(__name__)


class _UnreachableWorkers:
    """Workers whose abort_request failed: one clear warning each, then quiet until they answer again.

    The router keeps listing a worker that died until its health checks remove it, so every
    rollout's abort used to warn about it again. Aborts are still sent (a worker that is only slow
    must still stop), but repeated failures of the same worker are logged at debug level.
    """

    def __init__(self) -> None:
        self.urls: set[str] = set()

    def failed(self, url: str, exc: Exception) -> None:
        if url in self.urls:
            log.debug("abort_request to %s failed again: %s", url, exc)
            return
        self.urls.add(url)
        log.warning("abort_request to worker %s failed: %s. The router still lists it (GET /workers); if the worker "
                    "is gone, the router drops it once its health checks fail. Not warning about it again until it "
                    "answers", url, exc)

    def answered(self, url: str) -> None:
        if url in self.urls:
            self.urls.discard(url)
            log.info("worker %s answers abort_request again", url)


_UNREACHABLE = _UnreachableWorkers()


async def _worker_urls(state: GenerateState) -> list[str]:
    """Workers behind the router (`GET /workers`), or the URL itself when it is a single engine."""
    return await worker_urls(state.client, state.args.router_url)


def _count_requests(loads: Any) -> int:
    """Requests still running or queued, from any of the /v1/loads shapes slime accepts."""
    entries = loads.get("loads") if isinstance(loads, dict) and isinstance(loads.get("loads"), list) else [loads]
    total = 0
    for e in entries:
        if not isinstance(e, dict):
            continue
        for key in ("num_reqs", "num_total_reqs", "total_reqs"):
            if key in e:
                total += int(e[key] or 0)
                break
        else:
            running = e.get("num_running_reqs", e.get("total_running_reqs", 0)) or 0
            waiting = e.get("num_waiting_reqs", e.get("total_waiting_reqs", 0)) or 0
            total += int(running) + int(waiting)
    return total


async def _abort_until_idle(state: GenerateState, url: str) -> None:
    args = state.args
    wait_timeout = option(args, "abort_wait_timeout")
    poll_interval = option(args, "abort_poll_interval")
    deadline = time.monotonic() + wait_timeout
    # Aborted requests usually drain within a decode step: poll soon, then back off to
    # abort_poll_interval, so a rollout does not end with a fixed idle wait (slime waits 3 s).
    delay = 0.005
    while True:
        try:
            await state.client.post(f"{url}/abort_request", {"abort_all": True}, max_retries=0)
        except EngineError as exc:
            _UNREACHABLE.failed(url, exc)
        else:
            _UNREACHABLE.answered(url)
        try:
            loads = await state.client.get(f"{url}/v1/loads?include=core")
        except EngineError:
            return  # no load endpoint: the abort was sent, nothing to poll
        if _count_requests(loads) == 0:
            return
        if time.monotonic() > deadline:
            log.warning("%s still reports %d requests %.0fs after abort; continuing", url, _count_requests(loads),
                        wait_timeout)
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, poll_interval)


async def _abort_own(state: GenerateState, urls: list[str]) -> None:
    """Abort only this state's requests: each in-flight rid, sent to every worker (an unknown rid is a
    no-op there). Exact rids, because SGLang's tokenizer manager ignores rids it does not track, so a
    prefix would not reach the scheduler. No /v1/loads poll: other tenants' requests keep the engine
    busy; draining our own tasks is the wait."""
    sem = asyncio.Semaphore(64)

    async def one(url: str, rid: str) -> None:
        async with sem:
            try:
                await state.client.post(f"{url}/abort_request", {"rid": rid}, max_retries=0)
            except EngineError as exc:
                _UNREACHABLE.failed(url, exc)
            else:
                _UNREACHABLE.answered(url)

    await asyncio.gather(*(one(u, rid) for rid in list(state.inflight_rids) for u in urls))


async def abort(args: Any, rollout_id: int) -> list[list[Sample]]:
    """Stop generation: abort every worker, then drain pending groups.

    With partial rollout, drained groups are returned for the buffer (whole, with mixed
    statuses). Without it, pending groups are cancelled: their outputs would be thrown
    away, so there is no point waiting on their reward calls.
    """
    state = GenerateState(args)
    assert not state.aborted
    state.aborted = True
    partial = args.partial_rollout
    if not partial:
        for task in state.pendings:
            task.cancel()
    urls = await _worker_urls(state)
    if option(args, "abort_scope") == "own":
        await _abort_own(state, urls)
    else:
        await asyncio.gather(*(_abort_until_idle(state, u) for u in urls))
    recycled: list[list[Sample]] = []
    if state.pendings:
        done, _ = await asyncio.wait(state.pendings)
        for task in done:
            if task.cancelled():
                state.discarded.append(state.task_groups.get(task, []))
                continue
            exc = task.exception()
            if exc is not None:
                raise exc
            if partial:
                recycled.append(task.result())
            else:
                state.discarded.append(task.result())
    state.pendings = set()
    return recycled
