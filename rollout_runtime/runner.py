"""`rollout-runtime run`: rollout after rollout, each batch published then committed.

The loop resumes from the last commit: the dataset position and the buffer are restored,
and the next rollout id is the committed one + 1. Each process writes under its own writer id
(`rollout_runtime.state.artifacts`), so a batch published but not committed (a crash in between,
or a stale attempt fenced off) sits beside the committed ones and never replaces one; the
start-up sweep removes such leftovers once the committed state proves nothing can name them
(`rollout_runtime.state.sweep`). With `output_keep_last`, batches the trainer has acked are
deleted as the commits pass them.

Eval reports (slime's `--eval-interval`) are published the same way and named by the commits:
the one before rollout 0 by rollout 0's commit, the one after rollout r by a second commit of r,
right after it is written. A runtime that stops between commit r and its eval runs that eval
when it resumes, so no due eval is lost, and a stale attempt's report is never the one read.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from rollout_runtime import fault_hooks
from rollout_runtime.async_utils import run
from rollout_runtime.base_types import call_rollout_fn
from rollout_runtime.config import RolloutConfig
from rollout_runtime.contract import attempt_from_env
from rollout_runtime.data_source import persists_itself, restore, snapshot
from rollout_runtime.misc import load_function, should_run_periodic_action
from rollout_runtime.output import write_batch, write_eval
from rollout_runtime.rollout.evaluation import eval_metrics
from rollout_runtime.rollout.generate import GenerateState, close_http
from rollout_runtime.rollout.stats import RolloutStats, batch_stats
from rollout_runtime.staleness.rule import version_range
from rollout_runtime.state import RolloutState, StateStore, open_state_store
from rollout_runtime.state.artifacts import INITIAL_EVAL, Writer, extend_spans
from rollout_runtime.state.locations import blob_dir, file_state_dir
from rollout_runtime.state.sweep import (release_batches, retention_floor, sweep, sweep_committed,
                                         sweep_committed_eval)
from rollout_runtime.types import flatten

log = logging.getLogger(__name__)

#: Test hook: exit (as if killed) after writing this rollout id's batch, before committing it.
CRASH_AFTER_WRITE_ENV = fault_hooks.CRASH_AFTER_WRITE_ENV


@dataclass
class RunSummary:
    rollouts: int
    first_rollout_id: int
    last_rollout_id: int
    completed: int
    aborted: int
    filtered: int
    mean_reward: float | None
    response_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.response_tokens / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """Progress display; a no-op base so the loop does not care whether a terminal is attached."""

    def start(self, total: int, done: int) -> None: ...

    def update(self, rollout_id: int, state: RolloutState, stats: RolloutStats, tokens_per_s: float,
               *, quiet: bool = False) -> None:
        """`quiet`: a custom rollout log function asked to skip the default log line."""

    def stop(self) -> None: ...


class RichProgress(Progress):
    """A live bar on stderr; log records go through the same console so they print above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self._p = RP(TextColumn("rollout"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     TextColumn("{task.fields[info]}"), transient=False, console=self.console)
        self._task = None

    def log_handler(self) -> logging.Handler:
        from rich.logging import RichHandler

        return RichHandler(console=self.console, show_path=False, markup=False)

    def start(self, total: int, done: int) -> None:
        self._p.start()
        self._task = self._p.add_task("rollout", total=total, completed=done, info="")

    def update(self, rollout_id: int, state: RolloutState, stats: RolloutStats, tokens_per_s: float,
               *, quiet: bool = False) -> None:
        reward = stats.metrics.get("rollout/mean_reward")
        info = (f"id {rollout_id} | samples completed {state.completed} aborted {state.aborted} filtered {state.filtered}"
                f" | {tokens_per_s:,.0f} tok/s" + (f" | reward {reward:.3f}" if reward is not None else ""))
        self._p.update(self._task, completed=state.rollout_id + 1, info=info)

    def stop(self) -> None:
        self._p.stop()


class LogProgress(Progress):
    def update(self, rollout_id: int, state: RolloutState, stats: RolloutStats, tokens_per_s: float,
               *, quiet: bool = False) -> None:
        if quiet:
            return
        log.info("rollout %d committed: completed=%d aborted=%d filtered=%d tok/s=%.0f metrics=%s", rollout_id,
                 state.completed, state.aborted, state.filtered, tokens_per_s, stats.metrics)


class Runner:
    """Owns one run: data source, state store, rollout function, output."""

    def __init__(self, args: RolloutConfig, *, store: StateStore | None = None, progress: Progress | None = None) -> None:
        self.args = args
        self.store = store or open_state_store(args)
        self.progress = progress or Progress()
        self.data_source = load_function(args.data_source_path)(args)
        if persists_itself(self.data_source) and not (args.save and args.load):
            # a slime-interface source saves under args.save and loads from args.load: the state folder
            args.save = args.save or file_state_dir(args)
            args.load = args.load or args.save
        self.rollout_fn = load_function(args.rollout_function_path)
        self.eval_fn = load_function(args.eval_function_path or args.rollout_function_path)

    def request_stop(self, *_: Any) -> None:
        """SIGTERM: finish nothing new; the current rollout is not committed and is redone on resume."""
        raise KeyboardInterrupt

    def resume(self, committed: RolloutState | None) -> RolloutState:
        """The last commit (buffer included, wherever the store keeps it), restored into the data source."""
        if committed is None:
            return RolloutState()
        restore(self.data_source, committed.data_source, committed.rollout_id)
        log.info("resuming after rollout %d (completed=%d aborted=%d filtered=%d, %d buffered groups)",
                 committed.rollout_id, committed.completed, committed.aborted, committed.filtered,
                 len(committed.data_source.buffer or []))
        return committed

    def run(self) -> RunSummary:
        args = self.args
        writer = self.store.claim(attempt_from_env(os.environ))
        committed, version = self.store.read()
        sweep((args.output_dir, blob_dir(args)), committed, writer.attempt)
        state = self.resume(committed)
        num_rollout = args.rollouts_to_run(len(self.data_source))
        start = state.rollout_id + 1
        if args.start_rollout_id is not None and state.rollout_id < 0:
            start = args.start_rollout_id
        totals = RolloutStats()
        rewards: list[float] = []
        t0 = time.perf_counter()
        self.progress.start(num_rollout, max(start, 0))
        per_epoch = len(self.data_source) // args.rollout_batch_size or None
        gate = GenerateState(args).weight_gate  # bounded staleness; a no-op without max_staleness
        gate.reporter, gate.attempt = getattr(self.store, "report_wait", None), writer.attempt
        initial_eval = False  # run here, recorded by the next commit (rollout 0's, or the finishing one)
        try:
            if self._eval_enabled():
                if (((start == 0 < num_rollout and not args.skip_eval_before_train) or num_rollout == 0)
                        and INITIAL_EVAL not in state.evals):
                    state = self._evaluate(0, writer, state, initial=True)  # slime: before rollout 0, or eval-only
                    initial_eval = True
                elif self._eval_missed(state, per_epoch):
                    log.info("rollout %d was committed but not its eval: evaluating now", state.rollout_id)
                    state, version = self._evaluate_committed(state, version, writer)
            for rollout_id in range(start, num_rollout):
                waited = run(gate.wait(rollout_id))  # before the rollout's first group: new enough weights
                t_roll = time.perf_counter()
                output = call_rollout_fn(self.rollout_fn, args, rollout_id, self.data_source, evaluation=False)
                groups = output.samples
                stats = batch_stats(output)
                versions = version_range(groups)
                if args.max_staleness is not None:  # rollout idle time, and the time it generated
                    stats.metrics["rollout/weight_wait_seconds"] = waited + stats.weight_wait_seconds
                    stats.metrics["rollout/generate_seconds"] = time.perf_counter() - t_roll - stats.weight_wait_seconds
                state, version = self._publish_and_commit(rollout_id, groups, stats, state, version, writer,
                                                          num_rollout, versions)
                totals.completed += stats.completed
                totals.aborted += stats.aborted
                totals.filtered += stats.filtered
                totals.response_tokens += stats.response_tokens
                rewards += [float(s.get_reward_value(args)) for g in groups for s in flatten(g)
                            if isinstance(s.get_reward_value(args), (int, float))]
                elapsed = time.perf_counter() - t_roll
                quiet = self._custom_log(args.custom_rollout_log_function_path, rollout_id, args,
                                         [s for g in groups for s in flatten(g)], output.metrics or stats.metrics, elapsed)
                self.progress.update(rollout_id, state, stats, stats.response_tokens / elapsed if elapsed else 0.0,
                                     quiet=quiet)
                # slime's trigger and numbering: after rollout r, every eval_interval rollouts and at each epoch end
                if self._eval_enabled() and should_run_periodic_action(rollout_id, args.eval_interval, per_epoch):
                    fault_hooks.crash_before_eval(rollout_id)
                    state, version = self._evaluate_committed(state, version, writer)
            if num_rollout == 0 or start >= num_rollout:
                if not state.finished or initial_eval:
                    state = state.model_copy(update={"finished": True, "num_rollouts": num_rollout}).stamp()
                    self.store.commit(state, version)
        finally:
            self.progress.stop()
            run(close_http(args))
        return RunSummary(
            rollouts=max(0, num_rollout - start), first_rollout_id=start, last_rollout_id=num_rollout - 1,
            completed=totals.completed, aborted=totals.aborted, filtered=totals.filtered,
            mean_reward=sum(rewards) / len(rewards) if rewards else None, response_tokens=totals.response_tokens,
            seconds=time.perf_counter() - t0,
        )

    def _publish_and_commit(self, rollout_id: int, groups: Any, stats: RolloutStats, prev: RolloutState,
                            version: str | None, writer: Writer, num_rollout: int,
                            versions: tuple[int | None, int | None]) -> tuple[RolloutState, str]:
        """Publish the batch under this writer's name, then commit a state that names it.

        The fence check before the write only saves a stale writer useless work; what makes the
        committed files safe is that nothing here can replace a file (see the module docstring).
        Retention: the commit first records how far batches are released, then they are deleted.
        """
        args = self.args
        self.store.ensure_current(version)
        fault_hooks.pause_before_write(rollout_id)
        url = write_batch(args.output_dir, rollout_id, groups, args.output_format, writer.id,
                          before_publish=fault_hooks.crash_during_write(rollout_id))
        fault_hooks.crash_after_write(rollout_id)
        keep_last = args.output_keep_last
        consumed = self.store.read_consumed() if keep_last is not None else -1
        state = RolloutState(
            rollout_id=rollout_id,
            num_rollouts=num_rollout,
            completed=prev.completed + stats.completed,
            aborted=prev.aborted + stats.aborted,
            filtered=prev.filtered + stats.filtered,
            stale=prev.stale + stats.stale,
            weight_version_min=versions[0],
            weight_version_max=versions[1],
            attempt=writer.attempt,
            finished=rollout_id == num_rollout - 1,
            last_batch=url,
            writers=extend_spans(prev.writers, rollout_id, writer.id, args.output_format),
            pruned_through=retention_floor(rollout_id, consumed, keep_last, prev.pruned_through),
            evals=prev.evals,
            keep_last=keep_last,
            metrics={k: float(v) for k, v in stats.metrics.items()},
            data_source=snapshot(self.data_source, rollout_id),
        ).stamp()
        version = self.store.commit(state, version)
        sweep_committed(args.output_dir, state, writer.attempt)
        if state.pruned_through > prev.pruned_through:
            release_batches(args.output_dir, state, prev.pruned_through)
        return state, version

    def _eval_enabled(self) -> bool:
        return bool(self.args.eval_datasets) and self.args.eval_interval is not None

    @staticmethod
    def _custom_log(path: str | None, *call_args: Any) -> bool:
        """slime's custom log hooks: called when configured; a truthy return skips the default log line."""
        return bool(path) and bool(load_function(path)(*call_args))

    def _eval_missed(self, state: RolloutState, per_epoch: int | None) -> bool:
        """Whether the last committed rollout was due an eval that no commit records (the runtime
        stopped in between; a state from a runtime that did not record evals counts too)."""
        last = state.rollout_id
        return (last >= 0 and should_run_periodic_action(last, self.args.eval_interval, per_epoch)
                and last not in state.evals)

    def _evaluate_committed(self, state: RolloutState, version: str | None,
                            writer: Writer) -> tuple[RolloutState, str | None]:
        """The eval after committed rollout `state.rollout_id`, recorded at once by a second commit of that id."""
        key = state.rollout_id
        state = self._evaluate(key, writer, state).stamp()
        version = self.store.commit(state, version)
        sweep_committed_eval(self.args.output_dir, state, key, writer.attempt)
        return state, version

    def _evaluate(self, rollout_id: int, writer: Writer, state: RolloutState, *,
                  initial: bool = False) -> RolloutState:
        """Eval through the eval function (slime's --eval-function-path), published as this writer's
        `eval_{id:06d}.{writer}.json` (`eval_initial.{writer}.json` for the one before rollout 0, whose
        slime id, 0, the eval after rollout 0 also has); `state` naming it, for the next commit."""
        out = call_rollout_fn(self.eval_fn, self.args, rollout_id, self.data_source, evaluation=True)
        data = out.data
        summary = {name: r.get("metrics") or eval_metrics(list(r.get("rewards") or []), list(r.get("truncated") or []), 1)
                   for name, r in data.items()}
        key = INITIAL_EVAL if initial else rollout_id
        write_eval(self.args.output_dir, key,
                   {"rollout_id": rollout_id, "initial": initial, "writer": writer.id, "metrics": summary,
                    "extra_metrics": out.metrics,
                    "samples": {n: [s.to_dict() for s in r.get("samples", [])] for n, r in data.items()}},
                   writer.id)
        if not self._custom_log(self.args.custom_eval_rollout_log_function_path, rollout_id, self.args, data,
                                out.metrics):
            log.info("eval at rollout %d%s: %s", rollout_id, " (before training)" if initial else "", summary)
        return state.model_copy(update={"evals": {**state.evals, key: writer.id}})


def install_signal_handlers(runner: Runner) -> None:
    signal.signal(signal.SIGTERM, runner.request_stop)
