"""kopf wiring: what is watched, what is indexed, and the operator's settings.

Every watched kind has an index (a slim in-memory copy, see `observe.py`) and an event handler
that only enqueues the key of the object to reconcile. kopf guarantees that no event handler
runs before all indexes hold their initial listing, which is what makes reconciling from the
indexes safe right after a restart.

No change-detecting handlers (`on.create/update/resume`) and no timers or daemons: the
reconcile is level-based (it compares desired with observed on every pass, so restarts simply
re-queue everything from the initial listing), nothing of kopf's bookkeeping lands in
annotations or status, and no finalizer blocks deleting a RolloutJob while the operator is down.
Handlers return nothing, so kopf never writes handler results into status.

Run with `rollout-operator` (see cli.py), or `kopf run -m rollout_operator.handlers`.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from rollout_operator import kopf_fixes
from rollout_operator.constants import ANN_PROGRESS_PREFIX, LABEL_JOB, LABEL_MANAGED_BY, LABEL_POOL, MANAGED_BY
from rollout_operator.controller.manager import Controller
from rollout_operator.kube import default_login
from rollout_operator.observe import slim_custom, slim_deployment, slim_job, slim_pod, slim_state
from rollout_operator.settings import OperatorConfig
from rollout_runtime.contract import GROUP, JOB_PLURAL, POOL_PLURAL, VERSION, state_configmap_name

log = logging.getLogger("rollout_operator")

kopf_fixes.apply()  # before kopf.operator() starts its namespace observer

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


def _controller(memo: Any) -> Controller:
    return memo["controller"] if isinstance(memo, dict) else memo.controller


# ------------------------------------------------------------------------------- setup


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config") or OperatorConfig()
    # kopf's own bookkeeping, should any ever be written: annotations under our prefix, never status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANN_PROGRESS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANN_PROGRESS_PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # We post our own events with reasons; kopf's per-handler events would only add noise.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = MANAGED_BY
    # Server-side filtering of the children's watches: only objects this operator made.
    for selector in (("batch", "v1", "jobs"), ("v1", "configmaps"), ("apps", "v1", "deployments"), ("v1", "pods")):
        settings.watching.label_selectors[selector] = MANAGED_SELECTOR
    settings.watching.server_timeout = 290
    settings.networking.request_timeout = 60
    controller = Controller(config)
    if config.metrics_port:
        controller.metrics.serve(config.metrics_port)
    controller.metrics.attach(controller)
    memo["controller"] = controller
    await controller.start()
    log.info("kuberollout operator started: %d workers, runtime image %s", config.workers, config.runtime_image)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller = memo.get("controller")
    if controller is not None:
        await controller.stop()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's own parsers, shared with the operator's REST client (kube.py); one source of credentials."""
    return default_login()


@kopf.on.probe(id="workqueue")
def probe_workqueue(memo: kopf.Memo, **_: Any) -> dict[str, int]:
    controller = memo.get("controller")
    if controller is None:
        return {}
    return {"rolloutjobs": controller.job_queue.depth(), "sglangpools": controller.pool_queue.depth()}


# ------------------------------------------------------------------------------ indexes


@kopf.index(GROUP, VERSION, JOB_PLURAL)
async def rolloutjob_idx(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): slim_custom(dict(body))}


@kopf.index(GROUP, VERSION, JOB_PLURAL)
async def rolloutjob_by_pool_idx(spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    pool = (spec.get("poolRef") or {}).get("name")
    return {(namespace, pool): name} if pool else {}


@kopf.index(GROUP, VERSION, POOL_PLURAL)
async def sglangpool_idx(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): slim_custom(dict(body))}


@kopf.index("batch", "v1", "jobs", labels={**MANAGED, LABEL_JOB: kopf.PRESENT})
async def batchjob_idx(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_JOB]): slim_job(dict(body))}


@kopf.index("v1", "configmaps", labels={**MANAGED, LABEL_JOB: kopf.PRESENT})
async def statecm_idx(body: kopf.Body, namespace: str | None, name: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    job = labels[LABEL_JOB]
    return {(namespace, job): slim_state(dict(body))} if name == state_configmap_name(job) else {}


@kopf.index("apps", "v1", "deployments", labels={**MANAGED, LABEL_POOL: kopf.PRESENT})
async def deployment_idx(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[LABEL_POOL]): slim_deployment(dict(body))}


@kopf.index("v1", "pods", labels=MANAGED)
async def pod_idx(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    if LABEL_POOL in labels:
        return {("pool", namespace, labels[LABEL_POOL]): slim_pod(dict(body))}
    if LABEL_JOB in labels:
        return {("job", namespace, labels[LABEL_JOB]): slim_pod(dict(body))}
    return {}


# ----------------------------------------------------------------------- event triggers


@kopf.on.event(GROUP, VERSION, JOB_PLURAL)
async def on_rolloutjob(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    controller = _controller(memo)
    controller.capture(kwargs)
    controller.enqueue_rolloutjob(namespace or "", name)


@kopf.on.event(GROUP, VERSION, POOL_PLURAL)
async def on_sglangpool(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    controller = _controller(memo)
    controller.capture(kwargs)
    controller.enqueue_pool(namespace or "", name, with_jobs=True)


@kopf.on.event("batch", "v1", "jobs", labels={**MANAGED, LABEL_JOB: kopf.PRESENT})
@kopf.on.event("v1", "configmaps", labels={**MANAGED, LABEL_JOB: kopf.PRESENT})
async def on_rolloutjob_child(namespace: str | None, labels: kopf.Labels, memo: Any, **kwargs: Any) -> None:
    controller = _controller(memo)
    controller.capture(kwargs)
    controller.enqueue_rolloutjob(namespace or "", labels[LABEL_JOB])


@kopf.on.event("apps", "v1", "deployments", labels={**MANAGED, LABEL_POOL: kopf.PRESENT})
async def on_pool_child(namespace: str | None, labels: kopf.Labels, memo: Any, **kwargs: Any) -> None:
    controller = _controller(memo)
    controller.capture(kwargs)
    controller.enqueue_pool(namespace or "", labels[LABEL_POOL])


@kopf.on.event("v1", "pods", labels=MANAGED)
async def on_pod(namespace: str | None, labels: kopf.Labels, memo: Any, **kwargs: Any) -> None:
    controller = _controller(memo)
    controller.capture(kwargs)
    if LABEL_POOL in labels:
        controller.enqueue_pool(namespace or "", labels[LABEL_POOL])
    elif LABEL_JOB in labels:
        controller.enqueue_rolloutjob(namespace or "", labels[LABEL_JOB])
