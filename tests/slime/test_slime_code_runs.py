"""slime-style code of our own (tests/slime/plugins, `slime.*` imports only) run unchanged by `rollout-runtime run`.

Each test starts the runtime as a user does, a subprocess with a slime launch command line (trainer flags
included), against simulated SGLang engines behind a router front, and checks what came out: batches,
masks, rewards, eval reports, hook records and the committed state.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rollout_runtime.misc import load_function
from rollout_runtime.reader import RolloutReader
from rollout_runtime.state import JsonFileStateStore
from rollout_runtime.types import Sample, flatten
from tests.conftest import REPO, TINY_MODEL, write_jsonl
from tests.runtime.test_rollout_sim import cluster, slow_cluster  # noqa: F401 (fixtures)

P = "tests.slime.plugins"
# What a slime launch script puts on the same command line for the trainer and the engines.
TRAINER_FLAGS = ["--tensor-model-parallel-size", "1", "--context-parallel-size", "2", "--max-tokens-per-gpu", "4096",
                 "--colocate", "--sglang-mem-fraction-static", "0.7", "--use-dynamic-batch-size", "--lr", "1e-6"]


def slime_cli(tmp_path: Path, url: str, data: str, *flags: str, record: Path | None = None,
              timeout: float = 180) -> subprocess.CompletedProcess:
    argv = ["--prompt-data", data, "--input-key", "prompt", "--label-key", "label", "--hf-checkpoint", str(TINY_MODEL),
            "--apply-chat-template", "--sglang-router-url", url, "--rollout-max-response-len", "48",
            "--output-dir", str(tmp_path / "out"), *TRAINER_FLAGS, *flags]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if record is not None:
        env["SLIME_TEST_RECORD"] = str(record)
    return subprocess.run([sys.executable, "-m", "rollout_runtime.cli", "run", "--no-progress", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def batch(tmp_path: Path, rollout_id: int) -> list[Sample]:
    """The committed batch, read through the commit as a trainer reads it."""
    return flatten(RolloutReader(tmp_path / "out").get(rollout_id, timeout=0))


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_multi_turn_tool_use_with_loss_masks_and_dict_rewards(cluster, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    proc = slime_cli(tmp_path, cluster.url, data, "--rollout-batch-size", "3", "--n-samples-per-prompt", "2",
                     "--num-rollout", "2", "--custom-generate-function-path", f"{P}.tool_agent.generate",
                     "--custom-rm-path", f"{P}.tool_agent.reward", "--reward-key", "score")
    assert proc.returncode == 0, proc.stderr
    TOOL_RESULT = load_function(f"{P}.tool_agent.TOOL_RESULT")  # noqa: N806 (load_function installs the slime layer)

    for rollout_id in (0, 1):
        samples = batch(tmp_path, rollout_id)
        assert len(samples) == 6
        for s in samples:
            start, end = s.metadata["tool_span"]
            assert len(s.loss_mask) == s.response_length == len(s.rollout_log_probs)
            assert s.loss_mask[start:end] == [0] * (end - start) and end > start
            assert all(s.loss_mask[:start]) and all(s.loss_mask[end:]) and end < s.response_length
            assert s.rollout_log_probs[start:end] == [0.0] * (end - start)
            assert all(lp <= 0.0 for lp in s.rollout_log_probs)
            assert TOOL_RESULT in s.response and s.metadata["turns"] == 2
            assert isinstance(s.reward, dict) and s.reward["turns"] == 2 and s.reward["score"] in (0.0, 1.0)
            assert s.status in (Sample.Status.COMPLETED, Sample.Status.TRUNCATED)
            assert len(s.tokens) > s.response_length  # prompt + response
    assert "mean reward" in proc.stdout


def test_fan_out_with_partial_rollout_recycles_and_resumes(slow_cluster, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    flags = ["--rollout-batch-size", "2", "--n-samples-per-prompt", "2", "--over-sampling-batch-size", "5",
             "--partial-rollout", "--custom-generate-function-path", f"{P}.fanout.generate",
             "--custom-rm-path", f"{P}.fanout.reward"]
    proc = slime_cli(tmp_path, slow_cluster.url, data, "--num-rollout", "2", *flags)
    assert proc.returncode == 0, proc.stderr
    state, _ = JsonFileStateStore(tmp_path / "out" / ".state").read()
    assert state.rollout_id == 1 and state.aborted > 0  # groups were in flight at the end and went to the buffer
    assert state.data_source.buffer
    again = slime_cli(tmp_path, slow_cluster.url, data, "--num-rollout", "4", *flags)
    assert again.returncode == 0, again.stderr
    for rollout_id in range(4):
        samples = batch(tmp_path, rollout_id)
        by_prompt: dict[int, list[Sample]] = {}
        for s in samples:
            by_prompt.setdefault(s.rollout_id, []).append(s)
        for index, siblings in by_prompt.items():
            assert len(siblings) == 1 + index % 3  # the fan-out, every sibling kept and scored
            assert {s.reward for s in siblings} <= {0.0, 1.0}
            assert len({s.response for s in siblings}) == 1


@pytest.mark.parametrize("filter_name", ["keep_varied_numpy", "keep_varied_torch"])
def test_filters_returning_numpy_and_tensor_bools(cluster, tmp_path, arith_rows, filter_name):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    proc = slime_cli(tmp_path, cluster.url, data, "--rollout-batch-size", "3", "--n-samples-per-prompt", "4",
                     "--num-rollout", "2", "--rm-type", "math",
                     "--dynamic-sampling-filter-path", f"{P}.filters.{filter_name}")
    assert proc.returncode == 0, proc.stderr
    for rollout_id in (0, 1):
        samples = batch(tmp_path, rollout_id)
        groups: dict[int, list[float]] = {}
        for s in samples:
            groups.setdefault(s.group_index, []).append(s.reward)
        assert len(groups) == 3
        assert all(statistics.pstdev(r) > 0 for r in groups.values()), groups


def test_over_sampling_filter_returning_every_group_sorted_is_sliced(cluster, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    proc = slime_cli(tmp_path, cluster.url, data, "--rollout-batch-size", "2", "--n-samples-per-prompt", "4",
                     "--num-rollout", "2", "--rm-type", "math", "--over-sampling-filter-input-size", "5",
                     "--over-sampling-filter-path", f"{P}.filters.sort_by_reward_std")
    assert proc.returncode == 0, proc.stderr
    state, _ = JsonFileStateStore(tmp_path / "out" / ".state").read()
    assert state.filtered == 2 * 3 * 4  # per rollout, 5 groups collected, the top 2 kept
    for rollout_id in (0, 1):
        assert len({s.group_index for s in batch(tmp_path, rollout_id)}) == 2


def test_all_samples_hook_sees_filtered_groups_and_log_hooks_run(cluster, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    evald = write_jsonl(tmp_path / "e.jsonl", arith_rows[:3])
    record = tmp_path / "record.jsonl"
    proc = slime_cli(tmp_path, cluster.url, data, "--rollout-batch-size", "3", "--n-samples-per-prompt", "4",
                     "--num-rollout", "2", "--rm-type", "math",
                     "--dynamic-sampling-filter-path",
                     "slime.rollout.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std",
                     "--rollout-all-samples-process-path", f"{P}.hooks.process_all_samples",
                     "--custom-rollout-log-function-path", f"{P}.hooks.log_rollout",
                     "--custom-eval-rollout-log-function-path", f"{P}.hooks.log_eval",
                     "--eval-prompt-data", "arith", evald, "--eval-interval", "1", "--skip-eval-before-train",
                     "--eval-function-path", f"{P}.rollout_fn.generate_rollout", record=record)
    assert proc.returncode == 0, proc.stderr
    rows = records(record)
    state, _ = JsonFileStateStore(tmp_path / "out" / ".state").read()
    all_samples = [r for r in rows if r["hook"] == "all_samples"]
    assert len(all_samples) == 2
    # every group that came back reaches the hook: the 3 kept and the ones the filter dropped
    assert sum(r["samples"] for r in all_samples) >= 2 * 3 * 4 + state.filtered
    zero_std = [g for r in all_samples for g in r["rewards"] if len(set(g)) == 1]
    assert len(zero_std) * 4 == state.filtered
    assert all(r["data_source"] == "method" for r in all_samples)  # slime passes data_source.get_samples
    logs = [r for r in rows if r["hook"] == "log_rollout"]
    assert [r["rollout_id"] for r in logs] == [0, 1] and all(r["samples"] == 12 for r in logs)
    assert [r["rollout_id"] for r in rows if r["hook"] == "log_eval"] == [0, 1]
    # eval went through --eval-function-path (the custom function adds its metric), training did not
    [report, _] = RolloutReader(tmp_path / "out").eval_reports()
    assert report["rollout_id"] == 0 and not report["initial"] and report["extra_metrics"] == {"custom/eval": 1.0}
    assert all("seen_by_custom_rollout_fn" not in s.metadata for s in batch(tmp_path, 0))
    assert "rollout 0 committed" not in proc.stderr  # True from the custom log function skips the default log


def test_slime_interface_data_source_persists_through_its_own_save_load(cluster, tmp_path):
    flags = ["--rollout-batch-size", "2", "--n-samples-per-prompt", "2", "--rm-type", "math", "--apply-chat-template",
             "--data-source-path", f"{P}.data_source.CountingDataSource"]  # no --save: the state folder is used
    proc = slime_cli(tmp_path, cluster.url, "unused.jsonl", "--num-rollout", "2", *flags)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / ".state" / "rollout" / "counting_1.json").exists()
    again = slime_cli(tmp_path, cluster.url, "unused.jsonl", "--num-rollout", "4", *flags)
    assert again.returncode == 0, again.stderr
    labels = [sorted({s.label for s in batch(tmp_path, r)}) for r in range(4)]
    assert labels == [["0", "2"], ["4", "6"], ["10", "8"], ["12", "14"]]  # resumed at i = 4, nothing repeated


def test_eval_config_with_two_datasets_and_their_own_rewards(cluster, tmp_path, arith_rows):
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    e1 = write_jsonl(tmp_path / "e1.jsonl", arith_rows[:3])
    e2 = write_jsonl(tmp_path / "e2.jsonl", [{"q": r["prompt"], "answer": r["label"]} for r in arith_rows[3:5]])
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"eval": {
        "defaults": {"n_samples_per_eval_prompt": 2, "max_response_len": 24},
        "datasets": [
            {"name": "lengths", "path": e1, "custom_rm_path": f"{P}.eval_rewards.length_reward", "max_response_len": 8},
            {"name": "const", "path": e2, "input_key": "q", "label_key": "answer", "n_samples_per_eval_prompt": 3,
             "custom_rm_path": f"{P}.eval_rewards.constant_reward", "temperature": 0.5},
        ]}}))
    cluster.value.clear_recorded()
    proc = slime_cli(tmp_path, cluster.url, data, "--rollout-batch-size", "2", "--n-samples-per-prompt", "2",
                     "--num-rollout", "2", "--rm-type", "math", "--eval-config", str(cfg), "--eval-interval", "2",
                     "--rollout-function-path", f"{P}.rollout_fn.generate_rollout")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    # slime's numbering: before rollout 0 (id 0), then after rollout r when (r + 1) % interval == 0 (id r)
    [initial, report] = RolloutReader(out).eval_reports()
    assert (initial["rollout_id"], initial["initial"]) == (0, True)
    assert report["rollout_id"] == 1 and report["extra_metrics"] == {"custom/eval": 1.0}
    lengths, const = report["samples"]["lengths"], report["samples"]["const"]
    assert len(lengths) == 3 * 2 and len(const) == 2 * 3
    assert all(s["reward"] == float(s["response_length"]) and 0 < s["response_length"] <= 8 for s in lengths)
    assert all(s["reward"] == 0.25 for s in const)
    eval_requests = [r for r in cluster.value.recorded_requests if r["sampling_params"].get("temperature") == 0.5]
    assert eval_requests and all(r["sampling_params"]["max_new_tokens"] == 24 for r in eval_requests)
    for rollout_id in (0, 1):
        assert all(s.metadata["seen_by_custom_rollout_fn"] == rollout_id for s in batch(tmp_path, rollout_id))


def test_a_users_copy_of_slimes_sft_rollout(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"What is {i}+1?"},
                          {"role": "assistant", "content": f"\\boxed{{{i + 1}}}"}]} for i in range(4)]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "rollout_runtime.cli", "run", "--no-progress", "--prompt-data", data,
         "--input-key", "messages", "--hf-checkpoint", str(TINY_MODEL), "--rollout-batch-size", "2",
         "--num-rollout", "2", "--rollout-function-path", f"{P}.sft_rollout.generate_rollout", "--debug-train-only",
         "--loss-type", "sft_loss", "--disable-compute-advantages-and-returns", "--output-dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    samples = batch(tmp_path, 0) + batch(tmp_path, 1)
    assert len(samples) == 4
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    for s in samples:
        assert s.metadata["processor_is_none"] and s.reward == 0
        trained = tok.decode([t for t, m in zip(s.tokens[-s.response_length:], s.loss_mask) if m])
        assert trained.replace(" ", "").startswith("\\boxed{") and len(s.loss_mask) == s.response_length
