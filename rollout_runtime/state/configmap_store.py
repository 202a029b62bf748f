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
attempt that is still running fails its next commit. The fence guards the commit only: files are
safe because every file a runtime writes has a name unique to that process and is never replaced
(`rollout_runtime.state.artifacts`), so a fenced-off process can add garbage but not clobber.

Other writers of the ConfigMap: the trainer's consumption mark (`contract.CONSUMED_KEY`, written
by `RolloutReader.ack`) and the operator's labels and annotations. They bump the resourceVersion
too, so a 409 is not proof of a competing commit: the store re-reads, and retries on the new
version only if `state.json` is still exactly what it last read or committed and the fence still
allows it. Any commit by someone else changes `state.json` (it names its writer), so it still
stops the runtime.

The API calls themselves are `rollout_runtime.kube`; this module holds the store's logic.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from rollout_runtime import kube
from rollout_runtime.contract import (ATTEMPT_ANNOTATION, CONSUMED_KEY, STATE_KEY, WeightWait, attempt_from_env,
                                      decode_consumed, decode_flat, encode_flat, encode_wait, fence_allows,
                                      summary_dict)
from rollout_runtime.state.artifacts import Writer
from rollout_runtime.state.buffer_blobs import delete_blob, offload_buffer, resolve_buffer
from rollout_runtime.state.locations import blob_dir
from rollout_runtime.state.models import RolloutState
from rollout_runtime.state.store import StateConflictError

log = logging.getLogger(__name__)

#: How often a commit or an ack re-reads and retries after a 409 caused by someone else's key.
MAX_REBASES = 20


