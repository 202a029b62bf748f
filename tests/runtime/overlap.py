"""Two overlapping attempts of one job, and the exactly-once check on what they leave committed.

The older attempt A runs as its own process. It is stopped (SIGSTOP, as a partitioned node or a
frozen VM stops a pod the API server has given up on) at the worst moment: after its pre-write
fence check passed and before it publishes rollout `stop_at` (the `KUBEROLLOUT_PAUSE_BEFORE_WRITE`
hook parks it there). The newer attempt B then runs the same job in this process, from A's last
commit, and A is resumed (SIGCONT) once B has committed `resume_after`: A then writes its stale
batch (and, on the ConfigMap store, its buffer blob) after B committed the same rollout id, and
its commit must fail. Before writer-unique names, A's write replaced B's committed file.

Used by tests/runtime/test_zombies.py (local file store) and tests/operator/test_cluster_batches.py
(ConfigMap store on the test control plane).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollout_runtime.config import RolloutConfig
from rollout_runtime.contract import ATTEMPT_ENV
from rollout_runtime.fault_hooks import PAUSE_BEFORE_WRITE_ENV
from rollout_runtime.reader import RolloutReader
from rollout_runtime.runner import Progress, Runner
from rollout_runtime.state import RolloutState
from tests.conftest import REPO, TINY_MODEL, write_jsonl

NUM_ROLLOUT = 5
CONFIG = dict(input_key="prompt", label_key="label", apply_chat_template=True, rollout_batch_size=3,
              n_samples_per_prompt=2, over_sampling_batch_size=4, partial_rollout=True, rollout_max_response_len=32,
              rm_type="math", num_rollout=NUM_ROLLOUT)


def job(tmp_path: Path, engine_url: str, rows: list[dict[str, Any]], **kw: Any) -> tuple[Path, RolloutConfig]:
    """The overlap tests' job: a config file for the subprocess, and the same config for this process."""
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    values = dict(CONFIG, prompt_data=data, hf_checkpoint=str(TINY_MODEL), sglang_router_url=engine_url,
                  output_dir=str(tmp_path / "out"), **kw)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(values))
    return path, RolloutConfig(**values)


@dataclass(frozen=True)
class Scenario:
    """Where A is stopped, when it resumes, and whether B runs as the same attempt (a pod replaced in-attempt)."""

    stop_at: int
    resume_after: int
    same_attempt: bool

    @classmethod
    def draw(cls, seed: int) -> Scenario:
        rng = random.Random(seed)
        stop_at = rng.randrange(NUM_ROLLOUT)
        return cls(stop_at, rng.randrange(stop_at, NUM_ROLLOUT), rng.random() < 1 / 3)

    @property
    def b_attempt(self) -> int:
        return 1 if self.same_attempt else 2


@dataclass
class Outcome:
    a_returncode: int
    a_log: str
    b_rollouts: int
    resumed_after: list[int] = field(default_factory=list)
    #: The committed batches' bytes (through the reader) at the moment A was resumed.
    committed_at_resume: dict[int, bytes] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class _ResumeA(Progress):
    """B's progress hook: resume A right after B commits `resume_after` (and in any case at B's end)."""

    def __init__(self, pid: int, resume_after: int, outcome: Outcome, reader: RolloutReader) -> None:
        self.pid, self.resume_after, self.outcome, self.reader, self.sent = pid, resume_after, outcome, reader, False

    def update(self, rollout_id: int, state: RolloutState, stats: Any, tokens_per_s: float, **_: Any) -> None:
        if rollout_id == self.resume_after:
            self.outcome.resumed_after.append(rollout_id)
            self.outcome.committed_at_resume = {k: self.reader.get_bytes(k, timeout=0) for k in range(rollout_id + 1)}
            self.resume()

    def resume(self) -> None:
        if not self.sent:
            self.sent = True
            os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()


