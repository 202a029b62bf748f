"""The run's record: per-step figures, eval points, the printed curve and the PNG plot.

Kept apart from the loops so the standalone and the real loop print and plot the same way.
matplotlib is optional (`pip install -e .[rl-loop]`); without it the curve is printed only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class EvalPoint:
    step: int  # policy version evaluated (0: before training)
    accuracy: float
    elapsed_s: float  # since the start of training


@dataclass
class StepPoint:
    step: int
    reward_mean: float
    loss: float
    elapsed_s: float
    rollout_s: float  # trainer waiting for (or producing) the batch: trainer idle time in the real loop
    train_s: float
    publish_s: float = 0.0
    rollout_idle_s: float | None = None  # engines without work during this step (real loop only)
    versions: list[int] = field(default_factory=list)  # policy versions of the batch's tokens
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    settings: dict[str, Any]
    steps: list[StepPoint] = field(default_factory=list)
    evals: list[EvalPoint] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        first = self.evals[0] if self.evals else None
        last = self.evals[-1] if self.evals else None
        best = max(self.evals, key=lambda e: e.accuracy) if self.evals else None
        n = len(self.steps) or 1
        return {
            "steps": len(self.steps),
            "wall_s": round(self.wall_s, 1),
            "eval_accuracy_before": first.accuracy if first else None,
            "eval_accuracy_after": last.accuracy if last else None,
            "eval_accuracy_best": best.accuracy if best else None,
            "best_step": best.step if best else None,
            "trainer_wait_s_per_step": round(sum(s.rollout_s for s in self.steps) / n, 3),
            "train_s_per_step": round(sum(s.train_s for s in self.steps) / n, 3),
            "publish_s_per_step": round(sum(s.publish_s for s in self.steps) / n, 3),
            **self._idle_fractions(),
        }

    def _idle_fractions(self) -> dict[str, float]:
        """Shares of the training steps' time (evals excluded) the trainer and the engines sat idle."""
        busy = sum(s.rollout_s + s.train_s + s.publish_s for s in self.steps)
        if not busy:
            return {}
        out = {"trainer_idle_fraction": round(sum(s.rollout_s for s in self.steps) / busy, 3)}
        idle = [s.rollout_idle_s for s in self.steps if s.rollout_idle_s is not None]
        if idle:
            out["rollout_idle_fraction"] = round(sum(idle) / busy, 3)
        return out

    def save(self, path: Path) -> None:
        data = {"settings": self.settings, "summary": self.summary(), "evals": [asdict(e) for e in self.evals],
                "steps": [asdict(s) for s in self.steps]}
        path.write_text(json.dumps(data, indent=1) + "\n")

    def print(self, console: Console) -> None:
        table = Table(title="eval accuracy at T=1 (mean reward)")
        for col in ("step", "accuracy", "elapsed s", "trainer idle s/step", "rollout idle s/step"):
            table.add_column(col, justify="right")
        prev = 0
        for e in self.evals:
            window = [s for s in self.steps if prev < s.step <= e.step]
            idle = f"{sum(s.rollout_s for s in window) / len(window):.2f}" if window else "-"
            ridle = [s.rollout_idle_s for s in window if s.rollout_idle_s is not None]
            r_idle = f"{sum(ridle) / len(ridle):.2f}" if ridle else "-"
            table.add_row(str(e.step), f"{e.accuracy:.3f}", f"{e.elapsed_s:.0f}", idle, r_idle)
            prev = e.step
        console.print(table)
        console.print(self.summary())


def plot(record: RunRecord, path: Path) -> Path | None:
    """Eval accuracy per step, and per-step time split; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax1.plot([e.step for e in record.evals], [e.accuracy for e in record.evals], marker="o", label="eval (T=1)")
    ax1.plot([s.step for s in record.steps], [s.reward_mean for s in record.steps], alpha=0.4, label="train batch")
    ax1.set_ylabel("mean reward")
    ax1.legend(loc="lower right")
    ax1.grid(alpha=0.3)
    steps = [s.step for s in record.steps]
    ax2.plot(steps, [s.rollout_s for s in record.steps],
             label="waiting for the batch (trainer idle; standalone: sampling)")
    ax2.plot(steps, [s.train_s for s in record.steps], label="train step")
    if any(s.publish_s for s in record.steps):
        ax2.plot(steps, [s.publish_s for s in record.steps], label="save + publish")
    if any(s.rollout_idle_s is not None for s in record.steps):
        ax2.plot(steps, [s.rollout_idle_s or 0.0 for s in record.steps], label="rollout idle")
    ax2.set_xlabel("training step (policy version)")
    ax2.set_ylabel("seconds")
    ax2.legend(loc="upper right", fontsize="small")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
