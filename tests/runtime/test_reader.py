"""RolloutReader on a local run: committed batches only, the same bytes after any restart, retention."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from rollout_runtime.reader import BatchDeletedError, JobFinishedError, RolloutReader
from rollout_runtime.runner import Progress, Runner
from rollout_runtime.state import JsonFileStateStore, RolloutState
from tests.conftest import write_jsonl
from tests.runtime.test_runner import batches, run_cli, write_config
from tests.runtime.overlap import job


def groups_shape(groups: list[list[Any]]) -> list[tuple[int, int]]:
    """(group_index, size) per group: one prompt per group, as the runtime grouped them."""
    shape = []
    for group in groups:
        assert len({s.group_index for s in group}) == 1 and len({str(s.prompt) for s in group}) == 1
        shape.append((group[0].group_index, len(group)))
    return shape


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_reader_sees_only_commits_and_the_same_bytes_after_restarts(sim_engines, tmp_path, arith_rows, fmt):
    cfg = write_config(tmp_path, sim_engines.url, write_jsonl(tmp_path / "d.jsonl", arith_rows), output_format=fmt,
                       num_rollout=5)
    out = tmp_path / "out"
    crashed = run_cli("--config", str(cfg), env={"KUBEROLLOUT_CRASH_AFTER_WRITE": "2"})
    assert crashed.returncode == 137, crashed.stderr
    assert len(batches(out, fmt)) == 3  # rollout 2 is on disk, not committed

    trainer = RolloutReader(out)
    with pytest.raises(TimeoutError, match="rollout 2 was not committed within 0.3s"):
        trainer.get(2, timeout=0.3)  # the uncommitted file is never returned
    before = {k: trainer.get_bytes(k, timeout=0) for k in (0, 1)}
    first = trainer.get(0, timeout=0)
    assert groups_shape(first) == [(g[0].group_index, 4) for g in first] and len(first) == 3

    waited: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: waited.setdefault("groups", trainer.get(3, timeout=120)))
    waiter.start()  # a trainer already waiting for batch 3 while the runtime restarts
    resumed = run_cli("--config", str(cfg))
    assert resumed.returncode == 0, resumed.stderr
    waiter.join(130)
    assert [s.to_dict() for g in waited["groups"] for s in g] == [s.to_dict() for g in trainer.get(3) for s in g]

    # Runtime restarted: committed batches are byte for byte what they were.
    assert {k: trainer.get_bytes(k) for k in (0, 1)} == before
    # Trainer restarted at step 1: a new reader reads batch 1 again, identically, then goes on.
    restarted = RolloutReader(out)
    assert restarted.get_bytes(1) == before[1]
    seen = list(restarted.iter_batches(start=1))
    assert [k for k, _ in seen] == [1, 2, 3, 4]  # ends with the job
    assert [groups_shape(g) for _, g in seen] == [groups_shape(trainer.get(k)) for k in (1, 2, 3, 4)]
    with pytest.raises(JobFinishedError, match="finished after rollout 4"):
        restarted.get(5, timeout=5)
    # Batch 2 is the regenerated one: the crashed attempt's file was swept, the reader names the new one.
    assert restarted.url(2).endswith(f".{fmt}") and Path(restarted.url(2)).exists()
    assert sorted(map(str, batches(out, fmt))) == sorted(restarted.url(k) for k in range(5))
    # An fsspec URL for the output works the same.
    assert RolloutReader(f"file://{out}", state=out / ".state").get_bytes(4) == trainer.get_bytes(4)


def test_ack_refuses_uncommitted_ids(sim_engines, tmp_path, arith_rows):
    _, args = job(tmp_path, sim_engines.url, arith_rows, num_rollout=2)
    Runner(args).run()
    reader = RolloutReader(args.output_dir)
    with pytest.raises(ValueError, match="not committed yet"):
        reader.ack(2)
    assert reader.ack(1) == 1 and reader.consumed() == 1


class LaggingTrainer(Progress):
    """After each commit, a trainer that acks two batches behind, and a record of what was on disk."""

    def __init__(self, reader: RolloutReader, lag: int | None) -> None:
        self.reader, self.lag = reader, lag
        self.checks: list[tuple[int, int, int]] = []

    def update(self, rollout_id: int, state: RolloutState, stats: Any, tokens_per_s: float, **_: Any) -> None:
        consumed = self.reader.consumed()
        on_disk = {int(p.name[8:14]) for p in Path(self.reader.output_dir).glob("rollout_*")}
        # Never a batch the trainer has not acked, and never one of the last keepLast.
        assert set(range(consumed + 1, rollout_id + 1)) <= on_disk, (rollout_id, consumed, on_disk)
        assert state.pruned_through <= consumed and state.pruned_through <= rollout_id - state.keep_last
        assert not {k for k in on_disk if k <= state.pruned_through}
        self.checks.append((rollout_id, consumed, state.pruned_through))
        if self.lag is not None and rollout_id - self.lag >= 0:
            self.reader.get(rollout_id - self.lag, timeout=0)
            self.reader.ack(rollout_id - self.lag)


def test_retention_deletes_only_acked_batches(sim_engines, tmp_path, arith_rows):
    _, args = job(tmp_path, sim_engines.url, arith_rows, num_rollout=6, output_keep_last=1)
    reader = RolloutReader(args.output_dir)
    trainer = LaggingTrainer(reader, lag=2)
    Runner(args, progress=trainer).run()
    # At commit k the mark was k-3 (acked after commit k-1): those and older went, nothing newer.
    assert [(k, p) for k, _, p in trainer.checks] == [(0, -1), (1, -1), (2, -1), (3, 0), (4, 1), (5, 2)]
    assert sorted(int(p.name[8:14]) for p in batches(Path(args.output_dir))) == [3, 4, 5]
    with pytest.raises(BatchDeletedError, match=r"deleted by retention: output.keepLast=1 .*acked through 3"):
        reader.get(1, timeout=0)
    assert len(reader.get(5, timeout=0)) == args.rollout_batch_size


def test_retention_without_acks_deletes_nothing(sim_engines, tmp_path, arith_rows):
    _, args = job(tmp_path, sim_engines.url, arith_rows, num_rollout=4, output_keep_last=0)
    reader = RolloutReader(args.output_dir)
    Runner(args, progress=LaggingTrainer(reader, lag=None)).run()
    assert len(batches(Path(args.output_dir))) == 4
    state = JsonFileStateStore(Path(args.output_dir) / ".state").read_committed()
    assert state.pruned_through == -1 and state.keep_last == 0
    assert [len(reader.get(k, timeout=0)) for k in range(4)] == [args.rollout_batch_size] * 4
