"""Rollouts without the runtime: groups sampled in-process with `transformers.generate`, scored with the
runtime's math reward. What `--standalone` trains on, to show the trainer learns before any engine,
router or runtime is involved.

The prompt is rendered exactly as the runtime renders it for this model (`apply_chat_template: true`
in rollout.yaml): the tokenizer's chat template over one user message, with the generation prompt,
then encoded without special tokens. Sampling is plain temperature sampling over the full vocabulary
(`top_k=0`, `top_p=1`: transformers' default top_k of 50 would not be T=1 sampling), and each token's
log-prob is `log_softmax` of the raw logits, as SGLang (and the dev engine) report it. A response ends
with its first EOS token, which is part of the response (SGLang's output ids include it) and is
trained on like any other token.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from rollout_runtime.rm_hub import GRADERS
from rollout_runtime.types import Sample

math_reward = GRADERS["math"]  # the runtime's `rm_type: math`: 1 if the boxed answer equals the label


def render_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of `prompt` as the runtime sends it (chat template, generation prompt, no extra BOS)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set([eos] if isinstance(eos, int) else (eos or []))
    ids.add(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompt_ids: list[list[int]], max_new_tokens: int,
             temperature: float = 1.0) -> list[tuple[list[int], list[float], bool]]:
    """One sampled response per prompt: (response ids, their log-probs, finished with EOS)."""
    pad = tokenizer.pad_token_id
    stops = eos_ids(model, tokenizer)
    width = max(len(p) for p in prompt_ids)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=ids, attention_mask=attn, do_sample=temperature > 0, temperature=temperature or None,
        top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, eos_token_id=sorted(stops), pad_token_id=pad,
        output_logits=True, return_dict_in_generate=True,
    )
    model.train(was_training)
    new = out.sequences[:, width:]
    logps = torch.stack([torch.log_softmax(step.float(), dim=-1) for step in out.logits], dim=1)  # [B, T, V]
    results = []
    for i in range(len(prompt_ids)):
        resp: list[int] = []
        lps: list[float] = []
        finished = False
        for t, tid in enumerate(new[i].tolist()):
            resp.append(tid)
            lps.append(float(logps[i, t, tid]))
            if tid in stops:
                finished = True
                break
        results.append((resp, lps, finished))
    return results


def sample_groups(model: Any, tokenizer: Any, rows: list[dict[str, Any]], n_samples: int, max_new_tokens: int,
                  version: int, temperature: float = 1.0) -> list[list[Sample]]:
    """`n_samples` scored samples per row, as groups of slime `Sample`s (what the runtime commits)."""
    prompts = [render_prompt(tokenizer, r["prompt"]) for r in rows]
    flat = [p for p in prompts for _ in range(n_samples)]
    outputs = generate(model, tokenizer, flat, max_new_tokens, temperature)
    groups: list[list[Sample]] = []
    for g, row in enumerate(rows):
        group = []
        for k in range(n_samples):
            resp, lps, finished = outputs[g * n_samples + k]
            text = tokenizer.decode(resp, skip_special_tokens=False)
            group.append(Sample(
                group_index=g, index=g * n_samples + k, prompt=row["prompt"], label=row["label"],
                tokens=prompts[g] + resp, response=text, response_length=len(resp), loss_mask=[1] * len(resp),
                rollout_log_probs=lps, weight_versions=[str(version)],
                status=Sample.Status.COMPLETED if finished else Sample.Status.TRUNCATED,
                reward=math_reward(text, row["label"], {}),
            ))
        groups.append(group)
    return groups


def evaluate(model: Any, tokenizer: Any, rows: list[dict[str, Any]], n_samples: int, max_new_tokens: int,
             temperature: float = 1.0, chunk: int = 256) -> float:
    """Mean reward (accuracy) of `n_samples` T=`temperature` samples per row."""
    total = 0.0
    count = 0
    per_chunk = max(1, chunk // n_samples)
    for start in range(0, len(rows), per_chunk):
        for group in sample_groups(model, tokenizer, rows[start:start + per_chunk], n_samples, max_new_tokens, -1,
                                   temperature):
            total += sum(float(s.reward) for s in group)
            count += len(group)
    return total / max(1, count)


class PromptStream:
    """Train prompts in shuffled epochs, `per_step` at a time (a fixed seed gives the same order)."""

    def __init__(self, rows: list[dict[str, Any]], seed: int) -> None:
        self.rows = rows
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def take(self, per_step: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < per_step:
            if not self.order:
                self.order = list(range(len(self.rows)))
                self.rng.shuffle(self.order)
            out.append(self.rows[self.order.pop()])
        return out
