"""A reconcile whose object is gone from the API server stops instead of retrying forever.

When a namespace is deleted with everything in it, the operator's watch can still show its pool
for a while; the reconcile then fails with a 404 (the namespace is not found) and, before the
check in the controller's retry path (`controller/manager.py`, `_gone`), was retried with
backoff every minute, for good. The watch lag is what no cluster test could produce on demand, so
this test holds it still: the Controller runs in this process against the real API server, with
its cache showing a pool that the API server does not have (as the watch does until its delete
event arrives), and a pool that exists beside it for comparison.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from rollout_operator.controller.cache import INDEXES, IDX_POOLS
from rollout_operator.controller.manager import Controller
from rollout_operator.observe import slim_custom
from rollout_operator.settings import OperatorConfig
from tests.cluster.harness import Cluster
from tests.operator.kube_helpers import apply, get_json, wait

pytestmark = pytest.mark.cluster


def pool(name: str) -> dict[str, Any]:
    return {"apiVersion": "kuberollout.io/v1alpha1", "kind": "SGLangPool", "metadata": {"name": name},
            "spec": {"engine": "simulated", "gpusPerReplica": 0, "replicas": 0, "router": {"enabled": False}}}


def test_a_reconcile_whose_object_is_gone_is_not_retried(crds_installed: Cluster, namespace: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = crds_installed
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    apply(cluster, namespace, pool("alive"))
    alive = get_json(cluster, "sgp", "alive", "-n", namespace)
    # The watch's last copy of a pool whose namespace has been deleted since: same shape, gone from the API.
    gone_ns = f"kro-deleted-{secrets.token_hex(3)}"
    gone = {**alive, "metadata": {**alive["metadata"], "namespace": gone_ns, "name": "gone",
                                  "uid": "00000000-0000-0000-0000-00000000dead"}}

    async def scenario() -> tuple[Controller, dict[str, Any]]:
        controller = Controller(OperatorConfig(workers=1, resync_seconds=3600))
        indexes: dict[str, Any] = {name: {} for name in INDEXES}
        indexes[IDX_POOLS] = {(namespace, "alive"): [slim_custom(alive)], (gone_ns, "gone"): [slim_custom(gone)]}
        controller.cache.indexes = indexes
        controller.cache.ready.set()
        await controller.start()
        try:
            controller.pool_queue.add((gone_ns, "gone"))
            controller.pool_queue.add((namespace, "alive"))
            await asyncio.sleep(3)  # the first retry after a failure comes after 0.5 s; six would fit
            queue = controller.pool_queue
            seen = {"gone_retry_pending": (gone_ns, "gone") in queue._timers,
                    "gone_failures": queue._failures.get((gone_ns, "gone"), 0),
                    "errors": sum(s.value for m in controller.metrics.errors.collect() for s in m.samples
                                  if s.name.endswith("_total")),
                    "successes": sum(s.value for m in controller.metrics.reconciles.collect() for s in m.samples
                                     if s.name.endswith("_total") and s.labels.get("result") == "success"),
                    "reconciles": sum(s.value for m in controller.metrics.duration.collect() for s in m.samples
                                      if s.name.endswith("_count"))}
        finally:
            await controller.stop()
        return controller, seen

    _, seen = asyncio.run(scenario())
    # The gone pool was reconciled once, failed with the 404, and was dropped: no retry, no error counted.
    assert seen["gone_retry_pending"] is False and seen["gone_failures"] == 0, seen
    assert seen["errors"] == 0, seen
    # The pool that exists was reconciled as usual (its server Deployment made), beside it.
    assert seen["successes"] >= 1 and seen["reconciles"] >= 2, seen
    wait("the live pool's Deployment", lambda: get_json(cluster, "deployment", "alive-server", "-n", namespace))
