"""One reconcile of one RolloutJob: observe it, let `reconcile.rolloutjob.decide_job` decide, execute.

The order of execution is what makes it safe to stop at any point: the children that live as
long as the job first (state ConfigMap, RBAC), then status (the new attempt's identity goes into
status before its Job exists, guarded by the resourceVersion), then the fence on the ConfigMap,
then the Job, then deletions and events.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from rollout_operator.builders.rolloutjob import fence_patch, runtime_sa_name
from rollout_operator.controller.cache import IndexCache
from rollout_operator.controller.children import UNCACHED, ChildApplier
from rollout_operator.controller.events import EventRecorder
from rollout_operator.controller.status import STALE_VIEW_RETRY, StatusWriter
from rollout_operator.kube import CHILD_REFUSED, KubeClient, NotFound, resource_path
from rollout_operator.observe import slim_state
from rollout_operator.reconcile.common import Result, deleting, to_int
from rollout_operator.reconcile.rolloutjob import JobPlan, decide_job
from rollout_operator.reconcile.rolloutjob_observed import (
    JobObserved,
    JobRejection,
    committed_finished,
    job_attempt,
    job_complete,
)
from rollout_operator.settings import OperatorConfig
from rollout_runtime.contract import API_VERSION, ATTEMPT_ANNOTATION, JOB_KIND, decode_flat, state_configmap_name

log = logging.getLogger("rollout_operator")

#: The API server refuses the runtime Job as written (invalid pod settings, admission policy, quota):
#: the same spec would be refused again, so this is reported to the decision rather than retried.
JOB_REFUSED = CHILD_REFUSED


class RolloutJobReconciler:
    def __init__(self, config: OperatorConfig, client: KubeClient, cache: IndexCache, children: ChildApplier,
                 status: StatusWriter, events: EventRecorder) -> None:
        self.config = config
        self.client = client
        self.cache = cache
        self.children = children
        self.status = status
        self.events = events
        self._rejections: dict[tuple[str, str], JobRejection] = {}

    async def reconcile(self, key: tuple[str, str]) -> Result:
        ns, name = key
        body = self.cache.rolloutjob(ns, name)
        if body is None or deleting(body):
            self._forget(ns, name)
            return Result()
        obs = await self.observe(body)
        plan = decide_job(obs, self.config)
        return await self.execute(body, obs, plan)

    async def observe(self, body: dict[str, Any]) -> JobObserved:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        jobs: dict[int, dict[str, Any]] = {}
        for job in self.cache.batch_jobs(ns, name):
            attempt = job_attempt(job)
            if attempt is not None:
                jobs[attempt] = job
        state = self.cache.state_configmap(ns, name)
        current = to_int((body.get("status") or {}).get("attempt"), 0) or 0
        if job_complete(jobs.get(current)) and not committed_finished(decode_flat((state or {}).get("data"))):
            # The runtime commits `finished` before it exits 0; read the ConfigMap itself before
            # concluding that the attempt ended early (the watch may just be behind).
            state = await self._read_state(ns, name) or state
        pool_ref = ((body.get("spec") or {}).get("poolRef") or {}).get("name")
        return JobObserved(
            body=body,
            jobs=jobs,
            state=state,
            pool=self.cache.pool(ns, pool_ref) if pool_ref else None,
            pods=self.cache.job_pods(ns, name),
            now=datetime.now(UTC),
            rejection=self._rejections.get((ns, name)),
        )

    async def execute(self, body: dict[str, Any], obs: JobObserved, plan: JobPlan) -> Result:
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if plan.delete_self:
            await self.client.delete(resource_path(API_VERSION, JOB_KIND, ns, name))
            log.info("RolloutJob %s/%s: deleted after ttlSecondsAfterFinished", ns, name)
            return Result()
        likely_exists = bool((body.get("status") or {}).get("observedGeneration"))
        state = obs.state
        # The ConfigMap and RBAC objects are independent: create them concurrently.
        results = await asyncio.gather(*(
            self.children.ensure(m, uid, state if m["kind"] == "ConfigMap" else UNCACHED, likely_exists)
            for m in plan.ensure))
        for manifest, result in zip(plan.ensure, results, strict=True):
            if manifest["kind"] == "ConfigMap" and result is not None:
                state = slim_state(result)
                self.cache.remember("ConfigMap", state)
        # Identity first: the attempt number goes into status before its Job exists.
        if not await self.status.patch(body, JOB_KIND, plan.status):
            return Result(requeue_after=STALE_VIEW_RETRY)  # the next pass sees our or someone else's write
        if plan.fence is not None:
            await self._fence(ns, name, plan.fence, state)
        if plan.create_job is not None:
            try:
                await self.children.create(plan.create_job)
            except JOB_REFUSED as exc:
                if exc.namespace_terminating:
                    raise
                # Not a phase decision: an observation for the next pass, which fails the job visibly.
                job_meta = plan.create_job["metadata"]
                self._rejections[(ns, name)] = JobRejection(meta.get("generation"), exc.message, "Job",
                                                            job_meta["name"], exc.causes)
                return Result(requeue_after=0)
            self._rejections.pop((ns, name), None)
        for job_name in plan.delete_jobs:
            # Foreground: the Job stays (being deleted) until its pod is gone, so a resumed
            # attempt never overlaps the old pod.
            await self.client.delete(resource_path("batch/v1", "Job", ns, job_name), propagation="Foreground")
            log.info("RolloutJob %s/%s: deleting Job %s", ns, name, job_name)
        await self.events.post(body, JOB_KIND, plan.events)
        return Result(requeue_after=plan.requeue_after)

    async def _read_state(self, ns: str, job: str) -> dict[str, Any] | None:
        try:
            return slim_state(await self.client.get(resource_path("v1", "ConfigMap", ns, state_configmap_name(job))))
        except NotFound:
            return None

    async def _fence(self, ns: str, name: str, attempt: int, state: dict[str, Any] | None) -> None:
        """Raise the ConfigMap's attempt annotation (never lower it)."""
        current = to_int(((state or {}).get("metadata") or {}).get("annotations", {}).get(ATTEMPT_ANNOTATION), -1)
        if current is not None and current >= attempt:
            return
        patched = await self.client.merge_patch(resource_path("v1", "ConfigMap", ns, state_configmap_name(name)),
                                                fence_patch(attempt))
        self.cache.remember("ConfigMap", slim_state(patched))

    def _forget(self, ns: str, name: str) -> None:
        """The RolloutJob is gone: drop what we remember (a new one may reuse the name)."""
        self.cache.forget(JOB_KIND, ns, name)
        self._rejections.pop((ns, name), None)
        self.children.forget(ns, {state_configmap_name(name), runtime_sa_name(name)})
