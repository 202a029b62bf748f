"""Evaluation: every eval dataset sampled `n_samples_per_eval_prompt` times, scored, and summarised.

slime's shapes: `eval_rollout` returns `(RolloutFnEvalOutput(data), [])` and
`eval_rollout_single_dataset` returns `{name: {rewards, truncated, samples}}`; each dataset of
`args.eval_datasets` (from `--eval-config` or `--eval-prompt-data`) brings its own keys, sampling,
reward and generate function. We add `metrics` per dataset: mean reward, truncated ratio and
unbiased pass@k for k = 1, 2, 4, ... up to n.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
from typing import Any

from rollout_runtime.base_types import RolloutFnEvalOutput
from rollout_runtime.config import ConfigError
from rollout_runtime.dataset import Dataset
from rollout_runtime.eval_config import EvalDatasetConfig
from rollout_runtime.rollout.generate import GenerateState, generate_and_rm
from rollout_runtime.rollout.sampling_params import build_sampling_params, sampling_seed
from rollout_runtime.types import Sample, flatten


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def eval_metrics(rewards: list[Any], truncated: list[bool], n: int) -> dict[str, float]:
    """Mean reward, truncated ratio, and pass@k over prompts of `n` samples each (a reward > 0 passes)."""
    numeric = [float(r) for r in rewards if isinstance(r, (int, float, bool))]
    out: dict[str, float] = {}
    if numeric:
        out["mean_reward"] = sum(numeric) / len(numeric)
    if truncated:
        out["truncated_ratio"] = sum(truncated) / len(truncated)
    if n > 1 and numeric and len(numeric) == len(rewards) and len(rewards) % n == 0:
        correct = [sum(1 for r in numeric[i:i + n] if r > 0) for i in range(0, len(numeric), n)]
        k = 1
        while k <= n:
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(correct)
            k *= 2
        if (k // 2) != n:
            out[f"pass@{n}"] = sum(pass_at_k(n, c, n) for c in correct) / len(correct)
    return out


async def eval_rollout(args: Any, rollout_id: int) -> tuple[RolloutFnEvalOutput, list[list[Sample]]]:
    """Every dataset of `args.eval_datasets`, concurrently: slime's `(RolloutFnEvalOutput(data), [])`, where
    `data` is {name: {rewards, truncated, samples, metrics}}."""
    if args.group_rm:
        raise ConfigError("group_rm is not supported in eval (as in slime): unset reward.groupRM or eval")
    datasets = list(args.eval_datasets or [])
    if not datasets:
        raise ConfigError("eval needs eval datasets: set eval_prompt_data (eval.datasets) or eval_config")
    results: dict[str, dict[str, Any]] = {}
    for one in await asyncio.gather(*(eval_rollout_single_dataset(args, rollout_id, cfg) for cfg in datasets)):
        results.update(one)
    return RolloutFnEvalOutput(data=results), []


def _eval_dataset(args: Any, state: GenerateState, cfg: EvalDatasetConfig) -> Dataset:
    """The dataset of an eval config, loaded once per state (slime's cache key)."""
    key = cfg.cache_key + (args.hf_checkpoint, cfg.apply_chat_template,
                           json.dumps(cfg.multimodal_keys, sort_keys=True),
                           json.dumps(cfg.apply_chat_template_kwargs, sort_keys=True))
    dataset = state.eval_dataset_cache.get(key)
    if dataset is None:
        dataset = Dataset(cfg.path, state.tokenizer if args.hf_checkpoint else None, args.eval_max_prompt_len,
                          prompt_key=cfg.input_key, label_key=cfg.label_key, tool_key=cfg.tool_key,
                          metadata_key=cfg.metadata_key, apply_chat_template=bool(cfg.apply_chat_template),
                          apply_chat_template_kwargs=cfg.apply_chat_template_kwargs,
                          processor=state.processor if cfg.multimodal_keys else None,
                          multimodal_keys=cfg.multimodal_keys)
        state.eval_dataset_cache[key] = dataset
    return dataset


async def eval_rollout_single_dataset(args: Any, rollout_id: int, dataset_cfg: EvalDatasetConfig) -> dict[str, dict[str, Any]]:
    """One eval dataset: each prompt `n_samples_per_eval_prompt` times with the dataset's sampling params, its
    reward (`rm_type` / `custom_rm_path`) and generate function; {name: {rewards, truncated, samples, metrics}}."""
    if args.group_rm:
        raise ConfigError("group_rm is not supported in eval (as in slime): unset reward.groupRM or eval")
    cfg = dataset_cfg
    dataset = _eval_dataset(args, GenerateState(args), cfg)
    params = build_sampling_params(args, evaluation=True, dataset=cfg)
    n = cfg.n_samples_per_eval_prompt or 1
    tasks = []
    index = 0
    for prompt in dataset.samples:
        for j in range(n):
            sample = copy.deepcopy(prompt)
            sample.index = index
            index += 1
            sample.metadata = cfg.inject_metadata(sample.metadata)
            sample.custom_rm_path = cfg.custom_rm_path
            sample.generate_function_path = cfg.custom_generate_function_path
            p = params.copy()
            seed = sampling_seed(args, j)
            if seed is not None:
                p["sampling_seed"] = seed
            tasks.append(asyncio.create_task(generate_and_rm(args, sample, p, evaluation=True, rollout_id=rollout_id)))
    try:
        outputs = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    samples = sorted(flatten(list(outputs)), key=lambda s: s.index)
    reward_key = args.eval_reward_key or args.reward_key
    rewards = [s.reward[reward_key] if reward_key and isinstance(s.reward, dict) else s.reward for s in samples]
    truncated = [s.status == Sample.Status.TRUNCATED for s in samples]
    return {cfg.name: {"rewards": rewards, "truncated": truncated, "samples": samples,
                       "metrics": eval_metrics(rewards, truncated, n)}}
