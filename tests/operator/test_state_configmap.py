"""ConfigMapStateStore against an in-memory fake of the two API calls it makes (no cluster).

The real API server's behaviour (resourceVersion preconditions, RBAC) is covered by the cluster
tests; this pins down the store's own logic: versions, conflicts, fencing, flat keys, buffers.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from rollout_runtime.state import RolloutState, StateConflictError, resolve_buffer
from rollout_runtime.state.configmap_store import ConfigMapStateStore, describe_state


class FakeCore:
    """read/patch/create of one namespace's ConfigMaps with resourceVersion semantics."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.rv = 100

    def add(self, name: str, annotations: dict[str, str] | None = None) -> None:
        self.rv += 1
        self.objects[name] = {"annotations": dict(annotations or {}), "data": {}, "rv": str(self.rv)}

    def _view(self, obj: dict[str, Any]) -> Any:
        return SimpleNamespace(metadata=SimpleNamespace(annotations=dict(obj["annotations"]),
                                                        resource_version=obj["rv"]),
                               data=copy.deepcopy(obj["data"]))

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        if name not in self.objects:
            raise ApiException(status=404)
        return self._view(self.objects[name])

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        obj = self.objects.get(name)
        if obj is None:
            raise ApiException(status=404)
        expected = body.get("metadata", {}).get("resourceVersion")
        if expected is not None and expected != obj["rv"]:
            raise ApiException(status=409)
        obj["data"].update(body.get("data") or {})
        obj["annotations"].update((body.get("metadata") or {}).get("annotations") or {})
        self.rv += 1
        obj["rv"] = str(self.rv)
        return self._view(obj)

    def create_namespaced_config_map(self, namespace: str, body: Any) -> Any:
        if body.metadata.name in self.objects:
            raise ApiException(status=409)
        self.add(body.metadata.name)
        self.objects[body.metadata.name]["data"] = dict(body.data)
        return self._view(self.objects[body.metadata.name])


@pytest.fixture
def api() -> FakeCore:
    core = FakeCore()
    core.add("job-state", {"kuberollout.io/attempt": "1"})
    return core


def test_commit_read_roundtrip_with_flat_keys(api: FakeCore, tmp_path: Path) -> None:
    store = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=1, api=api)
    state, version = store.read()
    assert state is None and version is not None  # exists, nothing committed yet
    new = RolloutState(rollout_id=0, num_rollouts=3, completed=8, aborted=1, filtered=2, attempt=1).stamp()
    v1 = store.commit(new, version)
    assert v1 != version
    data = api.objects["job-state"]["data"]
    assert describe_state(data) | {"state": None} == {
        "rolloutId": 0, "numRollouts": 3, "completed": 8, "aborted": 1, "filtered": 2, "attempt": 1,
        "finished": False, "lastCommitTime": new.committed_at, "lastBatch": "", "state": None,
        "stale": 0, "weightVersionMin": "", "weightVersionMax": ""}  # no tokens: no versions
    back, v = store.read()
    assert back == new and v == v1


def test_stale_version_conflicts(api: FakeCore, tmp_path: Path) -> None:
    a = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=1, api=api)
    b = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=1, api=api)
    _, va = a.read()
    _, vb = b.read()
    a.commit(RolloutState(rollout_id=0), va)
    with pytest.raises(StateConflictError):
        b.commit(RolloutState(rollout_id=0), vb)


def test_a_newer_attempt_fences_off_an_older_one(api: FakeCore, tmp_path: Path) -> None:
    old = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=1, api=api)
    _, version = old.read()
    # The operator starts attempt 2: it raises the annotation (which also bumps the version).
    api.patch_namespaced_config_map("job-state", "ns", {"metadata": {"annotations": {"kuberollout.io/attempt": "2"}}})
    with pytest.raises(StateConflictError):
        old.commit(RolloutState(rollout_id=0), version)  # in flight: 409
    with pytest.raises(StateConflictError, match="superseded"):
        old.read()  # restarted zombie: refused up front
    new = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=2, api=api)
    _, v2 = new.read()
    new.commit(RolloutState(rollout_id=0, attempt=2), v2)


