"""The I/O half of reconciling: read kopf's indexes, run a pure decision, execute the plan.

kopf watches every kind the operator cares about and keeps slim copies in in-memory indexes
(`handlers.py`); its event handlers only enqueue keys. Workers here take keys off de-duplicating
queues, build an observation from the indexes (plus the bodies of our own most recent writes,
which the watch may not have delivered yet), call `reconcile.job.decide_job` /
`reconcile.pool.decide_pool`, and apply the result:

- children are created by name; on 409 the existing object is read, its owner checked, and
  patched only if its spec hash differs (safe to restart at any time, no duplicates);
- status is written with a JSON merge patch to the status subresource that carries the
  resourceVersion the decision was based on, so a decision made from a stale view is
  rejected (409) and re-made instead of applied;
- events are posted only on transitions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Hashable, Iterable
from datetime import UTC, datetime
from typing import Any

import kopf

from rollout_operator.builders.common import Manifest, hash_of
from rollout_operator.builders.job import state_name
from rollout_operator.constants import ANN_ATTEMPT, JOB_KIND, LABEL_JOB, MANAGED_BY, POOL_KIND
from rollout_operator.kube import ApiError, KubeClient, manifest_path, resource_path
from rollout_operator.metrics import Metrics
from rollout_operator.observe import resource_version, slim_custom, slim_state
from rollout_operator.reconcile.common import Event, deleting, status_patch, to_int
from rollout_operator.reconcile.job import JobObserved, JobPlan, decide_job, job_attempt, job_complete, state_finished
from rollout_operator.reconcile.pool import PoolObserved, PoolPlan, decide_pool
from rollout_operator.settings import OperatorConfig
from rollout_operator.workqueue import WorkQueue

log = logging.getLogger("rollout_operator")

# Names of the kopf indexes (the index functions in handlers.py).
IDX_JOBS = "rolloutjob_idx"
IDX_JOBS_BY_POOL = "rolloutjob_by_pool_idx"
IDX_POOLS = "sglangpool_idx"
IDX_BATCH = "batchjob_idx"
IDX_STATE = "statecm_idx"
IDX_DEPLOY = "deployment_idx"
IDX_PODS = "pod_idx"
INDEXES = (IDX_JOBS, IDX_JOBS_BY_POOL, IDX_POOLS, IDX_BATCH, IDX_STATE, IDX_DEPLOY, IDX_PODS)

API_VERSION = "kuberollout.io/v1alpha1"


class ChildConflict(Exception):
    """A child's name is taken by an object another owner controls."""


