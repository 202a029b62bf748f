"""Which groups a rollout starts and which finished groups it may keep: bounded staleness and interruptions.

The batch loop asks `Admission` for groups instead of calling the data source directly, and hands it
every group that comes back before the dynamic filter sees it:

- `take(n)`: waits until the served weights admit this rollout (`WeightGate`, a no-op without
  `max_staleness`), then takes n groups from the data source. A recycled group whose oldest tokens
  are older than the bound is regenerated from its prompt or dropped (`stale_group_policy`), and
  counted as stale.
- `settle(group)`: a group that an engine interrupted (finish_reason abort while this rollout is not
  ending: a weight update paused with `abort`, another job's abort_all) continues from its tokens,
  as AReaL's interruptible generation does; a finished group with a token older than the bound
  (a server that came back on old weights) is regenerated or dropped, and the served version is
  read again before anything restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from rollout_runtime.config import option
from rollout_runtime.rollout.generate import GenerateState
from rollout_runtime.rollout.stats import RolloutStats
from rollout_runtime.staleness.rule import is_stale, restart_group
from rollout_runtime.types import Sample, flatten

#: An engine may interrupt a group this many times in a row without it gaining a token before the rollout fails.
MAX_IDLE_INTERRUPTIONS = 100


class Verdict(Enum):
    KEEP = "keep"  # on to the dynamic filter
    RESUBMITTED = "resubmitted"  # it runs again (continued or restarted)
    DROPPED = "dropped"  # stale, dropped: one group fewer in flight


class Admission:
    """Bounded staleness and interrupted groups for one rollout of the batch loop."""

    def __init__(self, args: Any, rollout_id: int, data_source: Callable[[int], list[list[Sample]]],
                 stats: RolloutStats) -> None:
        self.args = args
        self.rollout_id = rollout_id
        self.data_source = data_source
        self.stats = stats
        self.state = GenerateState(args)
        self.gate = self.state.weight_gate
        self.max_staleness: int | None = option(args, "max_staleness")
        self.policy: str = option(args, "stale_group_policy")
        self._idle: dict[int, tuple[int, int]] = {}  # id(first sample) -> (response tokens, interruptions)

    async def take(self, n: int) -> list[list[Sample]]:
        """n groups to start in this rollout, once the served weights admit it."""
        out: list[list[Sample]] = []
        while len(out) < n:
            self.stats.weight_wait_seconds += await self.gate.wait(self.rollout_id)
            for group in self.data_source(n - len(out)):
                if is_stale(group, self.rollout_id, self.max_staleness):
                    self._count_stale(group)
                    if self.policy == "drop":
                        continue
                    group = restart_group(group, self.rollout_id)
                out.append(group)
        return out

    async def settle(self, group: list[Any]) -> Verdict:
        """What to do with a group that came back while the rollout is still filling."""
        if self._interrupted(group):
            self._check_progress(group)
            self._resubmit(group)
            return Verdict.RESUBMITTED
        if not is_stale(group, self.rollout_id, self.max_staleness):
            return Verdict.KEEP
        self._count_stale(group)
        await self.gate.refresh()  # a server behind the others: do not restart before it is new enough
        if self.policy == "drop":
            self.state.remaining_batch_size -= 1
            return Verdict.DROPPED
        self.stats.weight_wait_seconds += await self.gate.wait(self.rollout_id)
        self._resubmit(restart_group(group, self.rollout_id))
        return Verdict.RESUBMITTED

    # ------------------------------------------------------------------ internals
    def _interrupted(self, group: list[Any]) -> bool:
        """An engine aborted one of its samples (not our own end-of-rollout abort, which comes later)."""
        return not self.state.aborted and any(
            isinstance(m, Sample) and m.status == Sample.Status.ABORTED for m in group)

    def _check_progress(self, group: list[Any]) -> None:
        samples = flatten(group)
        key, tokens = id(samples[0]), sum(s.response_length for s in samples)
        last, idle = self._idle.get(key, (-1, 0))
        idle = idle + 1 if tokens == last else 0
        if idle >= MAX_IDLE_INTERRUPTIONS:
            raise RuntimeError(f"group {samples[0].group_index} was interrupted (finish_reason abort) "
                               f"{MAX_IDLE_INTERRUPTIONS} times in a row without generating a token; is something "
                               f"aborting every request on the engines?")
        self._idle[key] = (tokens, idle)

    def _resubmit(self, group: list[Any]) -> None:
        """Run the group again in this rollout; it was counted in flight already."""
        self.state.submit_generate_tasks([group], rollout_id=self.rollout_id)
        self.state.remaining_batch_size -= 1

    def _count_stale(self, group: list[Any]) -> None:
        samples = flatten(group)
        self.stats.stale += len(samples)
        self.stats.wasted_tokens += sum(s.response_length for s in samples)
