"""The small pure parts of the rollout path, and the contracts between them and the runner."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rollout_runtime.config import RolloutConfig, option
from rollout_runtime.kube import current_namespace
from rollout_runtime.rollout.sampling_params import build_sampling_params, sampling_seed
from rollout_runtime.rollout.sglang_payload import generate_payload, routing_headers, token_budget
from rollout_runtime.runner import Runner
from rollout_runtime.state import JsonFileStateStore
from rollout_runtime.types import Sample
from tests.conftest import write_jsonl


def test_eval_sampling_params_fall_back_to_the_rollouts() -> None:
    args = RolloutConfig(rollout_batch_size=1, rollout_temperature=0.9, rollout_max_response_len=32,
                         eval_temperature=0.2, eval_min_new_tokens=4)
    train = build_sampling_params(args)
    assert train["temperature"] == 0.9 and train["max_new_tokens"] == 32 and "min_new_tokens" not in train
    ev = build_sampling_params(args, evaluation=True)
    assert ev["temperature"] == 0.2 and ev["max_new_tokens"] == 32 and ev["min_new_tokens"] == 4
    assert {k: v for k, v in ev.items() if k not in ("temperature", "min_new_tokens")} == \
        {k: v for k, v in train.items() if k != "temperature"}
    assert sampling_seed(args, 3) is None
    deterministic = RolloutConfig(rollout_batch_size=1, sglang_enable_deterministic_inference=True, rollout_seed=7)
    assert [sampling_seed(deterministic, i) for i in range(3)] == [7, 8, 9]


def test_payload_drops_unset_params_and_sends_the_remaining_budget() -> None:
    sample = Sample(tokens=[1, 2, 3, 4], response_length=2, session_id="s1")
    params = {"max_new_tokens": 10, "stop": None, "temperature": 1.0}
    remaining = token_budget(params, sample)
    assert remaining == 8
    payload = generate_payload("rid-1", [1, 2, 3, 4], params, remaining)
    assert payload == {"rid": "rid-1", "input_ids": [1, 2, 3, 4], "return_logprob": True,
                       "sampling_params": {"max_new_tokens": 8, "temperature": 1.0}}
    assert params["max_new_tokens"] == 10  # the caller's params are not modified
    # the session routing key goes on every request of a session, whatever the router's policy
    assert routing_headers(sample) == {"X-SMG-Routing-Key": "s1"}
    assert routing_headers(Sample()) is None


def test_option_reads_our_settings_from_slime_args_with_the_fields_default() -> None:
    slime_args = SimpleNamespace(partial_rollout=True)  # slime's argparse namespace has no abort_wait_timeout
    assert option(slime_args, "abort_wait_timeout") == RolloutConfig.model_fields["abort_wait_timeout"].default == 60.0
    assert option(slime_args, "abort_scope") == "all"
    assert option(RolloutConfig(rollout_batch_size=1, abort_scope="own"), "abort_scope") == "own"


def test_one_namespace_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "from-env")
    assert current_namespace("explicit") == "explicit"
    assert current_namespace(None) == "from-env"


def fixed_rollout(args: Any, rollout_id: int, data_source: Any, evaluation: bool = False) -> list[list[Sample]]:
    """A custom rollout function that reports nothing but its output."""
    groups = data_source.get_samples(args.rollout_batch_size)
    for group in groups:
        for s in group:
            s.tokens, s.response_length, s.reward, s.status = [1, 2, 3], 2, 1.0, Sample.Status.COMPLETED
    return groups


def test_a_custom_rollout_function_is_counted_from_its_output(tmp_path: Path, arith_rows: list[dict[str, Any]]) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", arith_rows[:8])
    args = RolloutConfig(prompt_data=data, input_key="prompt", label_key="label", rollout_batch_size=2,
                         n_samples_per_prompt=3, num_rollout=2, output_dir=str(tmp_path / "out"),
                         rollout_function_path=f"{__name__}.fixed_rollout")
    summary = Runner(args).run()
    assert (summary.completed, summary.aborted, summary.filtered, summary.response_tokens) == (12, 0, 0, 24)
    state, _ = JsonFileStateStore(tmp_path / "out" / ".state").read()
    assert state.rollout_id == 1 and state.completed == 12 and state.finished
