"""`rollout-runtime run`: rollout after rollout, each batch written then committed.

The loop resumes from the last commit: the dataset position and the buffer are restored,
and the next rollout id is the committed one + 1. A batch file written but not committed
(a crash in between) is simply regenerated under the same name.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from rollout_runtime.async_utils import run
from rollout_runtime.base_types import call_rollout_fn
from rollout_runtime.config import RolloutConfig
from rollout_runtime.contract import attempt_from_env
from rollout_runtime.data_source import persists_itself, restore, snapshot
from rollout_runtime.misc import load_function, should_run_periodic_action
from rollout_runtime.output import write_batch, write_json
from rollout_runtime.rollout.evaluation import eval_metrics
from rollout_runtime.rollout.generate import close_http
from rollout_runtime.rollout.stats import RolloutStats, batch_stats
from rollout_runtime.state import RolloutState, StateStore, open_state_store
from rollout_runtime.state.locations import file_state_dir
from rollout_runtime.types import flatten

log = logging.getLogger(__name__)

#: Test hook: exit (as if killed) after writing this rollout id's batch, before committing it.
CRASH_AFTER_WRITE_ENV = "KUBEROLLOUT_CRASH_AFTER_WRITE"


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

    def resume(self) -> tuple[RolloutState, str | None]:
        """The last commit (buffer included, wherever the store keeps it), restored into the data source."""
        state, version = self.store.read()
        if state is None:
            return RolloutState(), version
        restore(self.data_source, state.data_source, state.rollout_id)
        log.info("resuming after rollout %d (completed=%d aborted=%d filtered=%d, %d buffered groups)",
                 state.rollout_id, state.completed, state.aborted, state.filtered, len(state.data_source.buffer or []))
        return state, version

    def run(self) -> RunSummary:
        args = self.args
        state, version = self.resume()
        num_rollout = args.rollouts_to_run(len(self.data_source))
        start = state.rollout_id + 1
        if args.start_rollout_id is not None and state.rollout_id < 0:
            start = args.start_rollout_id
        env_attempt = attempt_from_env(os.environ)
        attempt = env_attempt if env_attempt is not None else state.attempt
        crash_after = os.environ.get(CRASH_AFTER_WRITE_ENV)
        totals = RolloutStats()
        rewards: list[float] = []
        t0 = time.perf_counter()
        self.progress.start(num_rollout, max(start, 0))
        per_epoch = len(self.data_source) // args.rollout_batch_size or None
        try:
            if self._eval_enabled() and ((start == 0 < num_rollout and not args.skip_eval_before_train)
                                         or num_rollout == 0):
                self._evaluate(0, initial=True)  # slime: before rollout 0, or an eval-only run
            for rollout_id in range(start, num_rollout):
                t_roll = time.perf_counter()
                output = call_rollout_fn(self.rollout_fn, args, rollout_id, self.data_source, evaluation=False)
                groups = output.samples
                stats = batch_stats(output)
                url = write_batch(args.output_dir, rollout_id, groups, args.output_format)
                if crash_after is not None and int(crash_after) == rollout_id:
                    log.error("%s=%s: exiting between batch write and commit", CRASH_AFTER_WRITE_ENV, crash_after)
                    os._exit(137)
                state = RolloutState(
                    rollout_id=rollout_id,
                    num_rollouts=num_rollout,
                    completed=state.completed + stats.completed,
                    aborted=state.aborted + stats.aborted,
                    filtered=state.filtered + stats.filtered,
                    attempt=attempt,
                    finished=rollout_id == num_rollout - 1,
                    last_batch=url,
                    metrics={k: float(v) for k, v in stats.metrics.items()},
                    data_source=snapshot(self.data_source, rollout_id),
                ).stamp()
                version = self.store.commit(state, version)
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
                    self._evaluate(rollout_id)
            if num_rollout == 0 or start >= num_rollout:
                if not state.finished:
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

    def _eval_enabled(self) -> bool:
        return bool(self.args.eval_datasets) and self.args.eval_interval is not None

    @staticmethod
    def _custom_log(path: str | None, *call_args: Any) -> bool:
        """slime's custom log hooks: called when configured; a truthy return skips the default log line."""
        return bool(path) and bool(load_function(path)(*call_args))

    def _evaluate(self, rollout_id: int, *, initial: bool = False) -> None:
        """Eval through the eval function (slime's --eval-function-path); writes eval_{id}.json (eval_initial.json
        for the one before rollout 0, whose slime id, 0, the eval after rollout 0 also has)."""
        out = call_rollout_fn(self.eval_fn, self.args, rollout_id, self.data_source, evaluation=True)
        data = out.data
        summary = {name: r.get("metrics") or eval_metrics(list(r.get("rewards") or []), list(r.get("truncated") or []), 1)
                   for name, r in data.items()}
        name = "eval_initial.json" if initial else f"eval_{rollout_id:06d}.json"
        write_json(self.args.output_dir, name,
                   {"rollout_id": rollout_id, "initial": initial, "metrics": summary, "extra_metrics": out.metrics,
                    "samples": {n: [s.to_dict() for s in r.get("samples", [])] for n, r in data.items()}})
        if not self._custom_log(self.args.custom_eval_rollout_log_function_path, rollout_id, self.args, data,
                                out.metrics):
            log.info("eval at rollout %d%s: %s", rollout_id, " (before training)" if initial else "", summary)


def install_signal_handlers(runner: Runner) -> None:
    signal.signal(signal.SIGTERM, runner.request_stop)
