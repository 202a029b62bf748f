"""Evaluation: every eval dataset sampled `n_samples_per_eval_prompt` times, scored, and summarised.

slime's `eval_rollout` result shape, `{name: {rewards, truncated, samples}}`, plus `metrics`: mean
reward, truncated ratio and unbiased pass@k for k = 1, 2, 4, ... up to n.
"""

from __future__ import annotations

import asyncio
import copy
import math
from typing import Any

from rollout_runtime.config import ConfigError
from rollout_runtime.dataset import Dataset
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


async def eval_rollout(args: Any, rollout_id: int) -> dict[str, dict[str, Any]]:
    """Evaluate every eval dataset concurrently; {name: {rewards, truncated, samples, metrics}}."""
    if args.group_rm:
        raise ConfigError("group_rm is not supported in eval (as in slime): unset reward.groupRM or eval")
    datasets = args.eval_datasets()
    if not datasets:
        raise ConfigError("eval needs eval_prompt_data (eval.datasets)")
    results = await asyncio.gather(*(_eval_one(args, rollout_id, name, path) for name, path in datasets))
    return dict(results)


def _eval_dataset(args: Any, state: GenerateState, name: str, path: str) -> Dataset:
    """The eval dataset, loaded once per state."""
    prompt_key = args.eval_input_key or args.input_key
    label_key = args.eval_label_key or args.label_key
    key = (name, path, prompt_key, label_key)
    dataset = state.eval_datasets.get(key)
    if dataset is None:
        dataset = Dataset(path, state.tokenizer if args.hf_checkpoint else None, args.eval_max_prompt_len,
                          prompt_key=prompt_key, label_key=label_key,
                          tool_key=args.eval_tool_key or args.tool_key, metadata_key=args.metadata_key,
                          apply_chat_template=args.apply_chat_template,
                          apply_chat_template_kwargs=args.apply_chat_template_kwargs)
        state.eval_datasets[key] = dataset
    return dataset


async def _eval_one(args: Any, rollout_id: int, name: str, path: str) -> tuple[str, dict[str, Any]]:
    dataset = _eval_dataset(args, GenerateState(args), name, path)
    params = build_sampling_params(args, evaluation=True)
    n = args.n_samples_per_eval_prompt
    tasks = []
    index = 0
    for prompt in dataset.samples:
        for j in range(n):
            sample = copy.deepcopy(prompt)
            sample.index = index
            index += 1
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
    return name, {"rewards": rewards, "truncated": truncated, "samples": samples,
                  "metrics": eval_metrics(rewards, truncated, n)}
