"""A short run of examples/rl-loop's real loop: 2 dev engines, the real sglang-router, `rollout-runtime run`,
the GRPO trainer reading committed batches and publishing each new version to the engines."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console

pytest.importorskip("torch")
pytest.importorskip("sglang_router")

from grpo import GRPOConfig  # noqa: E402
from loop import LoopSettings, run_loop  # noqa: E402
from rollout_runtime.reader import RolloutReader  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STEPS = 3

pytestmark = [pytest.mark.slow, pytest.mark.router, pytest.mark.timeout(900)]


def test_a_short_loop_trains_publishes_and_reads_each_batch_once(tmp_path):
    settings = LoopSettings(repo=str(REPO), model=str(REPO / "examples" / "tiny-model"),
                            rollout_config=str(REPO / "examples" / "rl-loop" / "rollout.yaml"), out_dir=str(tmp_path),
                            steps=STEPS, eval_every=STEPS, eval_prompts=8)
    record = run_loop(settings, GRPOConfig(), Console(file=io.StringIO(), width=160))

    # versions advanced: every engine serves the last version the trainer published, saved on disk
    assert record.settings["served_versions_at_end"] == [STEPS] * settings.engines
    assert all((tmp_path / f"v{v}" / "model.safetensors").is_file() for v in range(1, STEPS + 1))  # keep_versions 3
    # every batch read once, in order, and nothing else was committed for it to miss
    assert record.settings["batches_read"] == list(range(STEPS))
    reader = RolloutReader(str(tmp_path / "rollouts"))
    committed = reader.committed()
    assert committed is not None and committed.rollout_id == STEPS - 1 and committed.finished
    assert reader.consumed() == STEPS - 1
    # the loss is finite; step 0's batch came from version 0 and the trainer agreed with the engines on it
    assert [s.step for s in record.steps] == list(range(1, STEPS + 1))
    assert all(math.isfinite(s.loss) for s in record.steps)
    assert record.steps[0].versions == [0]
    assert record.steps[0].extra["parity_max_abs"] is not None and record.steps[0].extra["parity_max_abs"] < 1e-3
    # no batch holds tokens from a version the trainer had not published when it was generated
    for k, step in enumerate(record.steps):
        assert max(step.versions) <= k
    assert [e.step for e in record.evals] == [0, STEPS]
    assert all(0.0 <= e.accuracy <= 1.0 for e in record.evals)
