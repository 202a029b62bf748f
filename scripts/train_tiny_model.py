#!/usr/bin/env python
"""Build kuberollout's tiny example model, tokenizer and arithmetic dataset from a seed.

No model can be downloaded in CI or in the quickstart, so the project ships its own: a byte-level
BPE tokenizer with a ChatML-style chat template, a few-hundred-thousand-parameter Qwen2 causal LM
trained on CPU to answer 2-digit addition/subtraction questions as ``\\boxed{N}<|im_end|>``, and the
JSONL prompts/labels the runtime's examples use.

Training stops early once the model's accuracy *when sampling at temperature 1* reaches a target
(default 50%), so groups of samples for one prompt get a mix of right and wrong answers: that is what
makes GRPO-style rewards have non-zero variance and what dynamic-sampling filters act on.

Everything is derived from ``--seed``; rerunning with the same seed and the same library versions
reproduces the files (training is single-process CPU PyTorch with a fixed thread count).

Usage::

    python scripts/train_tiny_model.py --seed 0 --out examples/tiny-model --data-dir examples/data
    python scripts/train_tiny_model.py --stage tokenizer     # tokenizer only (no torch needed)
    python scripts/train_tiny_model.py --stage data          # dataset only
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]

# ChatML, as used by Qwen models, without an implicit system prompt (keeps sequences short).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

OPERAND_MIN, OPERAND_MAX = 10, 99


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One arithmetic question; ``label`` is the exact answer as a string."""

    a: int
    op: str
    b: int

    @property
    def prompt(self) -> str:
        return f"What is {self.a}{self.op}{self.b}?"

    @property
    def label(self) -> str:
        return str(self.a + self.b if self.op == "+" else self.a - self.b)


def all_problems() -> list[Problem]:
    """Every 2-digit addition, and every 2-digit subtraction with a non-negative result."""
    out: list[Problem] = []
    for a in range(OPERAND_MIN, OPERAND_MAX + 1):
        for b in range(OPERAND_MIN, OPERAND_MAX + 1):
            out.append(Problem(a, "+", b))
            if a >= b:
                out.append(Problem(a, "-", b))
    return out


def split_problems(seed: int, n_train: int, n_eval: int) -> tuple[list[Problem], list[Problem], list[Problem]]:
    """Return (rl_train, eval, model_train): disjoint eval; the model never trains on eval prompts."""
    problems = all_problems()
    rng = random.Random(seed)
    rng.shuffle(problems)
    eval_set = problems[:n_eval]
    rl_train = problems[n_eval : n_eval + n_train]
    model_train = problems[n_eval:]
    return rl_train, eval_set, model_train


def write_dataset(seed: int, data_dir: Path, n_train: int, n_eval: int) -> None:
    rl_train, eval_set, _ = split_problems(seed, n_train, n_eval)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("arith_train.jsonl", rl_train), ("arith_eval.jsonl", eval_set)):
        with open(data_dir / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"prompt": p.prompt, "label": p.label}) + "\n" for p in rows)
    print(f"wrote {len(rl_train)} train / {len(eval_set)} eval rows to {data_dir}")


def chat_text(problem: Problem, with_answer: bool) -> str:
    text = f"{IM_START}user\n{problem.prompt}{IM_END}\n{IM_START}assistant\n"
    if with_answer:
        text += f"\\boxed{{{problem.label}}}{IM_END}"
    return text


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def tokenizer_corpus() -> Iterator[str]:
    """Text the BPE merges are learned from: chat-formatted problems plus a little plain English,
    so that the simulated engine and custom test prompts decode to something readable."""
    for p in all_problems()[::7]:
        yield chat_text(p, with_answer=True)
    yield "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    english = (
        "The answer is. Let me think step by step. First, add the tens and then the ones. "
        "So the result is. Please reason step by step, and put your final answer within boxed. "
        "Question: Answer: Sure, here is the solution. Hello world! This is a test of the engine. "
        "Compute the sum. Compute the difference. Calculate. What is the value of the expression?"
    )
    for _ in range(20):
        yield english


