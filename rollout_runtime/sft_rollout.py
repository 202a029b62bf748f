"""SFT "rollout": tokens and loss masks from chat conversations, no engine (slime's sft_rollout)."""

from __future__ import annotations

from typing import Any

from rollout_runtime.mask_utils import MultiTurnLossMaskGenerator, get_response_lengths
from rollout_runtime.misc import load_tokenizer
from rollout_runtime.types import Sample

_GENERATORS: dict[str, MultiTurnLossMaskGenerator] = {}


def _generator(args: Any) -> MultiTurnLossMaskGenerator:
    if not args.hf_checkpoint:
        raise ValueError("sft_rollout needs hf_checkpoint (the tokenizer with the chat template)")
    gen = _GENERATORS.get(args.hf_checkpoint)
    if gen is None:
        gen = MultiTurnLossMaskGenerator(load_tokenizer(args.hf_checkpoint), tokenizer_type=args.loss_mask_type)
        _GENERATORS[args.hf_checkpoint] = gen
    return gen


def generate_rollout(args: Any, rollout_id: int, data_buffer: Any, evaluation: bool = False) -> list[list[Sample]]:
    if evaluation:
        raise ValueError("sft_rollout has no evaluation mode")
    gen = _generator(args)
    groups = data_buffer.get_samples(args.rollout_batch_size)
    for group in groups:
        if len(group) != 1:
            raise ValueError(f"sft_rollout needs n_samples_per_prompt=1, got groups of {len(group)}")
        sample = group[0]
        messages = sample.prompt
        if not isinstance(messages, list):
            raise ValueError(f"sample {sample.index}: sft_rollout needs chat messages under input_key, got "
                             f"{type(messages).__name__}; do not set apply_chat_template for SFT")
        token_ids, loss_mask = gen.get_loss_mask(messages, tools=(sample.metadata or {}).get("tools"))
        response_length = get_response_lengths([loss_mask])[0]
        sample.tokens = token_ids
        sample.response_length = response_length
        sample.reward = 0
        sample.loss_mask = loss_mask[-response_length:] if response_length else []
    return groups
