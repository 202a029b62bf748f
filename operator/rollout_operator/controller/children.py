"""Applying child objects: create by name, adopt nothing owned by someone else, patch only on change.

Every child carries a hash of its desired content (`builders.common.with_hash`). Watched children
(Jobs, the state ConfigMap, Deployments) are compared with their cached copy; unwatched ones
(Services, ServiceAccounts, Roles, RoleBindings) with the hash last applied, which the periodic
resync forgets so that a child deleted or edited by hand is restored.
"""

from __future__ import annotations

import logging
from typing import Any

from rollout_operator.builders.common import Manifest, hash_of
from rollout_operator.builders.rolloutjob import without_fence
from rollout_operator.kube import AlreadyExists, KubeClient, NotFound, manifest_path, resource_path

log = logging.getLogger("rollout_operator")


class ChildConflict(Exception):
    """A child's name is taken by an object another owner controls."""


class _Uncached:
    """Marker: this kind of child is not watched; remember what was applied instead."""

    def __repr__(self) -> str:
        return "UNCACHED"


UNCACHED: Any = _Uncached()


class ChildApplier:
    """Creates, patches and deletes children; remembers what it applied to unwatched kinds."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._ensured: dict[tuple[str, str, str, str], str] = {}  # uncached children -> applied hash / "deleted"

    def reset(self) -> None:
        """Forget what was applied: the next reconciles verify every unwatched child against the API."""
        self._ensured.clear()

    def forget(self, ns: str, names: set[str]) -> None:
        """Drop what we remember about the children of a deleted object (a new one may reuse the names)."""
        for key in [k for k in self._ensured if k[2] == ns and k[3] in names]:
            self._ensured.pop(key, None)

    async def ensure(self, manifest: Manifest, owner_uid: str, cached: Any, likely_exists: bool
                     ) -> dict[str, Any] | None:
        """Make the child exist as desired; returns the object if it was created or patched.

        `cached` is the watched copy (None: not in the cache), or UNCACHED for unwatched kinds.
        """
        meta = manifest["metadata"]
        key = (manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        desired = hash_of(manifest)
        if cached is not UNCACHED:
            if cached is not None and hash_of(cached) == desired:
                check_owner(cached, owner_uid, manifest)
                return None
            likely_exists = cached is not None
        elif self._ensured.get(key) == desired:
            return None
        result: dict[str, Any] | None = None
        if not likely_exists:
            try:
                result = await self.create(manifest)
            except AlreadyExists:
                likely_exists = True
        if likely_exists:
            try:
                current = await self.client.get(manifest_path(manifest))
            except NotFound:
                result = await self.create(manifest)
            else:
                check_owner(current, owner_uid, manifest)
                if hash_of(current) != desired:
                    result = await self.client.merge_patch(manifest_path(manifest), without_fence(manifest))
                    log.info("updated %s %s/%s", manifest["kind"], meta["namespace"], meta["name"])
        self._ensured[key] = desired or ""
        return result

    async def create(self, manifest: Manifest) -> dict[str, Any] | None:
        """POST the child. A Job that exists already is fine (same name = same attempt): None."""
        meta = manifest["metadata"]
        try:
            created = await self.client.create(manifest)
        except AlreadyExists:
            if manifest["kind"] == "Job":
                return None
            raise
        log.info("created %s %s/%s", manifest["kind"], meta["namespace"], meta["name"])
        return created

    async def ensure_absent(self, api_version: str, kind: str, ns: str, name: str, known_absent: bool = False) -> None:
        """Delete a child that must not exist (once; `known_absent` when the cache shows it gone)."""
        key = (api_version, kind, ns, name)
        if self._ensured.get(key) == "deleted":
            return
        if not known_absent:
            await self.client.delete(resource_path(api_version, kind, ns, name))
        self._ensured[key] = "deleted"


def check_owner(obj: dict[str, Any], owner_uid: str, manifest: Manifest) -> None:
    """Raise ChildConflict when the object's controller is not the owner we build it for."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    controllers = [r for r in refs if r.get("controller")]
    if controllers and controllers[0].get("uid") != owner_uid:
        meta = manifest["metadata"]
        raise ChildConflict(
            f"{manifest['kind']} {meta['namespace']}/{meta['name']} belongs to another "
            f"{controllers[0].get('kind')} (uid {controllers[0].get('uid')}); waiting for it to be deleted")