class Controller:
    def __init__(self, config: OperatorConfig, client: KubeClient | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.client = client or KubeClient(max_connections=max(8, config.workers * 2))
        self.metrics = metrics or Metrics()
        self.indexes: dict[str, Any] = {}
        self.ready = asyncio.Event()
        self.job_queue = WorkQueue("rolloutjob")
        self.pool_queue = WorkQueue("sglangpool")
        self._fresh: dict[tuple[str, str, str], dict[str, Any]] = {}  # our latest writes, by (kind, ns, name)
        self._ensured: dict[tuple[str, str, str, str], str] = {}  # uncached children -> applied hash
        self._tasks: list[asyncio.Task[None]] = []
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    # ------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for i in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._worker(self.job_queue, self.reconcile_job),
                                                   name=f"rolloutjob-worker-{i}"))
        for i in range(max(2, self.config.workers // 4)):
            self._tasks.append(asyncio.create_task(self._worker(self.pool_queue, self.reconcile_pool),
                                                   name=f"sglangpool-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.job_queue.close()
        self.pool_queue.close()
        await self.client.close()

    def capture(self, indexes: dict[str, Any]) -> None:
        """Keep kopf's index objects; called from every event handler (kopf passes them as kwargs).

        kopf runs no event handler before every index has its initial listing, so the first
        call is also the moment the workers may start reading.
        """
        if not self.ready.is_set():
            for name in INDEXES:
                if name in indexes:
                    self.indexes[name] = indexes[name]
            if all(name in self.indexes for name in INDEXES):
                self.ready.set()

    async def _worker(self, queue: WorkQueue, reconcile: Any) -> None:
        await self.ready.wait()
        while True:
            key = await queue.get()
            started = time.perf_counter()
            kind = queue.name
            try:
                requeue = await reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = queue.backoff(key)
                error = exc.reason if isinstance(exc, ApiError) and exc.reason else type(exc).__name__
                self.metrics.errors.labels(kind, error).inc()
                self.metrics.reconciles.labels(kind, "error").inc()
                level = logging.DEBUG if isinstance(exc, ApiError) and exc.status == 409 else logging.WARNING
                log.log(level, "reconcile %s %s failed (retry in %.1fs): %s", kind, key, delay, exc,
                        exc_info=not isinstance(exc, (ApiError, ChildConflict)))
                queue.add_after(key, delay)
            else:
                queue.forget(key)
                self.metrics.reconciles.labels(kind, "success").inc()
                if requeue is not None:
                    queue.add_after(key, requeue)
            finally:
                self.metrics.duration.labels(kind).observe(time.perf_counter() - started)
                queue.done(key)

    async def _resync(self) -> None:
        """Re-queue every object now and then, in case a watch event was ever missed.

        Children we do not watch (Services, ServiceAccounts, Roles, RoleBindings) are verified
        against the API again on each resync: forgetting what was applied makes the next
        reconcile re-create one that was deleted by hand, and re-patch one that was edited.
        """
        await self.ready.wait()
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            self._ensured.clear()
            for job in self.all_rolloutjobs():
                if (job.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    self.job_queue.add((job["metadata"]["namespace"], job["metadata"]["name"]))
            for pool in self.all_pools():
                self.pool_queue.add((pool["metadata"]["namespace"], pool["metadata"]["name"]))

    # ------------------------------------------------------------------------- reading

    def _store(self, index: str, key: Hashable) -> list[Any]:
        idx = self.indexes.get(index)
        if idx is None:
            return []
        store = idx.get(key)
        return list(store) if store is not None else []

    def _freshest(self, kind: str, ns: str, name: str, indexed: dict[str, Any] | None) -> dict[str, Any] | None:
        """The indexed object, or our own later write of it if the watch has not caught up."""
        key = (kind, ns, name)
        ours = self._fresh.get(key)
        if indexed is None:
            self._fresh.pop(key, None)
            return None
        if ours is not None and resource_version(ours) > resource_version(indexed):
            return ours
        self._fresh.pop(key, None)
        return indexed

    def get_rolloutjob(self, ns: str, name: str) -> dict[str, Any] | None:
        found = self._store(IDX_JOBS, (ns, name))
        return self._freshest(JOB_KIND, ns, name, found[0] if found else None)

    def get_pool(self, ns: str, name: str) -> dict[str, Any] | None:
        found = self._store(IDX_POOLS, (ns, name))
        return self._freshest(POOL_KIND, ns, name, found[0] if found else None)

    def get_state(self, ns: str, job: str) -> dict[str, Any] | None:
        found = self._store(IDX_STATE, (ns, job))
        return self._freshest("ConfigMap", ns, state_name(job), found[0] if found else None)

    def all_rolloutjobs(self) -> Iterable[dict[str, Any]]:
        idx = self.indexes.get(IDX_JOBS)
        if idx is None:
            return []
        return [v for store in idx.values() for v in store]

    def all_pools(self) -> Iterable[dict[str, Any]]:
        idx = self.indexes.get(IDX_POOLS)
        if idx is None:
            return []
        return [v for store in idx.values() for v in store]

    def jobs_of_pool(self, ns: str, pool: str) -> list[str]:
        return [str(name) for name in self._store(IDX_JOBS_BY_POOL, (ns, pool))]

    # ---------------------------------------------------------------------- RolloutJob

    async def reconcile_job(self, key: tuple[str, str]) -> float | None:
        ns, name = key
        body = self.get_rolloutjob(ns, name)
        if body is None or deleting(body):
            self._forget(JOB_KIND, ns, name)
            return None
        spec = body.get("spec") or {}
        jobs: dict[int, dict[str, Any]] = {}
        for job in self._store(IDX_BATCH, (ns, name)):
            attempt = job_attempt(job)
            if attempt is not None:
                jobs[attempt] = job
        state = self.get_state(ns, name)
        current = to_int((body.get("status") or {}).get("attempt"), 0) or 0
        if job_complete(jobs.get(current)) and not state_finished(state):
            # The runtime commits `finished` before it exits 0; read the ConfigMap itself before
            # concluding that the attempt ended early (the watch may just be behind).
            state = await self._read_state(ns, name) or state
        pool_ref = (spec.get("poolRef") or {}).get("name")
        obs = JobObserved(
            body=body,
            jobs=jobs,
            state=state,
            pool=self.get_pool(ns, pool_ref) if pool_ref else None,
            pods=self._store(IDX_PODS, ("job", ns, name)),
            now=datetime.now(UTC),
        )
        plan = decide_job(obs, self.config)
        return await self._execute_job(body, obs, plan)

    async def _read_state(self, ns: str, job: str) -> dict[str, Any] | None:
        try:
            return slim_state(await self.client.get(resource_path("v1", "ConfigMap", ns, state_name(job))))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _execute_job(self, body: dict[str, Any], obs: JobObserved, plan: JobPlan) -> float | None:
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if plan.delete_self:
            await self.client.delete(resource_path(API_VERSION, JOB_KIND, ns, name))
            log.info("RolloutJob %s/%s: deleted after ttlSecondsAfterFinished", ns, name)
            return None
        likely_exists = bool((body.get("status") or {}).get("observedGeneration"))
        state = obs.state
        # The ConfigMap and RBAC objects are independent: create them concurrently.
        results = await asyncio.gather(*(
            self._ensure(m, uid, state if m["kind"] == "ConfigMap" else _UNCACHED, likely_exists)
            for m in plan.ensure))
        for manifest, result in zip(plan.ensure, results):
            if manifest["kind"] == "ConfigMap" and result is not None:
                state = slim_state(result)
                self._remember("ConfigMap", state)
        # Identity first: the attempt number goes into status before its Job exists.
        events = list(plan.events)
        if not await self._patch_status(body, JOB_KIND, plan.status):
            return 0.05  # stale view; the next pass sees our or someone else's write
        if plan.fence is not None:
            state = await self._fence(ns, name, plan.fence, state)
        if plan.create_job is not None:
            try:
                await self._create(plan.create_job)
            except ApiError as exc:
                if exc.status not in (400, 422, 403):
                    raise
                await self._job_rejected(ns, name, exc)
                return None
        for job_name in plan.delete_jobs:
            # Foreground: the Job stays (being deleted) until its pod is gone, so a resumed
            # attempt never overlaps the old pod.
            await self.client.delete(resource_path("batch/v1", "Job", ns, job_name), propagation="Foreground")
            log.info("RolloutJob %s/%s: deleting Job %s", ns, name, job_name)
        await self._post_events(body, JOB_KIND, events)
        return plan.requeue_after

    async def _fence(self, ns: str, name: str, attempt: int, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """Raise the ConfigMap's attempt annotation (never lower it)."""
        current = to_int(((state or {}).get("metadata") or {}).get("annotations", {}).get(ANN_ATTEMPT), -1)
        if current is not None and current >= attempt:
            return state
        patched = await self.client.merge_patch(resource_path("v1", "ConfigMap", ns, state_name(name)),
                                                {"metadata": {"annotations": {ANN_ATTEMPT: str(attempt)}}})
        slim = slim_state(patched)
        self._remember("ConfigMap", slim)
        return slim

    async def _job_rejected(self, ns: str, name: str, exc: ApiError) -> None:
        """The API server refused the Job (invalid runtime settings, quota): fail visibly."""
        body = self.get_rolloutjob(ns, name)
        if body is None:
            return
        message = f"the API server rejected the runtime Job: {exc.message}"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        old = body.get("status") or {}
        conditions = [c for c in old.get("conditions") or [] if c.get("type") not in ("Failed", "Running")]
        conditions += [
            {"type": "Failed", "status": "True", "reason": "JobRejected", "message": message[:32000],
             "lastTransitionTime": now, "observedGeneration": body["metadata"].get("generation")},
            {"type": "Running", "status": "False", "reason": "JobRejected", "message": message[:32000],
             "lastTransitionTime": now, "observedGeneration": body["metadata"].get("generation")},
        ]
        status = {**old, "phase": "Failed", "reason": "JobRejected", "message": message, "completionTime": now,
                  "conditions": sorted(conditions, key=lambda c: c["type"])}
        status.pop("jobName", None)
        await self._patch_status(body, JOB_KIND, status)
        await self._post_events(body, JOB_KIND, [Event("Warning", "JobRejected", message)])

    # ----------------------------------------------------------------------- SGLangPool

    async def reconcile_pool(self, key: tuple[str, str]) -> float | None:
        ns, name = key
        body = self.get_pool(ns, name)
        if body is None or deleting(body):
            self._forget(POOL_KIND, ns, name)
            return None
        deployments = {d["metadata"].get("labels", {}).get("kuberollout.io/role"): d
                       for d in self._store(IDX_DEPLOY, (ns, name))}
        obs = PoolObserved(body=body, server=deployments.get("server"), router=deployments.get("router"),
                           pods=self._store(IDX_PODS, ("pool", ns, name)), now=datetime.now(UTC))
        plan = decide_pool(obs, self.config)
        await self._execute_pool(body, obs, plan)
        return None

    async def _execute_pool(self, body: dict[str, Any], obs: PoolObserved, plan: PoolPlan) -> None:
        meta = body["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        likely_exists = bool((body.get("status") or {}).get("observedGeneration"))
        for manifest in plan.apply:
            cached: Any = _UNCACHED
            if manifest["kind"] == "Deployment":
                role = manifest["metadata"]["labels"].get("kuberollout.io/role")
                cached = obs.server if role == "server" else obs.router
            await self._ensure(manifest, uid, cached, likely_exists)
        for api_version, kind, child in plan.delete:
            key = (api_version, kind, ns, child)
            if self._ensured.get(key) == "deleted":
                continue
            if kind == "Deployment" and obs.router is None:
                self._ensured[key] = "deleted"
                continue
            await self.client.delete(resource_path(api_version, kind, ns, child))
            self._ensured[key] = "deleted"
        if not await self._patch_status(body, POOL_KIND, plan.status):
            self.pool_queue.add_after((ns, meta["name"]), 0.05)
            return
        await self._post_events(body, POOL_KIND, plan.events)

    # ------------------------------------------------------------------------- writing

    async def _ensure(self, manifest: Manifest, owner_uid: str, cached: Any, likely_exists: bool
                      ) -> dict[str, Any] | None:
        """Make the child exist as desired; returns the object if it was created or patched."""
        meta = manifest["metadata"]
        key = (manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        desired = hash_of(manifest)
        if cached is not _UNCACHED:
            if cached is not None and hash_of(cached) == desired:
                self._check_owner(cached, owner_uid, manifest)
                return None
            likely_exists = cached is not None
        elif self._ensured.get(key) == desired:
            return None
        result: dict[str, Any] | None = None
        if not likely_exists:
            try:
                result = await self._create(manifest)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                likely_exists = True
        if likely_exists:
            try:
                current = await self.client.get(manifest_path(manifest))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                result = await self._create(manifest)
            else:
                self._check_owner(current, owner_uid, manifest)
                if hash_of(current) != desired:
                    result = await self.client.merge_patch(manifest_path(manifest), _patchable(manifest))
                    log.info("updated %s %s/%s", manifest["kind"], meta["namespace"], meta["name"])
        self._ensured[key] = desired or ""
        return result

    async def _create(self, manifest: Manifest) -> dict[str, Any] | None:
        meta = manifest["metadata"]
        try:
            created = await self.client.create(manifest)
        except ApiError as exc:
            if exc.status == 409 and manifest["kind"] == "Job":
                return None  # same name = same attempt: it exists already
            raise
        log.info("created %s %s/%s", manifest["kind"], meta["namespace"], meta["name"])
        return created

    @staticmethod
    def _check_owner(obj: dict[str, Any], owner_uid: str, manifest: Manifest) -> None:
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        controllers = [r for r in refs if r.get("controller")]
        if controllers and controllers[0].get("uid") != owner_uid:
            meta = manifest["metadata"]
            raise ChildConflict(
                f"{manifest['kind']} {meta['namespace']}/{meta['name']} belongs to another "
                f"{controllers[0].get('kind')} (uid {controllers[0].get('uid')}); waiting for it to be deleted")

    async def _patch_status(self, body: dict[str, Any], kind: str, new: dict[str, Any]) -> bool:
        """Merge-patch status with the observed resourceVersion as precondition; False on conflict."""
        patch = status_patch(body.get("status"), new)
        if not patch:
            return True
        meta = body["metadata"]
        path = resource_path(API_VERSION, kind, meta["namespace"], meta["name"], "status")
        try:
            result = await self.client.merge_patch(path, {"metadata": {"resourceVersion": meta["resourceVersion"]},
                                                          "status": patch})
        except ApiError as exc:
            if exc.status == 409:
                await self._refresh(kind, meta["namespace"], meta["name"])
                return False
            if exc.status == 404:
                return False
            raise
        self._remember(kind, slim_custom(result))
        return True

    async def _refresh(self, kind: str, ns: str, name: str) -> None:
        try:
            fresh = await self.client.get(resource_path(API_VERSION, kind, ns, name))
        except ApiError:
            return
        self._remember(kind, slim_custom(fresh))

    def _remember(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self._fresh[(kind, meta.get("namespace", ""), meta.get("name", ""))] = obj

    def _forget(self, kind: str, ns: str, name: str) -> None:
        """Drop what we remember about a deleted object and its children (a new one may reuse the name)."""
        self._fresh.pop((kind, ns, name), None)
        children = {f"{name}{suffix}" for suffix in ("-state", "-runtime", "-server", "-router")}
        for key in [k for k in self._ensured if k[2] == ns and k[3] in children]:
            self._ensured.pop(key, None)

    async def _post_events(self, body: dict[str, Any], kind: str, events: list[Event]) -> None:
        if not events:
            return
        meta = body["metadata"]
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        for ev in events:
            log.log(logging.WARNING if ev.type == "Warning" else logging.INFO, "%s %s/%s: %s: %s", kind,
                    meta["namespace"], meta["name"], ev.reason, ev.message)
            self.metrics.events.labels(kind, ev.type, ev.reason).inc()
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": API_VERSION, "kind": kind, "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "type": ev.type,
                "reason": ev.reason,
                "message": ev.message[:1024],
                "source": {"component": MANAGED_BY},
                "reportingComponent": "kuberollout.io/operator",
                "reportingInstance": self.instance,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            try:
                await self.client.request("POST", resource_path("v1", "Event", meta["namespace"]), event)
            except (TimeoutError, ApiError, OSError) as exc:
                log.debug("could not post event %s: %s", ev.reason, exc)


def _patchable(manifest: Manifest) -> Manifest:
    """The manifest as a merge patch: never touches the state ConfigMap's fencing annotation."""
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    if ANN_ATTEMPT not in annotations:
        return manifest
    patch = {**manifest, "metadata": {**manifest["metadata"],
                                      "annotations": {k: v for k, v in annotations.items() if k != ANN_ATTEMPT}}}
    return patch


class _Uncached:
    """Marker: this kind of child is not watched; remember what was applied instead."""


_UNCACHED: Any = _Uncached()


def enqueue_owner_job(controller: Controller, namespace: str, labels: dict[str, str]) -> None:
    owner = labels.get(LABEL_JOB)
    if owner:
        controller.job_queue.add((namespace, owner))


__all__ = ["ChildConflict", "Controller", "enqueue_owner_job", "kopf"]
