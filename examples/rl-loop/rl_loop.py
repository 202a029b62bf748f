#!/usr/bin/env python
"""GRPO on examples/tiny-model: the real loop (dev engines, sglang router, runtime, live weights), or
`--standalone` (the trainer alone, sampling in-process: the reference the real loop should match).

    python examples/rl-loop/rl_loop.py                 # the real loop
    python examples/rl-loop/rl_loop.py --standalone    # no runtime, ~4 min on 1 thread
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from rich.console import Console  # noqa: E402

from grpo import GRPOConfig  # noqa: E402


def _staleness(value: str) -> int | None:
    if value == "free":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"--max-staleness: {value!r} is neither a non-negative integer nor 'free'")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--standalone", action="store_true", help="Sample with transformers in-process; no runtime.")
    ap.add_argument("--model", default=str(REPO / "examples" / "tiny-model"))
    ap.add_argument("--train-data", default=str(REPO / "examples" / "data" / "arith_train.jsonl"))
    ap.add_argument("--eval-data", default=str(REPO / "examples" / "data" / "arith_eval.jsonl"))
    ap.add_argument("--out", default="rl-loop-out", help="Versions v1, v2, ..., run.json and curve.png go here.")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--prompts-per-step", type=int, default=16)
    ap.add_argument("--n-samples", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--lr", type=float, default=GRPOConfig.lr)
    ap.add_argument("--clip-eps", type=float, default=GRPOConfig.clip_eps)
    ap.add_argument("--steps-per-batch", type=int, default=GRPOConfig.steps_per_batch,
                    help="optimizer steps per rollout batch (mini-batches of whole groups)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the trainer")
    ap.add_argument("--engines", type=int, default=2, help="dev engines behind the router (real loop)")
    ap.add_argument("--engine-threads", type=int, default=1)
    ap.add_argument("--rollout-config", default=str(HERE / "rollout.yaml"))
    ap.add_argument("--eval-prompts", type=int, default=None, help="evaluate on the first N eval prompts only")
    ap.add_argument("--keep-versions", type=int, default=3, help="saved versions kept on disk (real loop)")
    ap.add_argument("--max-staleness", type=_staleness, default=1,
                    help="passed to the runtime (--max-staleness): 1 (the default) lets rollout k+1 generate while "
                         "step k trains; 0 is synchronous; 'free': the runtime runs ahead as far as it likes")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-save "Writing model shards" bars would bury the loop's own
    console = Console()
    config = GRPOConfig(lr=args.lr, clip_eps=args.clip_eps, seed=args.seed, threads=args.threads,
                        steps_per_batch=args.steps_per_batch)
    if args.standalone:
        from standalone import StandaloneSettings, finish, run_standalone

        settings = StandaloneSettings(
            model=args.model, train_data=args.train_data, eval_data=args.eval_data, out_dir=args.out,
            steps=args.steps, prompts_per_step=args.prompts_per_step, n_samples=args.n_samples,
            eval_every=args.eval_every, eval_samples=args.eval_samples, max_new_tokens=args.max_new_tokens,
        )
        record = run_standalone(settings, config, console)
        finish(record, args.out, console)
        return 0
    from loop import LoopSettings, run_loop
    from standalone import finish

    settings = LoopSettings(
        repo=str(REPO), model=args.model, rollout_config=args.rollout_config, out_dir=args.out, steps=args.steps,
        eval_every=args.eval_every, engines=args.engines, engine_threads=args.engine_threads,
        max_staleness=args.max_staleness, eval_prompts=args.eval_prompts,
        keep_versions=args.keep_versions,
    )
    record = run_loop(settings, config, console)
    finish(record, args.out, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
