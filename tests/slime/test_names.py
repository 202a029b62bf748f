"""slime's names and shapes, through `slime.*` imports: what slime-written code calls exists and behaves as slime's."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from rollout_runtime import slime_imports
from rollout_runtime.config import RolloutConfig
from rollout_runtime.engines.sim import start_sim_cluster_thread, start_sim_engine_thread
from tests.conftest import TINY_MODEL, write_jsonl
from tests.runtime.test_rollout_sim import sim_config


@pytest.fixture(autouse=True, scope="module")
def layer() -> Iterator[None]:
    slime_imports.install()
    yield
    slime_imports.uninstall()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    handle = start_sim_cluster_thread(1, sim_config(record_requests=64))
    yield handle
    handle.stop()


def args_for(url: str, **kw: Any) -> RolloutConfig:
    base = dict(hf_checkpoint=str(TINY_MODEL), sglang_router_url=url, rollout_batch_size=2, n_samples_per_prompt=2,
                rollout_max_response_len=16, rm_type="math", sglang_server_concurrency=8)
    base.update(kw)
    return RolloutConfig(**base)


def sample(rewards: list[float]) -> list[Any]:
    from slime.utils.types import Sample

    return [Sample(reward=r) for r in rewards]


def test_check_reward_nonzero_std_is_usable_as_a_bool():
    from slime.rollout.filter_hub.base_types import DynamicFilterOutput, call_dynamic_filter
    from slime.rollout.filter_hub.dynamic_sampling_filters import check_reward_nonzero_std

    args = RolloutConfig(rollout_batch_size=1)
    assert check_reward_nonzero_std(args, sample([0.0, 1.0]))
    assert not check_reward_nonzero_std(args, sample([1.0, 1.0]))
    kept = [g for g in (sample([0, 1]), sample([1, 1]), sample([0, 0])) if check_reward_nonzero_std(args, g)]
    assert len(kept) == 1
    # any truthy return, as slime accepts: numpy bools and one-element tensors
    for value, keep in ((np.bool_(True), True), (np.float64(0.0) > 1, False), (torch.tensor(True), True),
                        (torch.tensor([False]), False), (1, True)):
        out = call_dynamic_filter(lambda *a, **k: value, args, [])
        assert isinstance(out, DynamicFilterOutput) and out.keep is keep
    assert DynamicFilterOutput(keep=torch.tensor(2.0) > 1).keep is True
    with pytest.raises(TypeError, match="no single truth value"):
        call_dynamic_filter(lambda *a: torch.tensor([True, False]), args, [])
    with pytest.raises(TypeError, match="is None"):
        call_dynamic_filter(lambda *a: None, args, [])


def test_dapo_and_math_graders():
    from slime.rollout.rm_hub import compute_score_dapo, extract_boxed_answer, grade_answer_verl
    from slime.rollout.rm_hub.math_dapo_utils import (compute_score, is_correct_strict_box, last_boxed_only_string,
                                                      remove_boxed, verify)
    from slime.rollout.rm_hub.math_utils import extract_answer, grade_answer_mathd, grade_answer_sympy

    assert compute_score_dapo is compute_score
    assert compute_score("so Answer: 42", "42") == {"score": 1.0, "acc": True, "pred": "42"}
    assert compute_score("Answer: \\boxed{42}", "42", strict_box_verify=True) == {"score": 1.0, "acc": True, "pred": "42"}
    assert compute_score("Answer: 42", "42", strict_box_verify=True)["score"] == -1.0  # strict needs a box
    text = "x" * 200 + "\\boxed{7}" + "y" * 300
    assert is_correct_strict_box(text, "7") == (-1, None)  # the box is outside the last 100 characters
    assert is_correct_strict_box(text, "7", pause_tokens_index=[0, 0, 0, 260]) == (1, "7")
    assert verify("Answer: 3", "3") == (True, "3")
    assert last_boxed_only_string("a \\boxed{1} b \\boxed{2}") == "\\boxed{2}" and remove_boxed("\\boxed{2}") == "2"
    assert extract_answer("no box") is None and extract_answer("is \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_boxed_answer("\\boxed{5}") == "5"
    assert grade_answer_mathd("\\text{5}", "5") and not grade_answer_mathd("6", "5")
    assert grade_answer_sympy("0.5", "\\frac{1}{2}") and not grade_answer_sympy("2", "3")
    assert grade_answer_verl("so \\boxed{1/2}", "\\frac12")


def test_sample_info_helpers_and_top_p_replay():
    from slime.utils.types import Sample

    info = Sample.SpecInfo()
    info.add({"spec_accept_token_num": 6, "spec_draft_token_num": 8, "spec_verify_ct": 2, "completion_tokens": 10})
    assert info.spec_accept_rate == 0.75 and info.spec_accept_length == 5.0
    assert Sample.SpecInfo.from_dict(info.to_dict()) == info
    cache = Sample.PrefixCacheInfo()
    cache.add({"cached_tokens": 3, "prompt_tokens": 4})
    assert cache.prefix_cache_hit_rate == 0.75 and Sample.PrefixCacheInfo.from_dict(cache.to_dict()) == cache
    s = Sample(tokens=[1, 2])
    ids = np.array([5, 6, 7], dtype=np.int32)
    meta = {"top_p_token_ids": base64.b64encode(ids.tobytes()).decode(), "top_p_token_offsets": [0, 2, 3],
            "finish_reason": {"type": "length"}, "cached_tokens": 1, "prompt_tokens": 2}
    s.append_response_tokens(None, tokens=[9, 9], log_probs=[-0.1, -0.2], meta_info=meta)
    s.append_response_tokens(None, tokens=[4], trainable=False)  # a tool token: an empty top-p span
    s.append_response_tokens(None, tokens=[8], log_probs=[-0.3],
                             meta_info={"top_p_kept_token_ids": [1, 2], "top_p_kept_token_offsets": [0, 2]})
    assert s.rollout_top_p_token_ids == [5, 6, 7, 1, 2]
    assert s.rollout_top_p_token_offsets == [0, 2, 3, 3, 5] and len(s.rollout_top_p_token_offsets) == s.response_length + 1
    assert s.prefix_cache_info.cached_tokens == 1 and s.status == Sample.Status.TRUNCATED
    back = Sample.from_dict(s.to_dict())
    assert back.prefix_cache_info == s.prefix_cache_info and back.rollout_top_p_token_ids == s.rollout_top_p_token_ids


def test_utils_names():
    from slime.utils.async_utils import get_async_loop, run
    from slime.utils.mask_utils import MultiTurnLossMaskGenerator
    from slime.utils.misc import SingletonMeta, load_function, should_run_periodic_action
    from slime.utils.processing_utils import encode_image_for_rollout_engine, load_processor, load_tokenizer

    tok = load_tokenizer(str(TINY_MODEL), trust_remote_code=True)
    assert tok is load_tokenizer(str(TINY_MODEL))  # loaded once
    assert load_processor(str(TINY_MODEL), trust_remote_code=True) is None  # text-only model
    gen = MultiTurnLossMaskGenerator(tok, tokenizer_type="qwen")
    assert gen.get_response_lengths([[0, 0, 1, 0, 1], [0, 0]]) == [3, 0]
    loop = get_async_loop()
    assert run(asyncio.sleep(0, result=3)) == 3 and loop is get_async_loop()

    class One(metaclass=SingletonMeta):
        pass

    assert One() is One()
    assert load_function("slime.utils.types.Sample").__module__ == "rollout_runtime.types"
    assert [r for r in range(6) if should_run_periodic_action(r, 4, num_rollout_per_epoch=3)] == [2, 3, 5]
    from PIL import Image

    url = encode_image_for_rollout_engine(Image.new("L", (3, 2), 128))
    assert url.startswith("data:image/png;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert back.mode == "RGB" and back.size == (3, 2)


def test_http_utils_post_and_get_share_the_rollout_pool(cluster):
    from slime.rollout.sglang_rollout import GenerateState
    from slime.utils.http_utils import get, get_rollout_num_engines, post

    args = args_for(cluster.url)
    assert get_rollout_num_engines(args) == 1
    assert get_rollout_num_engines(args_for(cluster.url, rollout_num_gpus=8, rollout_num_gpus_per_engine=2)) == 4
    state = GenerateState(args)
    assert state.processor is None and state.concurrency == 8

    async def go() -> tuple[Any, Any, Any]:
        pooled = GenerateState(args).client
        out = await post(f"http://{args.sglang_router_ip}:{args.sglang_router_port}/generate",
                         {"text": "What is 1+1?", "sampling_params": {"max_new_tokens": 4}, "return_logprob": True})
        workers = await get(f"{args.router_url}/workers")
        from rollout_runtime.http_client import loop_client

        return out, workers, loop_client() is pooled

    out, workers, shared = asyncio.run(go())
    assert out["meta_info"]["finish_reason"]["type"] in ("length", "stop") and out["meta_info"]["output_token_logprobs"]
    assert len(workers["workers"]) == 1 and shared


def test_semaphore_is_sized_by_rollout_gpus(cluster):
    from slime.rollout.sglang_rollout import GenerateState

    from slime.utils.async_utils import run

    args = args_for(cluster.url, rollout_num_gpus=8, rollout_num_gpus_per_engine=2, sglang_server_concurrency=3)

    async def sizes() -> tuple[int, int]:
        state = GenerateState(args)
        return state.semaphore._value, state.client.max_connections

    assert run(sizes()) == (12, 12)  # 3 per engine x (8 GPUs / 2 per engine), the semaphore and the pool


def test_top_p_replay_is_requested_when_top_p_is_below_one():
    from slime.rollout.sglang_rollout import GenerateState, build_sampling_params, generate
    from slime.utils.async_utils import run
    from slime.utils.types import Sample

    # straight to an engine: sglang-router 0.3.2 drops custom_params from sampling_params
    engine = start_sim_engine_thread(sim_config(record_requests=8))
    try:
        args = args_for(engine.url, rollout_top_p=0.9)
        state = GenerateState(args)
        assert state.sampling_params["custom_params"] == {"return_top_p_token_ids": True}
        out = run(generate(args, Sample(prompt="What is 2+2?"), state.sampling_params.copy()))
        assert out.response_length > 0
        assert engine.value.recorded_requests[-1]["sampling_params"]["custom_params"] == {"return_top_p_token_ids": True}
    finally:
        engine.stop()
    assert "custom_params" not in GenerateState(args_for(engine.url)).sampling_params  # top_p 1: no replay
    assert "custom_params" not in build_sampling_params(args, evaluation=True)  # never in eval, as slime


def test_eval_rollout_shapes(cluster, tmp_path, arith_rows):
    from slime.rollout.base_types import RolloutFnEvalOutput, RolloutFnTrainOutput
    from slime.rollout.data_source import RolloutDataSourceWithBuffer
    from slime.rollout.sglang_rollout import eval_rollout, eval_rollout_single_dataset, generate_rollout
    from slime.utils.async_utils import run

    data = write_jsonl(tmp_path / "d.jsonl", arith_rows)
    args = args_for(cluster.url, prompt_data=data, input_key="prompt", label_key="label", apply_chat_template=True,
                    eval_prompt_data=["a", data, "b", write_jsonl(tmp_path / "e.jsonl", arith_rows[:2])])
    out, aborted = run(eval_rollout(args, 0))
    assert isinstance(out, RolloutFnEvalOutput) and aborted == [] and sorted(out.data) == ["a", "b"]
    assert len(out.data["b"]["samples"]) == 2 and len(out.data["b"]["rewards"]) == 2
    single = run(eval_rollout_single_dataset(args, 0, args.eval_datasets[1]))
    assert list(single) == ["b"] and set(single["b"]) >= {"rewards", "truncated", "samples"}
    train = generate_rollout(args, 0, RolloutDataSourceWithBuffer(args))
    assert isinstance(train, RolloutFnTrainOutput) and len(train.samples) == 2
    assert isinstance(generate_rollout(args, 0, None, evaluation=True), RolloutFnEvalOutput)


def test_on_policy_distillation_reward_scores_the_students_tokens_with_the_teacher():
    from slime.rollout.on_policy_distillation import post_process_rewards, reward_func
    from slime.rollout.sglang_rollout import GenerateState, generate
    from slime.utils.async_utils import run
    from slime.utils.types import Sample

    teacher = start_sim_engine_thread(sim_config(record_requests=8))
    try:
        args = args_for(teacher.url, rm_url=f"{teacher.url}/generate", custom_rm_path=None)
        sample = run(generate(args, Sample(prompt="What is 3+4?"), GenerateState(args).sampling_params.copy()))
        sample.reward = run(reward_func(args, sample))
        sent = teacher.value.recorded_requests[-1]
    finally:
        teacher.stop()
    assert sent["input_ids"] == sample.tokens and sent["logprob_start_len"] == 0
    assert sent["sampling_params"]["max_new_tokens"] == 0
    assert len(sample.reward["meta_info"]["input_token_logprobs"]) == len(sample.tokens)
    raw, rewards = post_process_rewards(args, [sample])
    assert raw == rewards == [0.0] and len(sample.teacher_log_probs) == sample.response_length > 0
    assert all(lp <= 0.0 for lp in sample.teacher_log_probs)
