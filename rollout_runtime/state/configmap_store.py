"""The cluster state store: committed state in the RolloutJob's ConfigMap `<job>-state`.

The ConfigMap is created by the operator (RBAC cannot restrict `create` to one name), labelled and
owned by the RolloutJob. The runtime may only get/update/patch it. A commit is a JSON merge patch of
`data` that carries the resourceVersion read at the last commit as a precondition: if anyone wrote
in between (another runtime pod, or the operator fencing off an older attempt), the API server
answers 409 and the commit raises `StateConflictError` instead of overwriting newer state.

`data` holds `state.json` (the full RolloutState, with the partial-rollout buffer offloaded to a
blob so the ConfigMap stays far below its 1 MiB limit) and the contract's flat keys (`rolloutId`,
`completed`, ... see `rollout_runtime.contract.encode_flat`) that the operator and
`kubectl get cm -o yaml` read without parsing JSON.

Fencing: the operator sets the annotation `kuberollout.io/attempt` to the newest attempt before
it starts that attempt's Job. A runtime whose own attempt (`KUBEROLLOUT_ATTEMPT`) is older
refuses to read or commit; the annotation update also bumps the resourceVersion, so an older
attempt that is still running fails its next commit.

The API calls themselves are `rollout_runtime.kube`; this module holds the store's logic.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from rollout_runtime import kube
from rollout_runtime.contract import (ATTEMPT_ANNOTATION, STATE_KEY, WeightWait, attempt_from_env, decode_flat,
                                      encode_flat, encode_wait, fence_allows, summary_dict)
from rollout_runtime.state.buffer_blobs import offload_buffer, resolve_buffer
from rollout_runtime.state.locations import blob_dir
from rollout_runtime.state.models import RolloutState
from rollout_runtime.state.store import StateConflictError

log = logging.getLogger(__name__)


class ConfigMapStateStore:
    """StateStore backed by one ConfigMap, with resourceVersion as the version token."""

    def __init__(self, name: str, namespace: str, blob_dir: str, *, attempt: int | None = None,
                 api: Any = None) -> None:
        self.name = name
        self.namespace = namespace
        self.blob_dir = blob_dir
        self.attempt = attempt
        self._api = api

    @classmethod
    def from_args(cls, args: Any) -> ConfigMapStateStore:
        """The store `state_configmap` / `state_namespace` / `state_blob_dir` name, fenced by this pod's attempt."""
        if not args.state_configmap:
            raise ValueError("state_backend=configmap needs state_configmap (the <job>-state ConfigMap name)")
        return cls(args.state_configmap, kube.current_namespace(args.state_namespace), blob_dir(args),
                   attempt=attempt_from_env(os.environ))

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = kube.core_api()
        return self._api

    def _what(self) -> str:
        return f"state ConfigMap {self.namespace}/{self.name}"

    def _check_fence(self, annotations: dict[str, str]) -> None:
        fence = annotations.get(ATTEMPT_ANNOTATION)
        if not fence_allows(fence, self.attempt):
            raise StateConflictError(f"{self._what()}: attempt {fence} has superseded this attempt ({self.attempt}); "
                                     f"stopping so that it cannot overwrite newer state")

    def read(self) -> tuple[RolloutState | None, str | None]:
        """The committed state with its buffer loaded back from the blob, and the resourceVersion."""
        cm = kube.read_configmap(self.api, self.name, self.namespace, what=self._what())
        if cm is None:
            return None, None
        self._check_fence(cm.annotations)
        raw = cm.data.get(STATE_KEY)
        if not raw:
            return None, cm.resource_version
        return resolve_buffer(RolloutState.model_validate_json(raw)), cm.resource_version

    def commit(self, state: RolloutState, expected_version: str | None) -> str:
        """Offload the buffer, then patch `data` under the resourceVersion precondition."""
        state = offload_buffer(state, self.blob_dir)
        data = {STATE_KEY: state.model_dump_json(), **encode_flat(state.commit_summary())}
        if expected_version is None:
            return self._create(data)
        body = {"metadata": {"resourceVersion": expected_version}, "data": data}
        try:
            version = kube.patch_configmap(self.api, self.name, self.namespace, body, what=self._what())
        except kube.ConflictError:
            raise StateConflictError(f"{self._what()} was written by someone else since version "
                                     f"{expected_version}; stopping instead of overwriting it") from None
        log.debug("committed rollout %d to %s (version %s)", state.rollout_id, self._what(), version)
        return version

    def report_wait(self, wait: WeightWait) -> None:
        """Merge the wait for newer weights (`contract.WeightWait`) into `data`, beside the last commit.

        Not a commit: it never touches `state.json` or the commit's keys, and a later commit rebases over
        it. Fenced like a commit, so an attempt that was superseded cannot report for the current one.
        """
        for _ in range(5):
            cm = kube.read_configmap(self.api, self.name, self.namespace, what=self._what())
            if cm is None:
                return
            self._check_fence(cm.annotations)
            body = {"metadata": {"resourceVersion": cm.resource_version}, "data": encode_wait(wait)}
            try:
                kube.patch_configmap(self.api, self.name, self.namespace, body, what=self._what())
                return
            except kube.ConflictError:
                continue  # someone wrote in between: read again
        log.warning("%s: could not report the weight wait after 5 conflicts", self._what())

    def _create(self, data: dict[str, str]) -> str:
        """No ConfigMap yet (outside the operator, e.g. a hand-run job): create it."""
        try:
            return kube.create_configmap(self.api, self.name, self.namespace, data, what=self._what())
        except kube.ConflictError:
            raise StateConflictError(f"{self._what()} was created by someone else; stopping") from None


def describe_state(cm_data: dict[str, str]) -> dict[str, Any]:
    """The flat keys of a state ConfigMap as typed values, plus the parsed `state`, for tools and tests.

    Unset values read as "", as the ConfigMap spells them.
    """
    summary = decode_flat(cm_data)
    out: dict[str, Any] = {}
    if summary is not None:
        out = {key: "" if value is None else value for key, value in summary_dict(summary).items()}
    if STATE_KEY in cm_data:
        out["state"] = json.loads(cm_data[STATE_KEY])
    return out
