"""The rollout loop against simulated engines over real HTTP, behind a router-style front.

The front serves GET /workers and forwards /generate but has no /abort_request, like the
real sglang_router: aborts only work if the runtime finds the workers and aborts each.
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Iterator

import pytest

from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSourceWithBuffer
from rollout_runtime.engines.sim import SimEngineConfig, start_sim_cluster_thread
from rollout_runtime.http_client import EngineError, EngineRequestError
from rollout_runtime.sglang_rollout import GenerateState, close_http, generate, generate_rollout, last_rollout_stats
from rollout_runtime.async_utils import run
from rollout_runtime.types import Sample
from tests.conftest import TINY_MODEL, write_jsonl

DYNAMIC = "rollout_runtime.filter_hub.dynamic_sampling_filters.check_reward_nonzero_std"


def sim_config(**kw: Any) -> SimEngineConfig:
    base = dict(seed=0, tokenizer=str(TINY_MODEL), token_latency=0.0005, length_dist="lognormal", length_median=12,
                length_sigma=0.6, length_max=40, answer_accuracy=0.5, answer_concentration=0.6)
    base.update(kw)
    return SimEngineConfig(**base)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    handle = start_sim_cluster_thread(2, sim_config())
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def slow_cluster() -> Iterator[Any]:
    """Long responses, so requests are still running when the batch fills up."""
    handle = start_sim_cluster_thread(2, sim_config(token_latency=0.01, length_dist="uniform", length_min=10,
                                                    length_max=150))
    yield handle
    handle.stop()


@pytest.fixture
def dataset(tmp_path, arith_rows) -> str:
    return write_jsonl(tmp_path / "arith.jsonl", arith_rows)


def make_args(url: str, data: str, **kw: Any) -> RolloutConfig:
    base = dict(prompt_data=data, input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
                apply_chat_template=True, sglang_router_url=url, rollout_batch_size=4, n_samples_per_prompt=4,
                rollout_max_response_len=64, rm_type="math", num_rollout=2, sglang_server_concurrency=32)
    base.update(kw)
    return RolloutConfig(**base)


def test_groups_statuses_rewards_and_payload(cluster, dataset):
    cluster.value.clear_recorded()
    args = make_args(cluster.url, dataset)
    source = RolloutDataSourceWithBuffer(args)
    groups = generate_rollout(args, 0, source).samples
    assert len(groups) == 4 and all(len(g) == 4 for g in groups)
    assert [g[0].index for g in groups] == sorted(g[0].index for g in groups)
    for g in groups:
        assert len({s.group_index for s in g}) == 1 and len({s.session_id for s in g}) == 4
        for s in g:
            assert s.status in (Sample.Status.COMPLETED, Sample.Status.TRUNCATED)
            assert s.reward in (0, 1)
            assert s.response_length > 0 and len(s.loss_mask) == s.response_length == len(s.rollout_log_probs)
            assert s.tokens[-s.response_length:] and len(s.tokens) > s.response_length
            assert s.weight_versions == ["default"]
            assert all(lp <= 0 for lp in s.rollout_log_probs)
    payload = cluster.value.recorded_requests[0]
    assert payload["return_logprob"] is True and isinstance(payload["input_ids"], list)
    sp = payload["sampling_params"]
    assert sp["max_new_tokens"] == 64 and sp["temperature"] == 1.0 and sp["no_stop_trim"] is True
    stats = last_rollout_stats(args)
    assert stats.completed == 16 and stats.metrics["rollout/mean_reward"] == pytest.approx(
        statistics.mean(s.reward for g in groups for s in g))


def test_over_sampling_with_dynamic_filter(cluster, dataset):
    args = make_args(cluster.url, dataset, over_sampling_batch_size=6, dynamic_sampling_filter_path=DYNAMIC)
    source = RolloutDataSourceWithBuffer(args)
    groups = generate_rollout(args, 0, source).samples
    assert len(groups) == 4
    for g in groups:
        assert statistics.stdev(s.reward for s in g) > 0  # every kept group carries signal
    stats = last_rollout_stats(args)
    drops = sum(v for k, v in stats.metrics.items() if k.startswith("rollout/dynamic_filter/drop_"))
    assert stats.filtered == drops * 4
    assert source.sample_group_index >= 6  # at least one over-sampling wave was drawn


def test_refills_smaller_than_the_batch(cluster, dataset):
    args = make_args(cluster.url, dataset, over_sampling_batch_size=1, rollout_batch_size=5)
    groups = generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples
    assert len(groups) == 5


def test_over_sampling_filter_picks_highest_std(cluster, dataset):
    args = make_args(cluster.url, dataset, over_sampling_filter_path=
                     "rollout_runtime.filter_hub.over_sampling_filters.sort_by_reward_std",
                     over_sampling_filter_input_size=8)
    groups = generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples
    assert len(groups) == 4
    assert last_rollout_stats(args).filtered == 16  # 8 collected, 4 chosen


def test_abort_and_partial_rollout_continuation(slow_cluster, dataset):
    max_len = 200
    args = make_args(slow_cluster.url, dataset, rollout_batch_size=1, n_samples_per_prompt=2, over_sampling_batch_size=4,
                     partial_rollout=True, mask_offpolicy_in_partial_rollout=True, rollout_max_response_len=max_len,
                     rm_type="random")
    source = RolloutDataSourceWithBuffer(args)
    first = generate_rollout(args, 0, source).samples
    assert len(first) == 1
    assert source.get_buffer_length() == 3  # the other groups were recycled whole
    stats = last_rollout_stats(args)
    assert stats.aborted == 6
    buffered = [s for g in source.buffer for s in g]
    partial = [s for s in buffered if s.status == Sample.Status.ABORTED and s.response_length > 0]
    assert partial, "aborted requests should come back with their partial output"
    assert all(s.response_length < 150 for s in partial)
    # every worker went idle: the abort reached them though the front has no /abort_request
    assert all(e.load_counts() == (0, 0) for e in slow_cluster.value.engines)

    target = partial[0]
    prev_tokens, prev_len = list(target.tokens), target.response_length
    slow_cluster.value.clear_recorded()
    source.buffer = [g for g in source.buffer if target in g]  # continue just that group
    args.over_sampling_batch_size = 1  # and draw nothing else, so it is the one that completes
    second = generate_rollout(args, 1, source).samples
    assert second[0][0].group_index == target.group_index  # the buffer is served first
    cont = [p for p in slow_cluster.value.recorded_requests if p["input_ids"] == prev_tokens]
    assert cont, "the continuation must send prompt + partial response as input_ids"
    assert cont[0]["sampling_params"]["max_new_tokens"] == max_len - prev_len
    done = next(s for g in second for s in g if s.session_id == target.session_id)
    assert done.tokens[:len(prev_tokens)] == prev_tokens and done.response_length > prev_len
    assert done.loss_mask[:prev_len] == [0] * prev_len and all(done.loss_mask[prev_len:])


def test_without_partial_rollout_discarded_groups_are_not_buffered(slow_cluster, dataset):
    args = make_args(slow_cluster.url, dataset, rollout_batch_size=1, n_samples_per_prompt=2, over_sampling_batch_size=4,
                     rollout_max_response_len=200, rm_type="random")
    source = RolloutDataSourceWithBuffer(args)
    assert len(generate_rollout(args, 0, source).samples) == 1
    assert source.get_buffer_length() == 0
    stats = last_rollout_stats(args)
    assert stats.aborted == 6 and stats.wasted_tokens > 0
    assert all(e.load_counts() == (0, 0) for e in slow_cluster.value.engines)


def test_eval_metrics(cluster, tmp_path, arith_rows):
    eval_path = write_jsonl(tmp_path / "eval.jsonl", arith_rows[:6])
    args = make_args(cluster.url, eval_path, eval_prompt_data=["arith", eval_path], n_samples_per_eval_prompt=4,
                     eval_temperature=0.7)
    out = generate_rollout(args, 0, None, evaluation=True)
    res = out.data["arith"]
    assert len(res["samples"]) == len(res["rewards"]) == len(res["truncated"]) == 24
    assert [s.index for s in res["samples"]] == list(range(24))
    m = res["metrics"]
    assert m["mean_reward"] == pytest.approx(sum(res["rewards"]) / 24)
    assert {"pass@1", "pass@2", "pass@4"} <= set(m)
    assert m["pass@1"] == pytest.approx(m["mean_reward"]) and m["pass@1"] <= m["pass@2"] <= m["pass@4"]


def test_engine_4xx_is_reported_not_retried(cluster):
    args = make_args(cluster.value.worker_urls[0], "unused.jsonl")
    sample = Sample(prompt="What is 1+1?")
    with pytest.raises(EngineRequestError, match="HTTP 400.*max_tokens"):
        run(generate(args, sample, {"max_new_tokens": 8, "max_tokens": 8}))


def test_connection_errors_are_retried_then_fail(dataset):
    args = make_args("http://127.0.0.1:9", dataset, http_max_retries=2, http_retry_backoff=0.01)
    with pytest.raises(EngineError, match="failed"):
        run(generate(args, Sample(prompt="What is 1+1?"), {"max_new_tokens": 8}))


async def count_chars(args, samples):
    return [float(len(s.response)) for s in samples]


def test_group_rm_calls_custom_rm_once_per_group(cluster, dataset):
    args = make_args(cluster.url, dataset, group_rm=True, custom_rm_path=f"{__name__}.count_chars", rm_type=None)
    groups = generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples
    assert all(s.reward == float(len(s.response)) for g in groups for s in g)


async def slime_style_generate(args, sample, sampling_params):
    """A custom generate function written the way slime's docs show."""
    state = GenerateState(args)
    from rollout_runtime.sglang_rollout import get_model_url

    prompt_ids = state.tokenizer.encode(sample.prompt, add_special_tokens=False)
    params = {k: v for k, v in sampling_params.items() if v is not None}
    out = await state.client.post(get_model_url(args), {"input_ids": prompt_ids, "sampling_params": params,
                                                        "return_logprob": True})
    pairs = out["meta_info"]["output_token_logprobs"]
    sample.tokens = prompt_ids
    sample.append_response_tokens(args, tokens=[p[1] for p in pairs], log_probs=[p[0] for p in pairs],
                                  meta_info=out["meta_info"], text=out["text"])
    sample.metadata["custom"] = True
    return sample


