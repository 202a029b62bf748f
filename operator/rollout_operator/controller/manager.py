"""The Controller: work queues, the workers that run reconciles, and the periodic resync.

One mechanism requeues: every reconcile returns a `reconcile.common.Result`, and the worker
re-adds the key after `requeue_after` (controller-runtime's model); a reconcile that raises is
retried with the queue's exponential backoff. Reconcilers never touch the queues themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from rollout_operator.controller.cache import IndexCache
from rollout_operator.controller.children import ChildApplier, ChildConflict
from rollout_operator.controller.events import EventRecorder
from rollout_operator.controller.rolloutjob import RolloutJobReconciler
from rollout_operator.controller.sglangpool import SGLangPoolReconciler
from rollout_operator.controller.status import StatusWriter
from rollout_operator.controller.weights import WeightSyncer
from rollout_operator.api.rolloutjob_status import TERMINAL_PHASES
from rollout_operator.kube import ApiError, Conflict, KubeClient, NotFound, resource_path
from rollout_operator.metrics import Metrics
from rollout_operator.reconcile.common import Result
from rollout_operator.settings import OperatorConfig
from rollout_operator.workqueue import WorkQueue
from rollout_runtime.contract import API_VERSION, JOB_KIND, POOL_KIND

log = logging.getLogger("rollout_operator")

Key = tuple[str, str]
Reconcile = Callable[[Key], Awaitable[Result]]


class Controller:
    """Wires the cache, the reconcilers and the queues; implements metrics.OperatorView."""

    def __init__(self, config: OperatorConfig, client: KubeClient | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.client = client or KubeClient(max_connections=max(8, config.workers * 2))
        self.metrics = metrics or Metrics()
        self.cache = IndexCache()
        self.children = ChildApplier(self.client)
        status = StatusWriter(self.client, self.cache)
        events = EventRecorder(self.client, self.metrics)
        self.jobs = RolloutJobReconciler(config, self.client, self.cache, self.children, status, events)
        self.weights = WeightSyncer(lambda ns, name: self.pool_queue.add((ns, name)),
                                    timeout=config.weights_pause_budget_seconds)
        self.pools = SGLangPoolReconciler(config, self.client, self.cache, self.children, status, events, self.weights)
        self.job_queue: WorkQueue[Key] = WorkQueue("rolloutjob")
        self.pool_queue: WorkQueue[Key] = WorkQueue("sglangpool")
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for i in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._worker(self.job_queue, self.jobs.reconcile, JOB_KIND),
                                                   name=f"rolloutjob-worker-{i}"))
        for i in range(max(2, self.config.workers // 4)):
            self._tasks.append(asyncio.create_task(self._worker(self.pool_queue, self.pools.reconcile, POOL_KIND),
                                                   name=f"sglangpool-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.job_queue.close()
        self.pool_queue.close()
        await self.weights.close()
        await self.client.close()

    def capture(self, indexes: dict[str, Any]) -> None:
        """Hand kopf's indexes to the cache (called from every event handler)."""
        self.cache.capture(indexes)

    async def _worker(self, queue: WorkQueue[Key], reconcile: Reconcile, resource_kind: str) -> None:
        await self.cache.ready.wait()
        while True:
            key = await queue.get()
            started = time.perf_counter()
            kind = queue.name
            try:
                result = await reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, NotFound) and await self._gone(resource_kind, key):
                    log.debug("reconcile %s %s: the object is gone (%s)", kind, key, exc)
                    queue.forget(key)
                    continue
                delay = queue.backoff(key)
                error = exc.reason if isinstance(exc, ApiError) and exc.reason else type(exc).__name__
                self.metrics.errors.labels(kind, error).inc()
                self.metrics.reconciles.labels(kind, "error").inc()
                level = logging.DEBUG if isinstance(exc, Conflict) else logging.WARNING
                log.log(level, "reconcile %s %s failed (retry in %.1fs): %s", kind, key, delay, exc,
                        exc_info=not isinstance(exc, (ApiError, ChildConflict)))
                queue.add_after(key, delay)
            else:
                queue.forget(key)
                self.metrics.reconciles.labels(kind, "success").inc()
                if result.requeue_after is not None:
                    queue.add_after(key, result.requeue_after)
            finally:
                self.metrics.duration.labels(kind).observe(time.perf_counter() - started)
                queue.done(key)

    async def _gone(self, resource_kind: str, key: Key) -> bool:
        """After a 404 in a reconcile: whether the object itself is gone from the API server (e.g. its
        namespace was deleted with everything in it). Its watch delete is then on its way and there is
        nothing to retry, whatever the 404 was about. Unsure (the read fails): not gone, retry."""
        try:
            return not await self.client.exists(resource_path(API_VERSION, resource_kind, *key))
        except Exception as exc:  # noqa: BLE001 - the retry path handles whatever this was
            log.debug("could not check whether %s %s still exists: %s", resource_kind, key, exc)
            return False

    async def _resync(self) -> None:
        """Re-queue every object now and then, in case a watch event was ever missed.

        Children we do not watch (Services, ServiceAccounts, Roles, RoleBindings) are verified
        against the API again on each resync: forgetting what was applied makes the next
        reconcile re-create one that was deleted by hand, and re-patch one that was edited.
        """
        await self.cache.ready.wait()
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            self.children.reset()
            for job in self.cache.all_rolloutjobs():
                if (job.get("status") or {}).get("phase") not in TERMINAL_PHASES:
                    self.job_queue.add((job["metadata"]["namespace"], job["metadata"]["name"]))
            for pool in self.cache.all_pools():
                self.pool_queue.add((pool["metadata"]["namespace"], pool["metadata"]["name"]))

    # ------------------------------------------------------------- enqueueing (handlers.py)

    def enqueue_rolloutjob(self, ns: str, name: str) -> None:
        self.job_queue.add((ns, name))

    def enqueue_pool(self, ns: str, name: str, *, with_jobs: bool = False) -> None:
        """Reconcile a pool; `with_jobs`: and the RolloutJobs that use it (its status changed)."""
        self.pool_queue.add((ns, name))
        if with_jobs:
            for job in self.cache.jobs_of_pool(ns, name):
                self.job_queue.add((ns, job))

    # ------------------------------------------------------------ metrics.OperatorView

    def all_rolloutjobs(self) -> Iterable[dict[str, Any]]:
        return self.cache.all_rolloutjobs()

    def all_pools(self) -> Iterable[dict[str, Any]]:
        return self.cache.all_pools()

    def queue_depths(self) -> Mapping[str, int]:
        return {q.name: q.depth() for q in (self.job_queue, self.pool_queue)}

    def api_request_counts(self) -> Mapping[tuple[str, int], int]:
        return self.client.stats.counts
