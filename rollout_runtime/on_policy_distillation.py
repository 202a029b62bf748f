"""On-policy distillation (slime's `rollout/on_policy_distillation.py`): a teacher SGLang server scores the
student's own tokens.

`--custom-rm-path ...on_policy_distillation.reward_func` with `--rm-url http://teacher/generate` makes each
sample's reward the teacher's `/generate` answer for its tokens with `max_new_tokens: 0` and
`logprob_start_len: 0`, i.e. the teacher's log prob of every token. `post_process_rewards` (slime's
`--custom-reward-post-process-path`, run where samples become training data) moves the response part of those
into `sample.teacher_log_probs` and returns zero task rewards, as slime's does (lists here, not tensors).
"""

from __future__ import annotations

from typing import Any

from rollout_runtime.http_client import post
from rollout_runtime.rollout.sglang_payload import image_data
from rollout_runtime.types import Sample

__all__ = ["reward_func", "post_process_rewards"]


async def reward_func(args: Any, sample: Sample, **kwargs: Any) -> dict[str, Any]:
    """The teacher's log probs of `sample.tokens` (its whole `/generate` response is the reward)."""
    payload: dict[str, Any] = {
        "input_ids": sample.tokens,
        "sampling_params": {"temperature": args.rollout_temperature, "max_new_tokens": 0, "skip_special_tokens": False},
        "return_logprob": True,
        "logprob_start_len": 0,
    }
    images = image_data(sample)
    if images:
        payload["image_data"] = images
    return await post(args.rm_url, payload)


def post_process_rewards(args: Any, samples: list[Sample], **kwargs: Any) -> tuple[list[float], list[float]]:
    """Set `teacher_log_probs` (one per response token) from each reward; return zero raw and task rewards."""
    for sample in samples:
        reward = sample.get_reward_value(args)
        teacher = [item[0] for item in reward["meta_info"]["input_token_logprobs"][1:]]
        sample.teacher_log_probs = teacher[-sample.response_length:] if sample.response_length else []
    zeros = [0.0] * len(samples)
    return zeros, list(zeros)