def test_custom_generate_function(cluster, dataset):
    args = make_args(cluster.url, dataset, custom_generate_function_path=f"{__name__}.slime_style_generate")
    groups = generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples
    assert all(s.metadata["custom"] and s.reward in (0, 1) for g in groups for s in g)


def test_continuous_refill_keeps_groups_in_flight(slow_cluster, dataset):
    args = make_args(slow_cluster.url, dataset, rollout_batch_size=2, n_samples_per_prompt=2, over_sampling_batch_size=4,
                     partial_rollout=True, continuous_refill=True, rollout_max_response_len=200, rm_type="random")
    source = RolloutDataSourceWithBuffer(args)
    groups = generate_rollout(args, 0, source).samples
    assert len(groups) == 2
    # slime's rule would draw exactly 4 groups; continuous refill tops up as groups complete
    assert source.sample_group_index > 4
    assert source.get_buffer_length() == source.sample_group_index - 2  # everything unfinished was recycled
    assert last_rollout_stats(args).wasted_tokens == 0


def test_continuous_refill_requires_partial_rollout():
    from rollout_runtime.config import ConfigError

    with pytest.raises(ConfigError, match="continuous_refill needs partial_rollout"):
        RolloutConfig(rollout_batch_size=1, continuous_refill=True)


