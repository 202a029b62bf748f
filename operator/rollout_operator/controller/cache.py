"""Reading what the operator observes: kopf's in-memory indexes, plus our own latest writes.

kopf keeps slim copies of every watched object in indexes (see `handlers.py`). A reconcile that
just wrote an object must not decide from the older copy the watch still shows, or it would
redo (or undo) its own write: the bodies the API server returned for our writes are kept here
and preferred while they are newer (by resourceVersion) than the indexed copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from rollout_operator.constants import LABEL_POOL_ROLE
from rollout_operator.observe import resource_version
from rollout_runtime.contract import JOB_KIND, POOL_KIND, state_configmap_name

# Names of the kopf indexes (the index functions in handlers.py).
IDX_JOBS = "rolloutjob_idx"
IDX_JOBS_BY_POOL = "rolloutjob_by_pool_idx"
IDX_POOLS = "sglangpool_idx"
IDX_BATCH = "batchjob_idx"
IDX_STATE = "statecm_idx"
IDX_DEPLOY = "deployment_idx"
IDX_PODS = "pod_idx"
INDEXES = (IDX_JOBS, IDX_JOBS_BY_POOL, IDX_POOLS, IDX_BATCH, IDX_STATE, IDX_DEPLOY, IDX_PODS)


class IndexCache:
    """By-key reads over kopf's indexes (slim dicts), newest of indexed and remembered."""

    def __init__(self) -> None:
        self.indexes: dict[str, Any] = {}
        self.ready = asyncio.Event()
        self._fresh: dict[tuple[str, str, str], dict[str, Any]] = {}  # our latest writes, by (kind, ns, name)

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

    # -- our own writes -----------------------------------------------------------------------

    def remember(self, kind: str, obj: dict[str, Any]) -> None:
        """A slim body the API server returned for our write (newer than the watch, for a while)."""
        meta = obj.get("metadata") or {}
        self._fresh[(kind, meta.get("namespace", ""), meta.get("name", ""))] = obj

    def forget(self, kind: str, ns: str, name: str) -> None:
        self._fresh.pop((kind, ns, name), None)

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

    # -- reads ----------------------------------------------------------------------------------

    def _store(self, index: str, key: Hashable) -> list[Any]:
        idx = self.indexes.get(index)
        if idx is None:
            return []
        store = idx.get(key)
        return list(store) if store is not None else []

    def _all(self, index: str) -> list[dict[str, Any]]:
        idx = self.indexes.get(index)
        if idx is None:
            return []
        return [v for store in idx.values() for v in store]

    def rolloutjob(self, ns: str, name: str) -> dict[str, Any] | None:
        found = self._store(IDX_JOBS, (ns, name))
        return self._freshest(JOB_KIND, ns, name, found[0] if found else None)

    def pool(self, ns: str, name: str) -> dict[str, Any] | None:
        found = self._store(IDX_POOLS, (ns, name))
        return self._freshest(POOL_KIND, ns, name, found[0] if found else None)

    def state_configmap(self, ns: str, job: str) -> dict[str, Any] | None:
        found = self._store(IDX_STATE, (ns, job))
        return self._freshest("ConfigMap", ns, state_configmap_name(job), found[0] if found else None)

    def batch_jobs(self, ns: str, job: str) -> list[dict[str, Any]]:
        return self._store(IDX_BATCH, (ns, job))

    def job_pods(self, ns: str, job: str) -> list[dict[str, Any]]:
        return self._store(IDX_PODS, ("job", ns, job))

    def pool_pods(self, ns: str, pool: str) -> list[dict[str, Any]]:
        return self._store(IDX_PODS, ("pool", ns, pool))

    def pool_deployments(self, ns: str, pool: str) -> dict[str | None, dict[str, Any]]:
        """role (server / router) -> the pool's Deployment."""
        deployments = self._store(IDX_DEPLOY, (ns, pool))
        return {(d["metadata"].get("labels") or {}).get(LABEL_POOL_ROLE): d for d in deployments}

    def all_rolloutjobs(self) -> list[dict[str, Any]]:
        return self._all(IDX_JOBS)

    def all_pools(self) -> list[dict[str, Any]]:
        return self._all(IDX_POOLS)

    def jobs_of_pool(self, ns: str, pool: str) -> list[str]:
        return [str(name) for name in self._store(IDX_JOBS_BY_POOL, (ns, pool))]
