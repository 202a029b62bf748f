"""Writer-unique names, create-exclusive publishing, the sweep's rules, retention, and the local fence."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import fsspec
import pytest

from rollout_runtime.atomic_write import publish_bytes
from rollout_runtime.state import DataSourceState, JsonFileStateStore, RolloutState, StateConflictError
from rollout_runtime.state.artifacts import (INITIAL_EVAL, Writer, batch_file_name, blob_file_name,
                                             committed_batch_name, eval_file_name, extend_spans, parse_artifact,
                                             span_for, writer_attempt)
from rollout_runtime.state.sweep import garbage, release_batches, retention_floor, sweep, sweep_committed_eval


def test_writer_ids_and_names_round_trip() -> None:
    w = Writer.new(3)
    assert w.id.startswith("a3-") and writer_attempt(w.id) == 3 and Writer.new(3).id != w.id
    name = batch_file_name(7, w.id, "parquet")
    assert name == f"rollout_000007.{w.id}.parquet"
    art = parse_artifact(name)
    assert (art.kind, art.rollout_id, art.writer, art.ext, art.attempt) == ("batch", 7, w.id, "parquet", 3)
    blob = parse_artifact(blob_file_name(12, "a0-abcdef"))
    assert (blob.kind, blob.rollout_id, blob.attempt) == ("blob", 12, 0)
    assert parse_artifact(".rollout_000001.a1-abcdef.jsonl.x1y2z3.tmp").kind == "temp"
    assert parse_artifact(".buffer_000001.a1-abcdef.json.x1y2z3.tmp").kind == "temp"
    assert parse_artifact(".eval_000001.a1-abcdef.json.x1y2z3.tmp").kind == "temp"
    report = parse_artifact(eval_file_name(5, "a2-abcdef"))
    assert report.name == "eval_000005.a2-abcdef.json" and (report.kind, report.rollout_id, report.attempt) == (
        "eval", 5, 2)
    initial = parse_artifact(eval_file_name(INITIAL_EVAL, "a1-abcdef"))
    assert initial.name == "eval_initial.a1-abcdef.json" and (initial.kind, initial.rollout_id) == ("eval", -1)
    for other in ("eval_000002.json", "eval_initial.json", "rollout_000001.jsonl", "notes.txt", ".state", "rollout_000001.a1-xyz.jsonl"):
        assert parse_artifact(other) is None, other


def test_spans_name_every_committed_batch() -> None:
    spans = extend_spans([], 0, "a1-aaaaaa", "jsonl")
    spans = extend_spans(spans, 1, "a1-aaaaaa", "jsonl")  # same writer: no new span
    spans = extend_spans(spans, 2, "a2-bbbbbb", "jsonl")
    spans = extend_spans(spans, 5, "a3-cccccc", "parquet")
    assert [(s.first_rollout_id, s.writer) for s in spans] == [(0, "a1-aaaaaa"), (2, "a2-bbbbbb"), (5, "a3-cccccc")]
    assert span_for(spans, 4).writer == "a2-bbbbbb" and span_for(spans, 9).format == "parquet"
    assert committed_batch_name(spans, 6, 1) == "rollout_000001.a1-aaaaaa.jsonl"
    assert committed_batch_name(spans, 6, 6) == "rollout_000006.a3-cccccc.parquet"
    assert committed_batch_name(spans, 6, 7) is None  # not committed yet
    late = extend_spans([], 4, "a1-aaaaaa", "jsonl")  # start_rollout_id 4
    assert committed_batch_name(late, 6, 3) is None


def _state(last: int, **kw) -> RolloutState:
    spans = extend_spans(extend_spans([], 0, "a1-aaaaaa", "jsonl"), 2, "a2-bbbbbb", "jsonl")
    return RolloutState(rollout_id=last, writers=spans, **kw)


def test_garbage_rules() -> None:
    state = _state(3, data_source=DataSourceState(buffer_ref="/out/.state/buffer_000003.a2-bbbbbb.json"))
    names = [
        "rollout_000000.a1-aaaaaa.jsonl",   # committed
        "rollout_000002.a1-aaaaaa.jsonl",   # id 2 was committed by a2: a crashed/fenced writer's copy
        "rollout_000002.a2-bbbbbb.jsonl",   # committed
        "rollout_000003.a2-cccccc.jsonl",   # same attempt, other writer, id committed by bbbbbb: garbage
        "rollout_000004.a1-aaaaaa.jsonl",   # above the commit, fenced attempt: garbage
        "rollout_000004.a2-dddddd.jsonl",   # above the commit, current attempt: maybe a live writer, kept
        "rollout_000002.a2-bbbbbb.parquet",  # committed id and writer, but not the committed format
        "buffer_000003.a2-bbbbbb.json",     # referenced
        "buffer_000002.a2-bbbbbb.json",     # superseded
        "buffer_000003.a2-eeeeee.json",     # same id, same attempt, other writer: kept (may still commit)
        "buffer_000004.a1-aaaaaa.json",     # fenced
        ".rollout_000004.a2-dddddd.jsonl.k3j2.tmp",
        "eval_000002.json", "rollout_000001.jsonl", "README",
    ]
    assert garbage(names, state, fence_attempt=2) == sorted([
        "rollout_000002.a1-aaaaaa.jsonl", "rollout_000003.a2-cccccc.jsonl", "rollout_000004.a1-aaaaaa.jsonl",
        "rollout_000002.a2-bbbbbb.parquet", "buffer_000002.a2-bbbbbb.json", "buffer_000004.a1-aaaaaa.json",
        ".rollout_000004.a2-dddddd.jsonl.k3j2.tmp"])
    # Nothing committed yet: only fenced attempts' files and temp files go.
    assert garbage(["rollout_000000.a1-aaaaaa.jsonl", "rollout_000000.a2-bbbbbb.jsonl"], None, 2) == [
        "rollout_000000.a1-aaaaaa.jsonl"]
    # No fence known (a hand-run job): files above the commit are never judged.
    assert garbage(["rollout_000004.a1-aaaaaa.jsonl"], state, None) == []


def test_eval_report_garbage_rules() -> None:
    """A committed report stays; another writer's copy of a recorded key goes; an unrecorded one goes
    once no commit can record it (its id is below the last commit, or its attempt is fenced off)."""
    state = _state(5, evals={INITIAL_EVAL: "a1-aaaaaa", 1: "a1-aaaaaa", 3: "a2-bbbbbb"})
    names = [
        "eval_initial.a1-aaaaaa.json",   # committed
        "eval_000001.a1-aaaaaa.json",    # committed
        "eval_000003.a2-bbbbbb.json",    # committed
        "eval_000003.a1-ffffff.json",    # a stale attempt's report of a recorded key
        "eval_000003.a2-cccccc.json",    # the current attempt's other writer, key recorded by bbbbbb
        "eval_initial.a2-dddddd.json",   # a second initial eval: the commit names a1's
        "eval_000004.a2-dddddd.json",    # unrecorded, below the last commit: no commit can name it now
        "eval_000005.a2-dddddd.json",    # unrecorded, the last commit's id, current attempt: may be recorded yet
        "eval_000005.a1-eeeeee.json",    # unrecorded, the last commit's id, fenced attempt
        ".eval_000005.a2-dddddd.json.abc.tmp",
        "eval_000001.json", "eval_initial.json",  # a runtime before writer ids: left alone
    ]
    assert garbage(names, state, fence_attempt=2) == sorted([
        "eval_000003.a1-ffffff.json", "eval_000003.a2-cccccc.json", "eval_initial.a2-dddddd.json",
        "eval_000004.a2-dddddd.json", "eval_000005.a1-eeeeee.json", ".eval_000005.a2-dddddd.json.abc.tmp"])
    # Before the first commit, the initial eval of the current attempt waits for rollout 0's commit.
    assert garbage(["eval_initial.a2-dddddd.json", "eval_initial.a1-eeeeee.json"], None, 2) == [
        "eval_initial.a1-eeeeee.json"]


def test_sweep_committed_eval_removes_the_other_reports_of_that_key(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    state = _state(3, evals={3: "a2-bbbbbb"})
    for name in ("eval_000003.a2-bbbbbb.json", "eval_000003.a2-cccccc.json", "eval_000003.a1-aaaaaa.json",
                 "eval_000001.a2-cccccc.json", "eval_000003.json"):
        (out / name).write_text("{}")
    assert sweep_committed_eval(str(out), state, 3, fence_attempt=2) == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "eval_000001.a2-cccccc.json", "eval_000003.a2-bbbbbb.json", "eval_000003.json"]


def test_retention_floor_never_passes_the_trainer_or_the_last_n() -> None:
    assert retention_floor(10, consumed=8, keep_last=None, pruned_through=-1) == -1  # no retention
    assert retention_floor(10, consumed=8, keep_last=3, pruned_through=-1) == 7  # keeps 8, 9, 10
    assert retention_floor(10, consumed=4, keep_last=3, pruned_through=-1) == 4  # 5.. not read yet
    assert retention_floor(10, consumed=-1, keep_last=0, pruned_through=-1) == -1  # nothing read
    assert retention_floor(10, consumed=10, keep_last=0, pruned_through=-1) == 10
    assert retention_floor(10, consumed=2, keep_last=3, pruned_through=5) == 5  # never goes back


def test_sweep_and_release_on_disk(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    state = _state(3, pruned_through=0)
    keep = [state.batch_name(i) for i in (1, 2, 3)] + ["rollout_000004.a2-dddddd.jsonl", "eval_000000.json"]
    doomed = [state.batch_name(0), "rollout_000001.a2-ffffff.jsonl", ".rollout_000005.a2-dddddd.jsonl.abc.tmp"]
    for name in keep + doomed:
        (out / name).write_text("x")
    assert sweep([str(out), str(out)], state, fence_attempt=2) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(keep)
    state.pruned_through = 2
    assert release_batches(str(out), state, after=0) == 2
    assert not (out / state.batch_name(1)).exists() and not (out / state.batch_name(2)).exists()
    assert (out / state.batch_name(3)).exists()


@pytest.mark.parametrize("where", ["local", "memory"])
def test_publish_never_replaces(tmp_path: Path, where: str) -> None:
    url = str(tmp_path / "b" / "rollout_000001.a1-aaaaaa.jsonl") if where == "local" else "memory://pub/x.jsonl"
    publish_bytes(url, b"first")
    with pytest.raises(FileExistsError):
        publish_bytes(url, b"second")
    with fsspec.open(url, "rb") as fh:
        assert fh.read() == b"first"
    if where == "local":
        assert [p.name for p in (tmp_path / "b").iterdir()] == ["rollout_000001.a1-aaaaaa.jsonl"]  # no temp left


def test_publish_without_hard_links_still_refuses_to_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "rollout_000001.a1-aaaaaa.jsonl"
    publish_bytes(str(target), b"first")
    with pytest.raises(FileExistsError):
        publish_bytes(str(target), b"second")
    assert target.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_crash_before_publish_leaves_only_a_temporary_file(tmp_path: Path) -> None:
    class Killed(BaseException):
        pass

    def die() -> None:
        raise Killed

    with pytest.raises(Killed):
        publish_bytes(str(tmp_path / "rollout_000001.a1-aaaaaa.jsonl"), b"x", before_publish=die)
    # An in-process failure cleans up after itself; a SIGKILL would leave `.rollout_*.tmp` (the sweep's job).
    assert list(tmp_path.iterdir()) == []


def test_local_fence_stops_an_older_process(tmp_path: Path) -> None:
    old = JsonFileStateStore(tmp_path)
    first = old.claim(None)
    assert first.attempt == 1  # local runs count their own attempts
    _, version = old.read()
    v1 = old.commit(RolloutState(rollout_id=0, attempt=1), version)
    new = JsonFileStateStore(tmp_path)
    assert new.claim(None).attempt == 2
    with pytest.raises(StateConflictError, match="superseded"):
        old.ensure_current(v1)
    with pytest.raises(StateConflictError, match="superseded"):
        old.commit(RolloutState(rollout_id=1, attempt=1), v1)
    with pytest.raises(StateConflictError, match="superseded"):
        JsonFileStateStore(tmp_path).claim(1)  # an explicit older attempt cannot start
    _, version = new.read()
    new.commit(RolloutState(rollout_id=1, attempt=2), version)
    assert JsonFileStateStore(tmp_path).claim(5).attempt == 5


def test_claim_removes_state_temp_files_of_a_killed_commit(tmp_path: Path) -> None:
    store = JsonFileStateStore(tmp_path)
    store.claim(None)
    folder = tmp_path / "rollout"
    for name in (".state.json.abc123.tmp", ".global_dataset_state_dict_3.json.xyz.tmp", "notes.tmp"):
        (folder / name).write_text("partial")
    JsonFileStateStore(tmp_path).claim(None)
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) == ["notes.tmp"]


def test_consumption_mark_only_rises(tmp_path: Path) -> None:
    store = JsonFileStateStore(tmp_path)
    assert store.read_consumed() == -1
    assert store.ack(3) == 3 and store.ack(1) == 3 and store.read_consumed() == 3
    # The mark lives beside the state, never in it: a commit does not touch it.
    store.commit(RolloutState(rollout_id=0), None)
    assert store.read_consumed() == 3 and "consumed" not in store.path.read_text()


def test_a_state_from_before_writer_ids_still_names_its_batches() -> None:
    legacy = RolloutState.model_validate({"rollout_id": 2, "last_batch": "/out/rollout_000002.parquet"})
    assert [legacy.batch_name(k) for k in range(4)] == [
        "rollout_000000.parquet", "rollout_000001.parquet", "rollout_000002.parquet", None]
    resumed = RolloutState(rollout_id=3, last_batch="/out/rollout_000003.a2-abcdef.jsonl",
                           writers=extend_spans(legacy.writers, 3, "a2-abcdef", "jsonl"))
    assert resumed.batch_name(1) == "rollout_000001.parquet"
    assert resumed.batch_name(3) == "rollout_000003.a2-abcdef.jsonl"
    assert garbage(["rollout_000001.parquet"], resumed, fence_attempt=2) == []  # old names are never swept