def test_generate_state_is_per_args_object_and_released(dataset):
    import gc

    from rollout_runtime import sglang_rollout

    a = make_args("http://127.0.0.1:1", dataset)
    b = make_args("http://127.0.0.1:1", dataset, rollout_temperature=0.5)
    assert GenerateState(a) is GenerateState(a)
    assert GenerateState(b) is not GenerateState(a)
    assert GenerateState(b).sampling_params["temperature"] == 0.5
    # By key, not by count: the collection below may also free other tests' leftover configs.
    key_a, key_b = id(a), id(b)
    assert key_b in sglang_rollout._STATES
    del b
    gc.collect()
    assert key_b not in sglang_rollout._STATES  # no state outlives its config
    assert sglang_rollout._STATES[key_a].args is a  # and a live config keeps its own
    c = make_args("http://127.0.0.1:1", dataset, rollout_temperature=0.25)  # may reuse b's id
    assert GenerateState(c).sampling_params["temperature"] == 0.25


@pytest.mark.parametrize("scope", ["own", "all"])
def test_abort_scope_on_a_shared_pool(slow_cluster, dataset, scope):
    """Another tenant's request on the same workers survives our rollout's end only with abort_scope own."""
    import threading
    import urllib.request

    worker = slow_cluster.value.worker_urls[0]
    result: dict[str, Any] = {}

    def foreign() -> None:  # 300 tokens at 10 ms each: still running when our batch fills
        body = json.dumps({"rid": "other-tenant-1", "input_ids": [1, 2, 3],
                           "sampling_params": {"max_new_tokens": 300, "min_new_tokens": 300}}).encode()
        req = urllib.request.Request(f"{worker}/generate", data=body, headers={"Content-Type": "application/json"})
        result["out"] = json.loads(urllib.request.urlopen(req, timeout=60).read())

    thread = threading.Thread(target=foreign)
    thread.start()
    args = make_args(slow_cluster.url, dataset, rollout_batch_size=1, n_samples_per_prompt=2, over_sampling_batch_size=4,
                     partial_rollout=True, rollout_max_response_len=200, rm_type="random", abort_scope=scope)
    source = RolloutDataSourceWithBuffer(args)
    assert len(generate_rollout(args, 0, source).samples) == 1
    partial = [s for g in source.buffer for s in g if s.status == Sample.Status.ABORTED and s.response_length > 0]
    assert partial, "our own stragglers are aborted either way"
    thread.join(60)
    finish = result["out"]["meta_info"]["finish_reason"]["type"]
    assert finish == ("length" if scope == "own" else "abort")


