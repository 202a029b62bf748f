"""Writing status: a merge patch of the decided status, guarded by the observed resourceVersion.

The patch carries the resourceVersion the decision was based on, so a decision made from a stale
view is rejected (409) and made again from a fresh one, never applied. The API server's answer is
remembered in the cache, so the next reconcile does not decide from the older copy the watch
still holds.
"""

from __future__ import annotations

from typing import Any

from rollout_operator.api.common import ApiModel
from rollout_operator.controller.cache import IndexCache
from rollout_operator.kube import ApiError, Conflict, KubeClient, NotFound, resource_path
from rollout_operator.observe import slim_custom
from rollout_operator.reconcile.common import status_patch
from rollout_runtime.contract import API_VERSION

#: Requeue delay after a status patch lost to a newer write (the next pass decides from that write).
STALE_VIEW_RETRY = 0.05


class StatusWriter:
    def __init__(self, client: KubeClient, cache: IndexCache) -> None:
        self.client = client
        self.cache = cache

    async def patch(self, body: dict[str, Any], kind: str, status: ApiModel) -> bool:
        """Patch `body`'s status to `status`; False when the view was stale (or the object is gone)."""
        patch = status_patch(body.get("status"), status)
        if not patch:
            return True
        meta = body["metadata"]
        path = resource_path(API_VERSION, kind, meta["namespace"], meta["name"], "status")
        try:
            result = await self.client.merge_patch(path, {"metadata": {"resourceVersion": meta["resourceVersion"]},
                                                          "status": patch})
        except Conflict:
            await self._refresh(kind, meta["namespace"], meta["name"])
            return False
        except NotFound:
            return False
        self.cache.remember(kind, slim_custom(result))
        return True

    async def _refresh(self, kind: str, ns: str, name: str) -> None:
        try:
            fresh = await self.client.get(resource_path(API_VERSION, kind, ns, name))
        except ApiError:
            return
        self.cache.remember(kind, slim_custom(fresh))