def test_buffer_is_offloaded_to_a_blob(api: FakeCore, tmp_path: Path) -> None:
    store = ConfigMapStateStore("job-state", "ns", str(tmp_path / ".state"), attempt=1, api=api)
    _, version = store.read()
    state = RolloutState(rollout_id=4)
    state.data_source.buffer = [[{"index": 1, "tokens": list(range(1000))}]]
    store.commit(state, version)
    raw = json.loads(api.objects["job-state"]["data"]["state.json"])
    assert raw["data_source"]["buffer"] is None
    assert re.search(r"/buffer_000004\.a1-[0-9a-f]{6}\.json$", raw["data_source"]["buffer_ref"])
    back, _ = store.read()
    assert resolve_buffer(back).data_source.buffer == state.data_source.buffer


def test_missing_configmap_is_created_outside_the_operator(tmp_path: Path) -> None:
    api = FakeCore()
    store = ConfigMapStateStore("solo-state", "ns", str(tmp_path), api=api)
    assert store.read() == (None, None)
    version = store.commit(RolloutState(rollout_id=0), None)
    assert store.read()[1] == version


def test_from_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEROLLOUT_ATTEMPT", "3")
    args = SimpleNamespace(state_configmap="j-state", state_namespace="team", state_blob_dir=None,
                           output_dir="s3://bucket/out/")
    store = ConfigMapStateStore.from_args(args)
    assert (store.name, store.namespace, store.blob_dir, store.attempt) == ("j-state", "team", "s3://bucket/out/.state", 3)
    with pytest.raises(ValueError):
        ConfigMapStateStore.from_args(SimpleNamespace(state_configmap=None))


def test_only_this_module_imports_kubernetes() -> None:
    root = Path(__file__).resolve().parents[2] / "rollout_runtime"
    offenders = [p.relative_to(root).as_posix() for p in root.rglob("*.py")
                 if p.name != "kube.py" and ("import kubernetes" in p.read_text()
                                             or "from kubernetes" in p.read_text())]
    assert offenders == []


def test_a_trainer_ack_between_commits_is_not_a_conflict(api: FakeCore, tmp_path: Path) -> None:
    """The consumption mark bumps the resourceVersion; the runtime commits on top of it, keeping it."""
    runtime = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=1, api=api)
    trainer = ConfigMapStateStore("job-state", "ns", "", api=api)
    runtime.claim(1)
    _, version = runtime.read()
    version = runtime.commit(RolloutState(rollout_id=0, attempt=1), version)
    assert trainer.read_committed().rollout_id == 0 and trainer.read_consumed() == -1
    assert trainer.ack(0) == 0
    runtime.ensure_current(version)  # only someone else's key changed
    version = runtime.commit(RolloutState(rollout_id=1, attempt=1), version)
    assert api.objects["job-state"]["data"]["consumed"] == "0" and runtime.read_consumed() == 0
    assert trainer.ack(1) == 1 and trainer.ack(0) == 1  # the mark never goes down
    # A commit by anyone else still stops it, before writing and at the commit.
    other = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=1, api=api)
    _, v_other = other.read()
    other.commit(RolloutState(rollout_id=2, attempt=1), v_other)
    with pytest.raises(StateConflictError, match="before writing"):
        runtime.ensure_current(version)
    with pytest.raises(StateConflictError, match="someone else"):
        runtime.commit(RolloutState(rollout_id=2, attempt=1), version)