class ConfigMapStateStore:
    """StateStore and CommitView backed by one ConfigMap, with resourceVersion as the version token."""

    def __init__(self, name: str, namespace: str, blob_dir: str, *, attempt: int | None = None,
                 api: Any = None) -> None:
        self.name = name
        self.namespace = namespace
        self.blob_dir = blob_dir
        self.attempt = attempt
        self.writer: Writer | None = None
        self._api = api
        self._last_raw: str | None = None  # state.json as last read or committed by this process
        self._last_ref: str | None = None  # the blob that state references

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

    def describe(self) -> str:
        return f"state ConfigMap {self.namespace}/{self.name}"

    def _check_fence(self, annotations: dict[str, str]) -> None:
        fence = annotations.get(ATTEMPT_ANNOTATION)
        if not fence_allows(fence, self.attempt):
            raise StateConflictError(f"{self.describe()}: attempt {fence} has superseded this attempt ({self.attempt}); "
                                     f"stopping so that it cannot overwrite newer state")

    def _get(self, **kw: Any) -> kube.ConfigMapView | None:
        return kube.read_configmap(self.api, self.name, self.namespace, what=self.describe(), **kw)

    # ------------------------------------------------------------------ the runtime's side
    def claim(self, attempt: int | None) -> Writer:
        """The operator raised the fence already; check it. No attempt given: the fence's (or 0)."""
        cm = self._get()
        fence = (cm.annotations if cm else {}).get(ATTEMPT_ANNOTATION)
        if attempt is None:
            attempt = int(fence) if fence and fence.isdigit() else (self.attempt or 0)
        self.attempt = attempt
        if cm is not None:
            self._check_fence(cm.annotations)
        self.writer = Writer.new(attempt)
        return self.writer

    def read(self) -> tuple[RolloutState | None, str | None]:
        """The committed state with its buffer loaded back from the blob, and the resourceVersion."""
        cm = self._get()
        if cm is None:
            self._last_raw = None
            return None, None
        self._check_fence(cm.annotations)
        raw = cm.data.get(STATE_KEY)
        self._last_raw = raw
        if not raw:
            return None, cm.resource_version
        state = RolloutState.model_validate_json(raw)
        self._last_ref = state.data_source.buffer_ref
        return resolve_buffer(state), cm.resource_version

    def ensure_current(self, expected_version: str | None) -> None:
        cm = self._get()
        if cm is None:
            if expected_version is None:
                return
            raise StateConflictError(f"{self.describe()} was deleted; stopping")
        self._check_fence(cm.annotations)
        if cm.resource_version != expected_version and cm.data.get(STATE_KEY) != self._last_raw:
            raise StateConflictError(f"{self.describe()} was committed by someone else since version "
                                     f"{expected_version}; stopping before writing")

    def commit(self, state: RolloutState, expected_version: str | None) -> str:
        """Offload the buffer to a new blob, then patch `data` under the resourceVersion precondition.

        The blob of the state this commit supersedes is deleted afterwards: no commit names it.
        """
        if self.writer is None:
            self.writer = Writer.new(self.attempt or 0)
        state = offload_buffer(state, self.blob_dir, self.writer.id)
        raw = state.model_dump_json()
        data = {STATE_KEY: raw, **encode_flat(state.commit_summary())}
        version = self._create(data) if expected_version is None else self._patch(data, expected_version)
        log.debug("committed rollout %d to %s (version %s)", state.rollout_id, self.describe(), version)
        self._last_raw = raw
        previous, self._last_ref = self._last_ref, state.data_source.buffer_ref
        if previous != self._last_ref:
            delete_blob(previous)
        return version

    def _patch(self, data: dict[str, str], expected_version: str) -> str:
        expected = expected_version
        for _ in range(MAX_REBASES):
            body = {"metadata": {"resourceVersion": expected}, "data": data}
            try:
                return kube.patch_configmap(self.api, self.name, self.namespace, body, what=self.describe())
            except kube.ConflictError:
                cm = self._get()
                if cm is None:
                    raise StateConflictError(f"{self.describe()} was deleted; stopping") from None
                self._check_fence(cm.annotations)
                if cm.data.get(STATE_KEY) != self._last_raw:
                    raise StateConflictError(f"{self.describe()} was written by someone else since version "
                                             f"{expected_version}; stopping instead of overwriting it") from None
                log.info("%s changed since version %s only in keys this runtime does not own; committing on top of "
                         "version %s", self.describe(), expected, cm.resource_version)
                expected = cm.resource_version
        raise StateConflictError(f"{self.describe()}: {MAX_REBASES} conflicts in a row on keys this runtime does not "
                                 f"own; stopping")

    def report_wait(self, wait: WeightWait) -> None:
        """Merge the wait for newer weights (`contract.WeightWait`) into `data`, beside the last commit.

        Not a commit: it never touches `state.json` or the commit's keys, and the next commit rebases
        over it (as over the trainer's mark). Fenced like a commit, so an attempt that was superseded
        cannot report for the current one.
        """
        for _ in range(MAX_REBASES):
            cm = self._get()
            if cm is None:
                return
            self._check_fence(cm.annotations)
            body = {"metadata": {"resourceVersion": cm.resource_version}, "data": encode_wait(wait)}
            try:
                kube.patch_configmap(self.api, self.name, self.namespace, body, what=self.describe())
                return
            except kube.ConflictError:
                continue  # someone wrote in between: read again
        log.warning("%s: could not report the weight wait after %d conflicts", self.describe(), MAX_REBASES)

    def _create(self, data: dict[str, str]) -> str:
        """No ConfigMap yet (outside the operator, e.g. a hand-run job): create it."""
        try:
            return kube.create_configmap(self.api, self.name, self.namespace, data, what=self.describe())
        except kube.ConflictError:
            raise StateConflictError(f"{self.describe()} was created by someone else; stopping") from None

    def read_consumed(self) -> int:
        cm = self._get()
        return decode_consumed(cm.data if cm else None)

    # ------------------------------------------------------------------ the trainer's side
    def read_committed(self) -> RolloutState | None:
        cm = self._get(rbac_hint=kube.TRAINER_RBAC)
        raw = cm.data.get(STATE_KEY) if cm else None
        return RolloutState.model_validate_json(raw) if raw else None

    def ack(self, rollout_id: int) -> int:
        """Raise `consumed` with a resourceVersion precondition, so that it never goes down."""
        for _ in range(MAX_REBASES):
            cm = self._get(rbac_hint=kube.TRAINER_RBAC)
            if cm is None:
                raise kube.KubernetesAccessError(f"{self.describe()}: not found; is the RolloutJob running?")
            current = decode_consumed(cm.data)
            if rollout_id <= current:
                return current
            body = {"metadata": {"resourceVersion": cm.resource_version}, "data": {CONSUMED_KEY: str(rollout_id)}}
            try:
                kube.patch_configmap(self.api, self.name, self.namespace, body, what=self.describe(),
                                     rbac_hint=kube.TRAINER_RBAC)
                return rollout_id
            except kube.ConflictError:
                continue  # a commit landed in between: read again
        raise kube.KubernetesAccessError(f"{self.describe()}: could not record consumed={rollout_id} after "
                                         f"{MAX_REBASES} conflicts")


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