def build_tokenizer(out: Path, vocab_size: int = 384) -> Any:
    """Train a byte-level BPE (digits split one per token) and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    hf.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    _make_config_portable(out)
    print(f"tokenizer: vocab {len(hf)} saved to {out}")
    return hf


def _make_config_portable(out: Path) -> None:
    """transformers 5 writes ``tokenizer_class: TokenizersBackend`` and a separate chat_template.jinja;
    transformers 4.x knows neither. Rewrite the config with the class name and keys both understand."""
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    cfg.pop("extra_special_tokens", None)
    cfg["additional_special_tokens"] = [IM_START, IM_END]
    cfg["bos_token"] = None
    cfg["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@dataclass
class TrainSettings:
    seed: int = 0
    threads: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    max_steps: int = 6000
    eval_every: int = 25
    warmup_steps: int = 100
    target_accuracy: float = 0.5
    eval_samples: int = 128
    hidden_size: int = 96
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 256


def encode_example(tokenizer: Any, problem: Problem) -> tuple[list[int], int]:
    """Token ids of the full chat example, and the index where the assistant answer starts."""
    prompt_ids = tokenizer.encode(chat_text(problem, with_answer=False), add_special_tokens=False)
    full_ids = tokenizer.encode(chat_text(problem, with_answer=True), add_special_tokens=False)
    assert full_ids[: len(prompt_ids)] == prompt_ids, "prompt must tokenize as a prefix of the example"
    return full_ids, len(prompt_ids)


def sample_accuracy(model: Any, tokenizer: Any, problems: list[Problem], seed: int, temperature: float = 1.0) -> float:
    """Fraction of problems answered correctly when sampling (one sample each) at ``temperature``."""
    flags = _correct_flags(model, tokenizer, problems, seed, temperature)
    return sum(flags) / max(1, len(flags))


def _correct_flags(model: Any, tokenizer: Any, problems: list[Problem], seed: int, temperature: float = 1.0) -> list[int]:
    """1/0 per problem: one sampled answer (batched, KV-cached, left-padded) is exactly the label."""
    import torch

    from rollout_runtime.engines.answers import extract_boxed

    gen = torch.Generator().manual_seed(seed)
    # transformers 5 renamed the KV-cache argument; older releases call it past_key_values.
    import inspect

    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    flags: list[int] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(problems), 64):
            chunk = problems[start : start + 64]
            prompts = [tokenizer.encode(chat_text(p, False), add_special_tokens=False) for p in chunk]
            # Prompts can differ in length: left-pad so generation is position-aligned.
            width = max(len(p) for p in prompts)
            pad = tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            outs: list[list[int]] = [[] for _ in chunk]
            done = [False] * len(chunk)
            past = None
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            cur_ids, cur_pos = ids, pos
            for _ in range(12):
                o = model(input_ids=cur_ids, attention_mask=attn, position_ids=cur_pos, use_cache=True, **{cache_kw: past})
                past = getattr(o, "cache", None) or o.past_key_values
                logits = o.logits[:, -1, :].float()
                if temperature <= 0:
                    nxt = logits.argmax(-1)
                else:
                    probs = torch.softmax(logits / temperature, -1)
                    nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
                for i, t in enumerate(nxt.tolist()):
                    if not done[i]:
                        outs[i].append(t)
                        done[i] = t == im_end
                if all(done):
                    break
                cur_ids = nxt.unsqueeze(-1)
                cur_pos = cur_pos[:, -1:] + 1
                attn = torch.cat([attn, torch.ones(len(chunk), 1, dtype=attn.dtype)], dim=1)
            for p, o_ids in zip(chunk, outs):
                text = tokenizer.decode(o_ids, skip_special_tokens=True)
                flags.append(int(extract_boxed(text) == p.label))
    model.train()
    return flags


def train_model(out: Path, tokenizer: Any, settings: TrainSettings, n_eval: int) -> dict[str, Any]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    rng = random.Random(settings.seed + 1)

    _, eval_set, model_train = split_problems(settings.seed, 0, n_eval)
    encoded = [encode_example(tokenizer, p) for p in model_train]

    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=None,
        eos_token_id=im_end,
        pad_token_id=pad,
        use_sliding_window=False,
    )
    model = Qwen2ForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < settings.warmup_steps:
            return settings.lr * (step + 1) / settings.warmup_steps
        frac = (step - settings.warmup_steps) / max(1, settings.max_steps - settings.warmup_steps)
        return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    eval_probe = eval_set[: settings.eval_samples]
    history: list[dict[str, float]] = []
    t0 = time.monotonic()
    accuracy = 0.0
    step = 0
    model.train()
    for step in range(1, settings.max_steps + 1):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(settings.batch_size)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ids, ans_start) in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attn[i, : len(ids)] = 1
            # Loss on the answer only: the prompt is given at inference time.
            labels[i, ans_start : len(ids)] = torch.tensor(ids[ans_start:])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % settings.eval_every == 0:
            accuracy = sample_accuracy(model, tokenizer, eval_probe, seed=settings.seed + step)
            elapsed = time.monotonic() - t0
            history.append({"step": step, "loss": loss.item(), "accuracy_t1": accuracy, "elapsed_s": elapsed})
            print(f"step {step} loss {loss.item():.4f} acc@T=1 {accuracy:.3f} ({elapsed:.0f}s)", flush=True)
            if accuracy >= settings.target_accuracy:
                break
    train_time = time.monotonic() - t0

    # Final figures on the whole eval split: 8 samples per prompt at T=1, plus greedy.
    group = 8
    per_prompt = [0] * len(eval_set)
    for k in range(group):
        correct = _correct_flags(model, tokenizer, eval_set, seed=settings.seed + 10_000 + k)
        per_prompt = [a + b for a, b in zip(per_prompt, correct)]
    acc_t1 = sum(per_prompt) / (group * len(eval_set))
    greedy = sum(_correct_flags(model, tokenizer, eval_set, seed=0, temperature=0.0)) / len(eval_set)
    mixed = sum(1 for c in per_prompt if 0 < c < group) / len(eval_set)
    all_right = sum(1 for c in per_prompt if c == group) / len(eval_set)
    all_wrong = sum(1 for c in per_prompt if c == 0) / len(eval_set)
    print(f"eval: acc@T=1 {acc_t1:.3f} greedy {greedy:.3f} groups of {group}: mixed {mixed:.2f} "
          f"all-correct {all_right:.2f} all-wrong {all_wrong:.2f}")

    model.generation_config.eos_token_id = [im_end, pad]
    model.generation_config.pad_token_id = pad
    model.generation_config.bos_token_id = None
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    return {
        "params": n_params,
        "steps": step,
        "train_time_s": round(train_time, 1),
        "history": history,
        "final_probe_accuracy_t1": accuracy,
        "eval_prompts": len(eval_set),
        "eval_accuracy_t1": round(acc_t1, 4),
        "eval_accuracy_greedy": round(greedy, 4),
        "eval_group_size": group,
        "eval_groups_mixed": round(mixed, 4),
        "eval_groups_all_correct": round(all_right, 4),
        "eval_groups_all_wrong": round(all_wrong, 4),
        "torch_threads": settings.threads,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "examples" / "tiny-model")
    ap.add_argument("--data-dir", type=Path, default=REPO_ROOT / "examples" / "data")
    ap.add_argument("--stage", choices=["all", "data", "tokenizer", "model"], default="all")
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-eval", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=TrainSettings.max_steps)
    ap.add_argument("--target-accuracy", type=float, default=TrainSettings.target_accuracy)
    args = ap.parse_args(argv)

    if args.stage in ("all", "data"):
        write_dataset(args.seed, args.data_dir, args.n_train, args.n_eval)
    if args.stage in ("all", "tokenizer"):
        build_tokenizer(args.out)
    if args.stage in ("all", "model"):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(args.out))
        settings = TrainSettings(
            seed=args.seed, threads=args.threads, max_steps=args.max_steps, target_accuracy=args.target_accuracy
        )
        report = train_model(args.out, tokenizer, settings, args.n_eval)
        (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: v for k, v in report.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(REPO_ROOT))
    raise SystemExit(main())