def run_overlap(scenario: Scenario, config_path: Path, args: RolloutConfig, env: dict[str, str], reader: RolloutReader,
                monkeypatch: pytest.MonkeyPatch, before_b: Callable[[int], None] = lambda attempt: None) -> Outcome:
    """A as a subprocess (attempt 1), stopped before writing `stop_at`; then B here; then A resumed."""
    a_env = {**env, ATTEMPT_ENV: "1", PAUSE_BEFORE_WRITE_ENV: f"{scenario.stop_at}:30"}
    a = subprocess.Popen([sys.executable, "-m", "rollout_runtime.cli", "run", "--no-progress", "--config",
                          str(config_path)], cwd=REPO, env=a_env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    parked = threading.Event()

    def watch() -> None:
        assert a.stdout is not None
        for line in a.stdout:
            lines.append(line)
            if f"before writing rollout {scenario.stop_at}" in line and not parked.is_set():
                os.kill(a.pid, signal.SIGSTOP)
                parked.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        t0 = time.perf_counter()
        if not parked.wait(120):
            raise AssertionError("attempt A never reached its write:\n" + "".join(lines))
        before_b(scenario.b_attempt)
        monkeypatch.setenv(ATTEMPT_ENV, str(scenario.b_attempt))
        outcome = Outcome(0, "", 0)
        hook = _ResumeA(a.pid, scenario.resume_after, outcome, reader)
        outcome.timings["a_to_parked"] = time.perf_counter() - t0
        outcome.b_rollouts = Runner(args, progress=hook).run().rollouts
        outcome.timings["b_done"] = time.perf_counter() - t0
        hook.resume()
        a.wait(120)
        outcome.timings["a_exited"] = time.perf_counter() - t0
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
            a.wait(10)
        watcher.join(10)
    outcome.a_returncode, outcome.a_log = a.returncode, "".join(lines)
    return outcome


def check_exactly_once(reader: RolloutReader, final: RolloutState, args: RolloutConfig) -> int:
    """Every committed batch holds exactly what the newest commit says: no sample twice, none lost.

    `final` is the last commit with its buffer loaded. Returns the number of committed samples.
    """
    state = reader.committed()
    assert state is not None and state.finished and state.rollout_id == args.num_rollout - 1
    owner: dict[int, int] = {}
    for rollout_id in range(args.num_rollout):
        groups = reader.get(rollout_id, timeout=0)
        assert len(groups) == args.rollout_batch_size, (rollout_id, [len(g) for g in groups])
        for group in groups:
            assert len(group) == args.n_samples_per_prompt and len({s.group_index for s in group}) == 1
            for sample in group:
                assert sample.index not in owner, f"sample {sample.index} in batches {owner[sample.index]} and {rollout_id}"
                owner[sample.index] = rollout_id
    buffered = [s["index"] for group in final.data_source.buffer or [] for s in group]
    assert not set(buffered) & set(owner), "a committed sample is also still in the buffer"
    # None lost: every sample ever drawn is in exactly one committed batch or in the committed buffer.
    assert sorted([*owner, *buffered]) == list(range(final.data_source.sample_index))
    assert state.completed == len(owner)
    return len(owner)


def check_zombie_lost(outcome: Outcome, scenario: Scenario, reader: RolloutReader, output_dir: Path) -> None:
    """A resumed after B's commit, published its stale batch beside B's, and was refused at its commit.

    The batches committed when A resumed are byte for byte what they were.
    """
    assert outcome.a_returncode == 1, outcome.a_log
    assert "stopped without committing" in outcome.a_log and "stopping before writing" not in outcome.a_log, \
        outcome.a_log
    assert outcome.b_rollouts == NUM_ROLLOUT - scenario.stop_at
    assert outcome.resumed_after == [scenario.resume_after]
    assert {k: reader.get_bytes(k, timeout=0) for k in outcome.committed_at_resume} == outcome.committed_at_resume
    committed = reader.committed()
    assert committed is not None
    files = sorted(p.name for p in output_dir.glob(f"rollout_{scenario.stop_at:06d}.*"))
    name = committed.batch_name(scenario.stop_at)
    assert name in files and len(files) == 2, files  # A wrote its batch beside the committed one
    assert next(f for f in files if f != name).split(".")[1].startswith("a1-")
