"""`rollout-runtime run` as a user runs it: a subprocess, a config file, kills and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from rollout_runtime import fault_hooks
from rollout_runtime.engines.sim import start_sim_cluster_thread
from rollout_runtime.output import read_batch
from rollout_runtime.reader import RolloutReader
from rollout_runtime.state import JsonFileStateStore
from tests.conftest import REPO, TINY_MODEL, write_jsonl
from tests.runtime.test_rollout_sim import DYNAMIC, sim_config


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    handle = start_sim_cluster_thread(2, sim_config())
    yield handle
    handle.stop()


def write_config(tmp_path: Path, url: str, data: str, **kw: Any) -> Path:
    cfg = dict(prompt_data=data, input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
               apply_chat_template=True, sglang_router_url=url, rollout_batch_size=3, n_samples_per_prompt=4,
               over_sampling_batch_size=4, dynamic_sampling_filter_path=DYNAMIC, partial_rollout=True,
               rollout_max_response_len=48, rm_type="math", num_rollout=4, output_dir=str(tmp_path / "out"))
    cfg.update(kw)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rollout_runtime.cli", "run", "--no-progress", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def batches(out: Path, ext: str = "jsonl") -> list[Path]:
    """Every batch file in the folder, committed or not (tests look; readers go through the commit)."""
    return sorted(out.glob(f"rollout_*.{ext}"))


def committed(out: Path) -> list[Path]:
    """The files the last commit names, by rollout id."""
    state = JsonFileStateStore(out / ".state").read_committed()
    return [out / state.batch_name(i) for i in range(state.rollout_id + 1)] if state else []


def ids(paths: list[Path]) -> list[int]:
    return [int(p.name.split(".")[0].split("_")[1]) for p in paths]


def test_run_writes_batches_and_commits(engine, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    cfg = write_config(tmp_path, engine.url, data)
    proc = run_cli("--config", str(cfg), "--summary-json", str(tmp_path / "summary.json"))
    assert proc.returncode == 0, proc.stderr
    assert "rollout summary" in proc.stdout and "mean reward" in proc.stdout
    out = tmp_path / "out"
    assert batches(out) == committed(out) and ids(batches(out)) == list(range(4))
    for p in batches(out):
        samples = read_batch(str(p))
        assert len(samples) == 12 and len({s.group_index for s in samples}) == 3
    state, _ = JsonFileStateStore(out / ".state").read()
    assert state.rollout_id == 3 and state.finished and state.completed == 48
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["completed"] == 48 and summary["filtered"] == state.filtered and summary["aborted"] == state.aborted
    # running again does nothing: everything is committed
    again = run_cli("--config", str(cfg))
    assert again.returncode == 0 and "rollouts       0" in again.stdout
    assert len(batches(out)) == 4


def test_kill_between_write_and_commit_then_resume(engine, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    cfg = write_config(tmp_path, engine.url, data, rollout_shuffle=True)
    out = tmp_path / "out"
    crashed = run_cli("--config", str(cfg), env={"KUBEROLLOUT_CRASH_AFTER_WRITE": "1"})
    assert crashed.returncode == 137
    assert ids(batches(out)) == [0, 1]  # 1 written, not committed
    state, _ = JsonFileStateStore(out / ".state").read()
    assert state.rollout_id == 0 and committed(out) == batches(out)[:1]
    uncommitted = batches(out)[1]
    position_after_0 = state.data_source.sample_group_index

    resumed = run_cli("--config", str(cfg))
    assert resumed.returncode == 0, resumed.stderr
    files = batches(out)
    assert files == committed(out) and ids(files) == list(range(4))  # each id exactly once
    assert not uncommitted.exists(), "the crashed attempt's uncommitted batch was not swept"
    state, _ = JsonFileStateStore(out / ".state").read()
    total = sum(len(read_batch(str(p))) for p in files)
    assert state.finished and state.completed == total == 48
    # rollout 1 was regenerated from the position committed after rollout 0: the lost attempt's
    # draws were not counted, so group indices continue from there
    redo = read_batch(str(committed(out)[1]))
    snap = JsonFileStateStore(out / ".state").read_snapshot(1)
    assert snap.data_source.sample_group_index > position_after_0
    assert all(s.group_index < snap.data_source.sample_group_index for s in redo)
    assert not list(out.glob(".rollout_*")), "temporary files left behind"


def test_parquet_output_and_cli_flags_override_config(engine, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    cfg = write_config(tmp_path, engine.url, data, num_rollout=1)
    proc = run_cli("--config", str(cfg), "--output-format", "parquet", "--rollout-batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    files = batches(tmp_path / "out", "parquet")
    assert files == committed(tmp_path / "out") and ids(files) == [0]
    assert len(read_batch(str(files[0]))) == 8


def test_bad_config_and_dataset_fail_clearly(engine, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    cfg = write_config(tmp_path, engine.url, data)
    typo = run_cli("--config", str(cfg), "--n-samples-per-promt", "2")
    assert typo.returncode == 2 and "unknown flag --n-samples-per-promt (did you mean --n-samples-per-prompt?)" in typo.stderr
    bad_rows = write_jsonl(tmp_path / "bad.jsonl", [{"question": "What is 1+1?", "label": "2"}])
    cfg2 = write_config(tmp_path, engine.url, bad_rows)
    proc = run_cli("--config", str(cfg2))
    assert proc.returncode == 2 and "has no input key 'prompt'" in proc.stderr
    assert not (tmp_path / "out").exists() or not batches(tmp_path / "out")


def test_sigterm_stops_cleanly_and_resumes(tmp_path, arith_rows):
    handle = start_sim_cluster_thread(1, sim_config(token_latency=0.01, length_dist="fixed", length_median=40,
                                                    length_max=40))
    try:
        data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
        cfg = write_config(tmp_path, handle.url, data, num_rollout=6, dynamic_sampling_filter_path=None)
        out = tmp_path / "out"
        proc = subprocess.Popen([sys.executable, "-m", "rollout_runtime.cli", "run", "--no-progress", "--config", str(cfg)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        # wait for the first commit, not just the first batch file: a SIGTERM between a batch's write and its
        # commit (a real window) would leave nothing committed yet, which is not what this test is about
        while JsonFileStateStore(out / ".state").read()[0] is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "resumes after the last committed rollout" in err
        state, _ = JsonFileStateStore(out / ".state").read()
        assert state is not None and not state.finished
        done = run_cli("--config", str(cfg))
        assert done.returncode == 0, done.stderr
        assert batches(out) == committed(out) and ids(batches(out)) == list(range(6))
    finally:
        handle.stop()


def eval_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("eval_*.json"))


def test_eval_every_interval(engine, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    evald = write_jsonl(tmp_path / "e.jsonl", arith_rows[:5])
    cfg = write_config(tmp_path, engine.url, data, num_rollout=4, eval_interval=2, eval_prompt_data=["arith", evald],
                       n_samples_per_eval_prompt=2)
    proc = run_cli("--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    state = JsonFileStateStore(out / ".state").read_committed()
    # slime's numbering: the eval before rollout 0, then after rollout r for (r + 1) % interval == 0, as eval(r);
    # each published under the writer's name and named by the commit, like the batches
    assert sorted(state.evals) == [-1, 1, 3]
    assert eval_files(out) == sorted(state.eval_name(k) for k in (-1, 1, 3))
    reports = RolloutReader(out).eval_reports()
    assert [(r["rollout_id"], r["initial"]) for r in reports] == [(0, True), (1, False), (3, False)]
    report = reports[1]
    assert report["writer"] == state.evals[1] and {"mean_reward", "pass@1", "pass@2"} <= set(report["metrics"]["arith"])
    assert len(report["samples"]["arith"]) == 10


def test_an_eval_the_runtime_stopped_before_runs_on_resume_and_a_stale_report_is_never_read(engine, tmp_path,
                                                                                             arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    evald = write_jsonl(tmp_path / "e.jsonl", arith_rows[:3])
    cfg = write_config(tmp_path, engine.url, data, num_rollout=4, eval_interval=2, eval_prompt_data=["arith", evald],
                       n_samples_per_eval_prompt=2)
    out = tmp_path / "out"
    # Killed after committing rollout 1 and before the eval that follows it: no commit records eval 1.
    crashed = run_cli("--config", str(cfg), env={fault_hooks.CRASH_BEFORE_EVAL_ENV: "1"})
    assert crashed.returncode == fault_hooks.CRASH_EXIT_CODE, crashed.stderr
    state = JsonFileStateStore(out / ".state").read_committed()
    assert state.rollout_id == 1 and sorted(state.evals) == [-1]
    first_writer = state.evals[-1]
    # A stale attempt's report of eval 1 (it was fenced off after writing it): never the one read.
    stale = out / "eval_000001.a0-ffffff.json"
    stale.write_text(json.dumps({"rollout_id": 1, "initial": False, "metrics": {"arith": {"mean_reward": -7.0}}}))
    resumed = run_cli("--config", str(cfg))
    assert resumed.returncode == 0, resumed.stderr
    assert "rollout 1 was committed but not its eval: evaluating now" in resumed.stderr
    state = JsonFileStateStore(out / ".state").read_committed()
    assert state.rollout_id == 3 and sorted(state.evals) == [-1, 1, 3]
    assert state.evals[-1] == first_writer  # the eval before rollout 0 is not run again
    assert state.evals[1] != first_writer and state.evals[1] == state.evals[3]  # eval 1 by the resumed run
    reports = RolloutReader(out).eval_reports()
    assert [r["rollout_id"] for r in reports] == [0, 1, 3]
    assert reports[1]["metrics"]["arith"]["mean_reward"] >= 0.0
    assert not stale.exists()  # a fenced-off attempt's: the start-up sweep removed it
    assert eval_files(out) == sorted(state.eval_name(k) for k in (-1, 1, 3))
