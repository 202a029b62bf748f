"""The plain GRPO loop, without the runtime: sample in-process, score, train, repeat.

It proves the trainer learns on its own, so that the real loop (engines, router, runtime, live
weights) has a reference to match. Each step: `prompts_per_step` train prompts x `n_samples` samples
at T=1 with the current weights, the math reward, one `GRPOTrainer.step`. Eval: every eval prompt,
`eval_samples` samples each at T=1, before training and every `eval_every` steps.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from grpo import GRPOConfig, GRPOTrainer
from local_sampler import PromptStream, evaluate, sample_groups
from report import EvalPoint, RunRecord, StepPoint, plot


@dataclass
class StandaloneSettings:
    model: str
    train_data: str
    eval_data: str
    out_dir: str
    steps: int = 200
    prompts_per_step: int = 16
    n_samples: int = 8
    eval_every: int = 50
    eval_samples: int = 4
    max_new_tokens: int = 16
    save_every: int = 0  # 0: save the final version only


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_standalone(settings: StandaloneSettings, config: GRPOConfig, console: Console) -> RunRecord:
    from transformers import AutoTokenizer

    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = GRPOTrainer(settings.model, config)
    tokenizer = AutoTokenizer.from_pretrained(settings.model)
    train_rows, eval_rows = read_jsonl(settings.train_data), read_jsonl(settings.eval_data)
    prompts = PromptStream(train_rows, config.seed)
    record = RunRecord(settings={"mode": "standalone", **vars(settings), **vars(config),
                                 "torch_threads": torch.get_num_threads()})

    def run_eval(t0: float) -> None:
        acc = evaluate(trainer.model, tokenizer, eval_rows, settings.eval_samples, settings.max_new_tokens)
        record.evals.append(EvalPoint(trainer.version, acc, time.monotonic() - t0))
        console.print(f"eval @ step {trainer.version}: accuracy {acc:.3f} ({time.monotonic() - t0:.0f}s)")

    t0 = time.monotonic()
    run_eval(t0)
    columns = (TextColumn("[bold]GRPO"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=settings.steps, info="")
        for _ in range(settings.steps):
            t_gen = time.monotonic()
            groups = sample_groups(trainer.model, tokenizer, prompts.take(settings.prompts_per_step),
                                   settings.n_samples, settings.max_new_tokens, trainer.version, config.temperature)
            t_train = time.monotonic()
            stats = trainer.step(groups)
            t_end = time.monotonic()
            record.steps.append(StepPoint(stats.version, stats.reward_mean, stats.loss, t_end - t0,
                                          t_train - t_gen, t_end - t_train, versions=stats.sample_versions,
                                          extra={"groups_trained": stats.groups_trained,
                                                 "parity_max_abs": stats.parity_max_abs,
                                                 "clip_fraction": stats.clip_fraction}))
            if settings.save_every and stats.version % settings.save_every == 0:
                trainer.save(out / f"v{stats.version}")
            last = record.evals[-1].accuracy
            bar.update(task, advance=1, info=f"reward {stats.reward_mean:.2f}  eval {last:.3f}  "
                                             f"parity {stats.parity_max_abs or 0:.1e}")
            if stats.version % settings.eval_every == 0 or stats.version == settings.steps:
                run_eval(t0)
    record.wall_s = time.monotonic() - t0
    trainer.save(out / f"v{trainer.version}")
    return record


def finish(record: RunRecord, out_dir: str, console: Console) -> None:
    out = Path(out_dir)
    record.print(console)
    record.save(out / "run.json")
    png = plot(record, out / "curve.png")
    console.print(f"record: {out / 'run.json'}; plot: {png or 'matplotlib not installed (pip install -e .[rl-loop])'}",
                  markup=False)
