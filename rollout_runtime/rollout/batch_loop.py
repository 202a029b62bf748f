"""Filling one batch: slime's `generate_rollout_async` / `generate_rollout` loop.

Groups are submitted whenever accepted + in-flight groups fall below the batch; each finished
group goes through the dynamic sampling filter; when the batch is full, the rest is aborted
(`rollout.abort`) and, with `partial_rollout`, goes back to the buffer whole.

Where we differ from slime:
- `over_sampling_batch_size` may be smaller than the batch (granular refills), and
  `continuous_refill` keeps that many groups in flight until the batch is full.
- With partial rollout, completed groups beyond the batch go back to the buffer instead of
  being dropped.
- The loop measures what it did (`RolloutStats`) and returns it with the batch, so the committed
  counts include the aborted and filtered samples that never reach the output.
- An over-sampling filter (slime removed it in #278) may return more groups than the batch: the
  first `rollout_batch_size` are kept.
- Groups are taken and judged through `Admission`: bounded staleness (`max_staleness`) holds new
  groups back until the weights are new enough and keeps no token older than the bound; a group an
  engine interrupted (a weight update that paused with abort) continues instead of being kept
  half-done.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable

from rollout_runtime.async_utils import run
from rollout_runtime.base_types import RolloutFnEvalOutput
from rollout_runtime.config import option
from rollout_runtime.filter_hub.base_types import MetricGatherer, call_dynamic_filter, should_drop_dynamic_filter_output
from rollout_runtime.misc import load_function
from rollout_runtime.rollout.abort import abort
from rollout_runtime.rollout.admission import Admission, Verdict
from rollout_runtime.rollout.evaluation import eval_rollout
from rollout_runtime.rollout.generate import GenerateState
from rollout_runtime.rollout.stats import RolloutBatch, RolloutStats
from rollout_runtime.types import Sample, flatten


@dataclass
class BatchResult:
    """One filled batch: the accepted groups, the groups for the buffer, and what it took."""

    completed: list[list[Sample]]
    aborted: list[list[Sample]]
    stats: RolloutStats


def _first_index(group: list[Any]) -> int:
    first = group[0]
    while isinstance(first, list):
        first = first[0]
    return first.index if first.index is not None else 0


def _samples(groups: list[list[Any]]) -> list[Sample]:
    return [s for g in groups for s in flatten(g)]


async def fill_batch(args: Any, rollout_id: int, data_source: Callable[[int], list[list[Sample]]]) -> BatchResult:
    """Fill one batch of `rollout_batch_size` accepted groups, and say what it took.

    `completed` is sorted by index; `aborted` holds the groups to put back in the buffer
    (non-empty only with partial rollout).
    """
    state = GenerateState(args)
    state.reset()
    state.stats = stats = RolloutStats()
    started = time.perf_counter()
    dynamic_filter = load_function(args.dynamic_sampling_filter_path) if args.dynamic_sampling_filter_path else None
    over_filter_path = option(args, "over_sampling_filter_path")
    over_filter = load_function(over_filter_path) if over_filter_path else None
    target = args.rollout_batch_size
    refill = args.over_sampling_batch_size or args.rollout_batch_size
    if over_filter is not None:
        # Collect more accepted groups than the batch, then let the filter choose the batch.
        target = option(args, "over_sampling_filter_input_size") or max(target, refill)
    metrics = MetricGatherer()
    admission = Admission(args, rollout_id, data_source, stats)
    data: list[list[Sample]] = []
    all_data: list[list[Sample]] = []  # every group that came back, filtered ones too (slime's all_samples)
    surplus: list[list[Sample]] = []
    done: set[asyncio.Task] = set()
    try:
        continuous = option(args, "continuous_refill")
        while len(data) < target:
            while True:
                in_flight = state.remaining_batch_size - len(data)
                if state.remaining_batch_size < target:
                    n = refill  # slime's rule: accepted + in-flight must cover the batch
                elif continuous and in_flight < refill:
                    n = refill - in_flight  # keep engines busy; leftovers are recycled at the end
                else:
                    break
                groups = await admission.take(n)
                for s in _samples(groups):
                    s.metadata.setdefault("start_rollout_id", rollout_id)
                state.submit_generate_tasks(groups, rollout_id=rollout_id)
            done, state.pendings = await asyncio.wait(state.pendings, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                group = task.result()
                if len(group) != args.n_samples_per_prompt:
                    raise RuntimeError(f"a group came back with {len(group)} samples, expected {args.n_samples_per_prompt}")
                if len(data) >= target:
                    all_data.append(group)
                    surplus.append(group)
                    continue
                if await admission.settle(group) is not Verdict.KEEP:
                    continue  # continued after an interruption, restarted or dropped as stale
                all_data.append(group)
                out = call_dynamic_filter(dynamic_filter, args, group)
                if should_drop_dynamic_filter_output(out, remaining_batch_size=state.remaining_batch_size, target_data_size=target):
                    metrics.on_dynamic_filter_drop(out.reason)
                    state.remaining_batch_size -= 1
                    stats.filtered += len(flatten(group))
                    stats.wasted_tokens += sum(s.response_length for s in flatten(group))
                    continue
                data.append(group)
        recycled = await abort(args, rollout_id)
    except BaseException:
        for task in state.pendings:
            task.cancel()
        for task in done:  # finished with the same error: retrieved here, not logged again by asyncio at exit
            if not task.cancelled():
                task.exception()
        raise
    if over_filter is not None:
        chosen = list(over_filter(args, data))[:args.rollout_batch_size]  # a filter may return every group, ranked
        if len(chosen) != args.rollout_batch_size:
            raise RuntimeError(f"over-sampling filter {over_filter_path} returned {len(chosen)} groups, "
                               f"expected at least rollout_batch_size={args.rollout_batch_size}")
        chosen_ids = {id(g) for g in chosen}
        rejected = _samples([g for g in data if id(g) not in chosen_ids])
        stats.filtered += len(rejected)
        stats.wasted_tokens += sum(s.response_length for s in rejected)
        data = chosen
    if args.partial_rollout:
        aborted_groups = surplus + recycled  # back to the buffer; their tokens are kept
        stats.aborted = len(_samples(aborted_groups))
    else:
        aborted_groups = []
        thrown_away = _samples(surplus + state.discarded)
        stats.aborted = len(thrown_away)
        stats.wasted_tokens += sum(s.response_length for s in thrown_away)
    data.sort(key=_first_index)
    aborted_groups.sort(key=_first_index)
    accepted = _samples(data)
    stats.completed = len(accepted)
    stats.response_tokens = sum(s.response_length for s in accepted)
    stats.seconds = time.perf_counter() - started
    stats.metrics = dict(metrics.collect())
    if state.context_overflows.count:  # samples that ended TRUNCATED for want of room in the context
        stats.metrics["rollout/context_overflow"] = float(state.context_overflows.count)
    numeric = [float(r) for r in (s.get_reward_value(args) for s in accepted) if isinstance(r, (int, float))]
    if numeric:
        stats.metrics["rollout/mean_reward"] = sum(numeric) / len(numeric)
    state.reset()
    if args.rollout_sample_filter_path:
        load_function(args.rollout_sample_filter_path)(args, data)
    if args.rollout_all_samples_process_path:
        # slime's arguments: every group that came back (sorted by index), and the data source callable
        all_data.sort(key=_first_index)
        load_function(args.rollout_all_samples_process_path)(args, all_data, data_source)
    return BatchResult(data, aborted_groups, stats)


async def generate_rollout_async(args: Any, rollout_id: int,
                                 data_source: Callable[[int], list[list[Sample]]]) -> tuple[RolloutBatch, list[list[Sample]]]:
    """slime's async core: (RolloutFnTrainOutput of the accepted groups with the filter metrics, the groups for the
    buffer). The output is a `RolloutBatch`, which also carries the loop's stats."""
    result = await fill_batch(args, rollout_id, data_source)
    return RolloutBatch(samples=result.completed, metrics=dict(result.stats.metrics), stats=result.stats), result.aborted


def generate_rollout(args: Any, rollout_id: int, data_buffer: Any,
                     evaluation: bool = False) -> RolloutBatch | RolloutFnEvalOutput:
    """slime's synchronous rollout function: `RolloutFnTrainOutput` (a `RolloutBatch`), or with evaluation=True
    `RolloutFnEvalOutput`. Groups still unfinished at the end go back to `data_buffer` (partial rollout)."""
    if evaluation:
        output, _ = run(eval_rollout(args, rollout_id))
        return output
    output, aborted = run(generate_rollout_async(args, rollout_id, data_buffer.get_samples))
    if aborted:
        data_buffer.add_samples(aborted)
    return output


def last_rollout_stats(args: Any) -> RolloutStats:
    """The stats of the last batch filled for `args` (for callers of the slime-shaped functions)."""
    return GenerateState(args).stats
