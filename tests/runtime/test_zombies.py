"""Exactly-once against a stale attempt that keeps running, and clean-up of what crashes leave, on the local store.

Two processes with attempt numbers 1 and 2 (or both 1: a pod replaced within its attempt) run the
same job over each other (tests/runtime/overlap.py); 20 random interleavings.
"""

from __future__ import annotations

import time

import pytest

from rollout_runtime.reader import RolloutReader
from rollout_runtime.runner import Runner
from rollout_runtime.state import JsonFileStateStore
from tests.conftest import write_jsonl
from tests.runtime.overlap import Scenario, check_exactly_once, check_zombie_lost, job, run_overlap
from tests.runtime.test_runner import batches, committed, run_cli, write_config

REPEATS = 20


@pytest.mark.parametrize("seed", range(REPEATS))
def test_overlapping_attempts_local_store(sim_engines, tmp_path, arith_rows, monkeypatch, seed):
    scenario = Scenario.draw(seed)
    config_path, args = job(tmp_path, sim_engines.url, arith_rows)
    out = tmp_path / "out"
    reader = RolloutReader(out)
    t0 = time.perf_counter()
    outcome = run_overlap(scenario, config_path, args, {}, reader, monkeypatch)
    check_zombie_lost(outcome, scenario, reader, out)
    final, _ = JsonFileStateStore(out / ".state").read()
    check_exactly_once(reader, final, args)
    # The commit history agrees batch by batch: each snapshot's count grew by exactly its batch.
    store = JsonFileStateStore(out / ".state")
    for rollout_id in range(args.num_rollout):
        before = store.read_snapshot(rollout_id - 1).completed if rollout_id else 0
        grown = store.read_snapshot(rollout_id).completed - before
        assert grown == sum(len(g) for g in reader.get(rollout_id, timeout=0))
    # A later start sweeps the stale attempt's leftover; only committed files remain.
    monkeypatch.setenv("KUBEROLLOUT_ATTEMPT", "3")
    assert Runner(args).run().rollouts == 0
    assert batches(out) == committed(out)
    print(f"seed {seed}: {scenario} in {time.perf_counter() - t0:.1f}s {outcome.timings}")


def test_kill_during_temporary_write_leaves_nothing_behind(sim_engines, tmp_path, arith_rows):
    """SIGKILL-like exit with the batch in its temporary file: the restart removes it and finishes."""
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    cfg = write_config(tmp_path, sim_engines.url, data, dynamic_sampling_filter_path=None)
    out = tmp_path / "out"
    crashed = run_cli("--config", str(cfg), env={"KUBEROLLOUT_CRASH_DURING_WRITE": "2"})
    assert crashed.returncode == 137, crashed.stderr
    temps = sorted(p.name for p in out.glob(".rollout_*.tmp"))
    assert len(temps) == 1 and temps[0].startswith(".rollout_000002."), temps
    assert JsonFileStateStore(out / ".state").read()[0].rollout_id == 1
    assert [p.name.split(".")[0] for p in batches(out)] == ["rollout_000000", "rollout_000001"]

    resumed = run_cli("--config", str(cfg))
    assert resumed.returncode == 0, resumed.stderr
    assert "removed 1 leftover file(s)" in resumed.stderr
    assert not list(out.glob(".rollout_*")), "temporary file left behind"
    assert batches(out) == committed(out) and len(batches(out)) == 4
