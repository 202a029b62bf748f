"""One reconcile of one SGLangPool: observe it, let `reconcile.sglangpool.decide_pool` decide, execute."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rollout_operator.builders.sglangpool import router_name, server_name
from rollout_operator.controller.cache import IndexCache
from rollout_operator.controller.children import UNCACHED, ChildApplier
from rollout_operator.controller.events import EventRecorder
from rollout_operator.controller.status import STALE_VIEW_RETRY, StatusWriter
from rollout_operator.constants import LABEL_POOL_ROLE, WEIGHTS_GATE
from rollout_operator.controller.weights import WeightSyncer
from rollout_operator.kube import CHILD_REFUSED, Conflict, KubeClient, NotFound, resource_path
from rollout_operator.reconcile.common import Result, deleting
from rollout_operator.reconcile.rejection import Rejection
from rollout_operator.reconcile.sglangpool import PoolObserved, PoolPlan, decide_pool
from rollout_operator.reconcile.sglangpool_weights import GatePatch
from rollout_operator.settings import OperatorConfig
from rollout_runtime.contract import POOL_KIND, format_time


class SGLangPoolReconciler:
    def __init__(self, config: OperatorConfig, client: KubeClient, cache: IndexCache, children: ChildApplier,
                 status: StatusWriter, events: EventRecorder, weights: WeightSyncer) -> None:
        self.config = config
        self.client = client
        self.cache = cache
        self.children = children
        self.status = status
        self.events = events
        self._rejections: dict[tuple[str, str], Rejection] = {}
        self.weights = weights

    async def reconcile(self, key: tuple[str, str]) -> Result:
        ns, name = key
        body = self.cache.pool(ns, name)
        if body is None or deleting(body):
            self._forget(ns, name)
            return Result()
        deployments = self.cache.pool_deployments(ns, name)
        obs = PoolObserved(body=body, server=deployments.get("server"), router=deployments.get("router"),
                           pods=self.cache.pool_pods(ns, name), now=datetime.now(UTC),
                           rejection=self._rejections.get(key),
                           weights=self.weights.observe(ns, name))
        plan = decide_pool(obs, self.config)
        return await self.execute(body, obs, plan)

    async def execute(self, body: dict[str, Any], obs: PoolObserved, plan: PoolPlan) -> Result:
        meta = body["metadata"]
        ns, uid = meta["namespace"], meta["uid"]
        likely_exists = bool((body.get("status") or {}).get("observedGeneration"))
        for manifest in plan.apply:
            cached: Any = UNCACHED
            if manifest["kind"] == "Deployment":
                role = manifest["metadata"]["labels"].get(LABEL_POOL_ROLE)
                cached = obs.server if role == "server" else obs.router
            try:
                await self.children.ensure(manifest, uid, cached, likely_exists)
            except CHILD_REFUSED as exc:
                if exc.namespace_terminating:
                    raise
                # Not a phase decision: an observation for the next pass, which fails the pool visibly,
                # naming the spec field (instead of retrying the same refused child forever).
                self._rejections[(ns, meta["name"])] = Rejection(meta.get("generation"), exc.message,
                                                                 manifest["kind"], manifest["metadata"]["name"],
                                                                 exc.causes)
                return Result(requeue_after=0)
        for api_version, kind, child in plan.delete:
            await self.children.ensure_absent(api_version, kind, ns, child,
                                              known_absent=kind == "Deployment" and obs.router is None)
        if not await self.status.patch(body, POOL_KIND, plan.status):
            return Result(requeue_after=STALE_VIEW_RETRY)
        # Only after the guarded status patch: it proves the decision was made from a fresh view.
        for gate in plan.gates:
            await self._set_gate(ns, gate)
        if plan.weights_sync is not None:
            self.weights.start(ns, meta["name"], plan.weights_sync)
        await self.events.post(body, POOL_KIND, plan.events)
        return Result(requeue_after=plan.requeue_after)

    async def _set_gate(self, ns: str, gate: GatePatch) -> None:
        """The readiness gate condition in the pod's status (a strategic merge: the kubelet's conditions stay)."""
        condition = {"type": WEIGHTS_GATE, "status": "True" if gate.status else "False", "reason": gate.reason,
                     "message": gate.message, "lastTransitionTime": format_time()}
        try:
            await self.client.strategic_patch(resource_path("v1", "Pod", ns, gate.pod, "status"),
                                              {"metadata": {"uid": gate.uid}, "status": {"conditions": [condition]}})
        except (NotFound, Conflict):
            pass  # the pod is gone, or another pod took its name (the uid precondition failed)

    def _forget(self, ns: str, name: str) -> None:
        """The SGLangPool is gone: drop what we remember (a new one may reuse the name)."""
        self.cache.forget(POOL_KIND, ns, name)
        self._rejections.pop((ns, name), None)
        self.children.forget(ns, {server_name(name), router_name(name)})
        self.weights.forget(ns, name)