def test_fence_raised_while_committing_stops_the_commit(api: FakeCore, tmp_path: Path) -> None:
    store = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=1, api=api)
    _, version = store.read()
    api.patch_namespaced_config_map("job-state", "ns", {"metadata": {"annotations": {"kuberollout.io/attempt": "1"}}})
    version = store.commit(RolloutState(rollout_id=0), version)  # same attempt re-stamped: not a conflict
    api.patch_namespaced_config_map("job-state", "ns", {"metadata": {"annotations": {"kuberollout.io/attempt": "2"}}})
    with pytest.raises(StateConflictError, match="superseded"):
        store.ensure_current(version)
    with pytest.raises(StateConflictError, match="superseded"):
        store.commit(RolloutState(rollout_id=1), version)
    assert json.loads(api.objects["job-state"]["data"]["state.json"])["rollout_id"] == 0


def test_blobs_are_writer_unique_and_superseded_ones_go(api: FakeCore, tmp_path: Path) -> None:
    blobs = tmp_path / ".state"
    store = ConfigMapStateStore("job-state", "ns", str(blobs), attempt=1, api=api)
    writer = store.claim(None)
    assert writer.attempt == 1  # the fence's attempt when the pod has none
    _, version = store.read()
    for rollout_id in range(3):
        state = RolloutState(rollout_id=rollout_id)
        state.data_source.buffer = [[{"index": rollout_id}]]
        version = store.commit(state, version)
    assert [p.name for p in blobs.iterdir()] == [f"buffer_000002.{writer.id}.json"]
    # The reader's view does not load the blob; the runtime's read does.
    assert ConfigMapStateStore("job-state", "ns", "", api=api).read_committed().data_source.buffer is None
    assert store.read()[0].data_source.buffer == [[{"index": 2}]]


def test_a_weight_wait_report_is_beside_the_commit_and_the_next_commit_rebases_over_it(api: FakeCore,
                                                                                       tmp_path: Path) -> None:
    from rollout_runtime.contract import WeightWait, decode_flat, decode_wait

    store = ConfigMapStateStore("job-state", "ns", str(tmp_path), attempt=1, api=api)
    _, version = store.read()
    v1 = store.commit(RolloutState(rollout_id=0, num_rollouts=3, attempt=1).stamp(), version)
    committed = dict(api.objects["job-state"]["data"])
    wait = WeightWait(waiting_for=1, served=0, rollout_id=2, attempt=1, since="2026-01-01T00:00:00Z")
    store.report_wait(wait)
    data = api.objects["job-state"]["data"]
    assert decode_wait(data) == wait
    assert {k: v for k, v in data.items() if k in committed} == committed  # not a commit: state.json untouched
    # The report moved the resourceVersion; the next commit rebases over it and keeps it.
    store.commit(RolloutState(rollout_id=1, num_rollouts=3, attempt=1).stamp(), v1)
    assert decode_flat(api.objects["job-state"]["data"]).rollout_id == 1
    assert decode_wait(api.objects["job-state"]["data"]) == wait
    # A superseded attempt cannot report for the current one.
    api.objects["job-state"]["annotations"]["kuberollout.io/attempt"] = "2"
    with pytest.raises(StateConflictError):
        store.report_wait(WeightWait(waiting_for=None, served=1, rollout_id=2, attempt=1))
    assert decode_wait(api.objects["job-state"]["data"]) == wait


def test_a_local_weight_wait_report_is_fenced(tmp_path: Path) -> None:
    from rollout_runtime.contract import WeightWait, decode_wait
    from rollout_runtime.state.file_store import JsonFileStateStore

    old, new = JsonFileStateStore(tmp_path), JsonFileStateStore(tmp_path)
    old.claim(1)
    wait = WeightWait(waiting_for=3, served=1, rollout_id=4, attempt=1)
    old.report_wait(wait)
    assert decode_wait(json.loads(old.wait_path.read_text())) == wait
    new.claim(2)
    with pytest.raises(StateConflictError):
        old.report_wait(WeightWait(waiting_for=None, served=3, rollout_id=4, attempt=1))
    assert decode_wait(json.loads(old.wait_path.read_text())) == wait
