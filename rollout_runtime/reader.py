"""The trainer's side: committed rollout batches, waited for, and the same again after any restart.

    from rollout_runtime.reader import RolloutReader

    reader = RolloutReader("./outputs")                        # a local run (state in ./outputs/.state)
    reader = RolloutReader.from_rolloutjob("arith", "team-a")  # a RolloutJob, with your credentials
    for rollout_id, groups in reader.iter_batches(start=step):  # your checkpoint step is your position
        train_step(groups)                                     # groups: list[list[Sample]]
        save_checkpoint(step=rollout_id + 1)
        reader.ack(rollout_id)                                 # done with it: retention may delete it
    reader.eval_reports()                                      # the committed evals (--eval-interval)

Why it can be trusted:
- **Only committed batches.** A batch file is published before its commit, so a file can exist
  that no commit names (a crash in between, or a stale attempt fenced off). The reader never lists
  the folder: it waits until the state's last commit covers the id and opens exactly the file that
  commit names (`RolloutState.batch_name`).
- **The same bytes every time.** Committed files are never replaced (every writer publishes under
  its own name, create-exclusive; see `rollout_runtime.state.artifacts`), so reading batch k after a
  runtime restart, a trainer restart or both gives identical bytes.
- **Retention never takes an unread batch.** `ack(k)` records that the trainer is done with every
  batch up to k, in a key or file of its own that the runtime reads and never writes; with
  `output.keepLast` the runtime deletes only batches at or below that mark and older than the
  last keepLast. Asking for a deleted batch raises `BatchDeletedError`, which says so.

Ack after the checkpoint that covers the step, not when the batch is read: a trainer that
restarts from an older checkpoint must find its batch again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from rollout_runtime.output import decode_batch, read_bytes
from rollout_runtime.state.artifacts import join_url
from rollout_runtime.state.file_store import JsonFileStateStore
from rollout_runtime.state.locations import default_state_dir
from rollout_runtime.state.models import RolloutState
from rollout_runtime.state.store import CommitView
from rollout_runtime.types import Sample


class BatchUnavailableError(LookupError):
    """No committed batch exists for this rollout id, and none will."""


class BatchDeletedError(BatchUnavailableError):
    """Retention (`output.keepLast`) deleted this batch after the trainer acked it."""


class JobFinishedError(BatchUnavailableError):
    """The job finished before this rollout id."""


class RolloutReader:
    """Committed batches of one job, from its output folder and its committed state."""

    def __init__(self, output_dir: str | os.PathLike[str], *, state: str | os.PathLike[str] | CommitView | None = None,
                 poll_interval: float = 0.05, max_poll_interval: float = 2.0) -> None:
        """`output_dir`: where the batches are (a path or fsspec URL, as the trainer sees it).

        `state`: the job's committed state. For a local run, the folder of its JSON state store
        (`save`, default `{output_dir}/.state`); or any `CommitView`, such as a ConfigMapStateStore
        (`from_rolloutjob` builds that one). Waiting polls it, from `poll_interval` seconds growing
        1.5x per poll up to `max_poll_interval`.
        """
        self.output_dir = str(output_dir).rstrip("/")
        if state is None:
            state = default_state_dir(self.output_dir)
        self.view: CommitView = state if isinstance(state, CommitView) else JsonFileStateStore(_local(str(state)))
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    @classmethod
    def from_rolloutjob(cls, name: str, namespace: str | None = None, *, output_dir: str | None = None,
                        **kwargs: Any) -> RolloutReader:
        """The reader of RolloutJob `name`: its `<job>-state` ConfigMap and its `spec.output.path`.

        Uses the caller's Kubernetes credentials (KUBECONFIG, in-cluster, or ~/.kube/config): get on
        the RolloutJob, get/patch on `<job>-state`. `output_dir` overrides the spec's path, for a
        trainer that mounts the output volume elsewhere. `namespace` defaults as kubectl's does.
        """
        from rollout_runtime import kube
        from rollout_runtime.contract import state_configmap_name
        from rollout_runtime.state.configmap_store import ConfigMapStateStore

        ns = kube.current_namespace(namespace)
        if output_dir is None:
            output_dir = _spec_output_dir(kube.read_rolloutjob(name, ns, rbac_hint=kube.TRAINER_RBAC))
            if not output_dir:
                raise ValueError(f"RolloutJob {ns}/{name} has no spec.output.path (its batches are inside the runtime "
                                 f"pod); set one, or pass output_dir= where this trainer can read them")
        store = ConfigMapStateStore(state_configmap_name(name), ns, blob_dir="", api=kube.core_api())
        return cls(output_dir, state=store, **kwargs)

    # ------------------------------------------------------------------ what is committed
    def committed(self) -> RolloutState | None:
        """The job's last commit (without its buffer), or None before the first."""
        return self.view.read_committed()

    def consumed(self) -> int:
        """The consumption mark: the highest rollout id acked (-1: none)."""
        return self.view.read_consumed()

    def url(self, rollout_id: int, timeout: float | None = None) -> str:
        """Where committed batch `rollout_id` is, waiting up to `timeout` s (None: forever) for its commit."""
        return self._locate(self._wait(rollout_id, timeout), rollout_id)

    def get_bytes(self, rollout_id: int, timeout: float | None = None) -> bytes:
        """The committed batch file's bytes, exactly as published (waits like `get`)."""
        return self._fetch(rollout_id, timeout)[1]

    def get(self, rollout_id: int, timeout: float | None = None) -> list[list[Sample]]:
        """Committed batch `rollout_id` as its groups, in file order; waits until it is committed.

        Raises TimeoutError when `timeout` seconds pass first, BatchDeletedError when retention
        deleted it, JobFinishedError when the job ended before it.
        """
        url, data = self._fetch(rollout_id, timeout)
        return decode_batch(data, "parquet" if url.endswith(".parquet") else "jsonl")

    def iter_batches(self, start: int = 0, stop: int | None = None, *,
                     timeout: float | None = None) -> Iterator[tuple[int, list[list[Sample]]]]:
        """(rollout id, groups) from `start` on, each as soon as it is committed; ends with the job.

        `stop` (exclusive) ends earlier; `timeout` bounds each wait (TimeoutError).
        """
        rollout_id = start
        while stop is None or rollout_id < stop:
            try:
                groups = self.get(rollout_id, timeout)
            except JobFinishedError:
                return
            yield rollout_id, groups
            rollout_id += 1

    __iter__ = iter_batches

    def eval_reports(self) -> list[dict[str, Any]]:
        """The eval reports the last commit names (slime's `--eval-interval`), oldest first: the one
        before rollout 0, then the one after each evaluated rollout. Each has `rollout_id`, `initial`,
        `metrics` (per eval dataset), `extra_metrics` and `samples`.

        Like batches, through the commit: a report that a crashed or stale writer left beside the
        committed one is never returned.
        """
        state = self.view.read_committed()
        if state is None:
            return []
        reports = []
        for key in sorted(state.evals):
            url = join_url(self.output_dir, state.eval_name(key) or "")
            try:
                reports.append(json.loads(read_bytes(url)))
            except FileNotFoundError:
                raise FileNotFoundError(f"committed eval report {url} is missing. Is {self.output_dir} the folder the "
                                        f"runtime writes to, as this trainer sees it?") from None
        return reports

    # ------------------------------------------------------------------ the trainer's position
    def ack(self, rollout_id: int) -> int:
        """Record that the trainer is done with every batch up to `rollout_id`; the mark now stored.

        Call it once the checkpoint that covers this step is saved. The mark only rises. With
        `output.keepLast` set, the runtime may then delete those batches, beyond the last keepLast.
        """
        state = self.view.read_committed()
        last = state.rollout_id if state else -1
        if rollout_id > last:
            raise ValueError(f"cannot ack rollout {rollout_id}: it is not committed yet (last committed: {last})")
        return self.view.ack(rollout_id)

    # ------------------------------------------------------------------ internals
    def _wait(self, rollout_id: int, timeout: float | None) -> RolloutState:
        if rollout_id < 0:
            raise ValueError(f"rollout ids start at 0, got {rollout_id}")
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.poll_interval
        while True:
            state = self.view.read_committed()
            if state is not None and state.rollout_id >= rollout_id:
                return state
            if state is not None and state.finished:
                raise JobFinishedError(f"rollout {rollout_id} will never be committed: the job finished after "
                                       f"rollout {state.rollout_id}")
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                last = state.rollout_id if state else -1
                raise TimeoutError(f"rollout {rollout_id} was not committed within {timeout}s (last committed: "
                                   f"{last}, in {self.view.describe()})")
            time.sleep(delay if deadline is None else min(delay, deadline - now))
            delay = min(delay * 1.5, self.max_poll_interval)

    def _fetch(self, rollout_id: int, timeout: float | None) -> tuple[str, bytes]:
        state = self._wait(rollout_id, timeout)
        url = self._locate(state, rollout_id)
        try:
            return url, read_bytes(url)
        except FileNotFoundError:
            self._locate(self.view.read_committed() or state, rollout_id)  # BatchDeletedError if pruned meanwhile
            raise FileNotFoundError(f"committed batch {rollout_id} is missing: {url} does not exist. Is "
                                    f"{self.output_dir} the folder the runtime writes to, as this trainer sees it "
                                    f"(from_rolloutjob: pass output_dir= where spec.output.path is mounted)?") from None

    def _locate(self, state: RolloutState, rollout_id: int) -> str:
        if rollout_id <= state.pruned_through:
            rule = (f"output.keepLast={state.keep_last} keeps the last {state.keep_last} committed batches"
                    if state.keep_last is not None else "output.keepLast (set earlier in this job) keeps the last N")
            raise BatchDeletedError(
                f"rollout {rollout_id} was deleted by retention: {rule} and deletes older ones once the trainer has "
                f"acked them (acked through {self.view.read_consumed()}; deleted through {state.pruned_through}). "
                f"Ack only after the checkpoint that covers a step, or raise keepLast")
        name = state.batch_name(rollout_id)
        if name is None:
            first = state.writers[0].first_rollout_id if state.writers else None
            raise BatchUnavailableError(f"rollout {rollout_id} has no committed batch (the first committed rollout "
                                        f"is {first})")
        return join_url(self.output_dir, name)


def _local(path: str) -> str:
    """A local folder for the JSON state store; remote URLs cannot hold one."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if "://" in path:
        raise ValueError(f"state {path!r}: a local run's state store is a local folder; for a RolloutJob use "
                         f"RolloutReader.from_rolloutjob, or pass state= a folder or a CommitView")
    return path


def _spec_output_dir(job: dict[str, Any]) -> str | None:
    """`spec.output.path`, spelled as RolloutConfig's metadata spells it (the CRD's one source)."""
    from rollout_runtime.config import section_fields

    section, key = section_fields()["output_dir"]
    return ((job.get("spec") or {}).get(section) or {}).get(key)