HOOK_CALLS: list[tuple[int | None, bool]] = []


def record_hook(args, sample, *, rollout_id, evaluation):
    HOOK_CALLS.append((rollout_id, evaluation))
    sample.metadata["hooked"] = rollout_id


def test_sample_hooks_get_the_rollout_id_and_the_batch_carries_its_stats(cluster, dataset):
    HOOK_CALLS.clear()
    args = make_args(cluster.url, dataset, rollout_sample_hook_path=[f"{__name__}.record_hook"])
    out = generate_rollout(args, 7, RolloutDataSourceWithBuffer(args))
    groups = out.samples
    assert all(s.metadata["hooked"] == 7 for g in groups for s in g)
    assert set(HOOK_CALLS) == {(7, False)}
    assert out.stats is last_rollout_stats(args) and out.stats.completed == 16


def test_an_engine_that_is_gone_ends_the_run_with_one_clear_line(dataset, tmp_path, capsys, caplog):
    """One warning while it retries, then one line naming what failed and what to check, and the retry exit code."""
    import gc
    import logging

    from rollout_runtime.cli import main
    from rollout_runtime.contract import EXIT_ENGINE_UNAVAILABLE

    gc.collect()  # earlier tests' garbage is reported now, not during this run
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    code = main(["run", "--prompt-data", dataset, "--input-key", "prompt", "--label-key", "label",
                 "--hf-checkpoint", str(TINY_MODEL), "--sglang-router-url", "http://127.0.0.1:9",
                 "--rollout-batch-size", "4", "--n-samples-per-prompt", "4", "--rollout-max-response-len", "8",
                 "--num-rollout", "1", "--rm-type", "math", "--http-max-retries", "3", "--http-retry-backoff", "0.01",
                 "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert code == EXIT_ENGINE_UNAVAILABLE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rollout-runtime: engine unavailable: POST http://127.0.0.1:9/generate failed: "), err
    assert "router or engine at http://127.0.0.1:9 is up" in err[-1] and "spec.poolRef or spec.endpoint" in err[-1]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("rollout_runtime")]
    assert [r.name for r in loud] == ["rollout_runtime.http_client"], [r.getMessage() for r in loud]
    assert len([r for r in caplog.records if r.name == "rollout_runtime.http_client"]) > 4  # the rest at debug


def test_a_worker_that_is_gone_is_warned_about_once_not_every_rollout(cluster, dataset, monkeypatch, caplog):
    """The router still lists a dead worker: every rollout's abort reaches it, and fails, quietly after the first."""
    import logging

    from rollout_runtime.rollout import abort as abort_module

    dead = "http://127.0.0.1:9"

    async def listed(state):
        return [*cluster.value.worker_urls, dead]

    monkeypatch.setattr(abort_module, "_worker_urls", listed)
    monkeypatch.setattr(abort_module, "_UNREACHABLE", abort_module._UnreachableWorkers())
    caplog.set_level(logging.DEBUG, logger="rollout_runtime.rollout.abort")
    args = make_args(cluster.url, dataset)
    for rollout_id in range(3):
        GenerateState(args).reset()
        run(abort_module.abort(args, rollout_id))
    run(close_http(args))
    about_dead = [r for r in caplog.records if dead in r.getMessage()]
    assert [r.levelname for r in about_dead] == ["WARNING", "DEBUG", "DEBUG"]
    assert "Not warning about it again until it answers" in about_dead[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and dead not in r.getMessage()]
