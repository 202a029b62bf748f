"""The decision in progress for one RolloutJob: the plan it produces and the state steps share.

`reconcile/rolloutjob.py` runs its steps over a `JobDecision`; this module holds what they have
in common: the new status (a typed copy of the old one), its conditions, the plan under
construction, and the moves several steps make (fail, wait for the pool, start a Job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from rollout_operator.api.rolloutjob_status import JobConditionType, JobPhase, JobReason, RolloutJobStatus
from rollout_operator.api.rolloutjob_types import RolloutJob, RolloutJobSpec
from rollout_operator.api.sglangpool_status import PoolConditionType, SGLangPoolStatus
from rollout_operator.builders.common import Manifest
from rollout_operator.reconcile.common import Event, to_int
from rollout_operator.reconcile.conditions import ConditionSet
from rollout_operator.reconcile.rolloutjob_observed import JobObserved, job_live
from rollout_operator.settings import OperatorConfig
from rollout_runtime.contract import CommitSummary, WeightWait, format_time, parse_time, state_configmap_name


@dataclass
class JobPlan:
    """What the controller does for one RolloutJob, in this order: ensure, status, fence, create, delete, events."""

    ensure: list[Manifest] = field(default_factory=list)  # state ConfigMap + RBAC
    status: RolloutJobStatus = field(default_factory=RolloutJobStatus)
    fence: int | None = None  # make this attempt the newest allowed ConfigMap writer
    create_job: Manifest | None = None
    delete_jobs: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    delete_self: bool = False
    requeue_after: float | None = None


class JobDecision:
    """The decision so far: the new status, its conditions and the plan, plus facts steps share."""

    def __init__(self, obs: JobObserved, config: OperatorConfig, old: RolloutJobStatus,
                 job: RolloutJob | None) -> None:
        meta = obs.body["metadata"]
        self.obs, self.config, self.job, self.old = obs, config, job, old
        self.name: str = meta["name"]
        self.ns: str = meta["namespace"]
        self.generation: int | None = meta.get("generation")
        self.now = obs.now or datetime.now().astimezone()
        self.phase = old.phase  # the phase this pass started from
        self.current = old.attempt or 0
        self.st = old.model_copy()  # fields are reassigned, never mutated in place
        self.st.observed_generation = self.generation
        self.st.state_config_map = state_configmap_name(self.name)
        self.conds = ConditionSet(old.conditions, self.generation, self.now)
        self.plan = JobPlan()
        # Filled in by the steps.
        self.current_job: dict[str, Any] | None = None
        self.need_new = False  # start a new attempt (first start, resume, retry)
        self.retry_note = ""
        self.url: str | None = None
        self.pool_reason = JobReason.POOL_NOT_FOUND
        self.pool_message = ""
        self.wait: WeightWait | None = None  # the current attempt's wait for newer weights, if it waits now
        self.refusal: str | None = None  # why the installation's pod policy refuses the job (None: allowed)

    @property
    def spec(self) -> RolloutJobSpec:
        assert self.job is not None, "steps run only on a spec that parses"
        return self.job.spec

    @property
    def commit(self) -> CommitSummary | None:
        return self.obs.commit

    # -- building the plan ----------------------------------------------------------------

    def set_phase(self, phase: JobPhase, reason: JobReason, message: str) -> None:
        self.st.phase, self.st.reason, self.st.message = phase, reason, message

    def event(self, type_: Literal["Normal", "Warning"], reason: JobReason, message: str) -> None:
        self.plan.events.append(Event(type_, reason, message))

    def stop_live_jobs(self) -> None:
        self.plan.delete_jobs = sorted(j["metadata"]["name"] for j in self.obs.jobs.values() if job_live(j))

    def fail(self, reason: JobReason, message: str) -> JobPlan:
        changed = self.old.phase != JobPhase.FAILED or self.old.reason != reason
        self.set_phase(JobPhase.FAILED, reason, message)
        if changed or self.st.completion_time is None:
            self.st.completion_time = format_time(self.now)
        self.st.job_name = None
        self.conds.set(JobConditionType.FAILED, True, reason, message)
        self.conds.set(JobConditionType.RUNNING, False, reason, message)
        self.stop_live_jobs()
        if changed or self.old.message != message:
            self.event("Warning", reason, message)
        self.ttl()
        return self.done()

    def ttl(self) -> None:
        """Delete the finished RolloutJob after spec.ttlSecondsAfterFinished (or requeue until then)."""
        if self.job is not None:
            ttl = self.spec.ttl_seconds_after_finished
        else:  # the spec does not parse: read the one field as stored
            ttl = to_int((self.obs.body.get("spec") or {}).get("ttlSecondsAfterFinished"))
        finished_at = parse_time(self.st.completion_time)
        if ttl is None or finished_at is None:
            return
        due = finished_at + timedelta(seconds=int(ttl))
        if self.now >= due:
            self.plan.delete_self = True
        else:
            self.plan.requeue_after = (due - self.now).total_seconds()

    def done(self) -> JobPlan:
        waiting = self.conds.get(JobConditionType.WAITING_FOR_WEIGHTS)
        if waiting is not None and waiting.status == "True" and self.st.waiting_for_weight_version is None:
            self.conds.set(JobConditionType.WAITING_FOR_WEIGHTS, False, self.st.reason or JobReason.WEIGHTS_CURRENT,
                           self.st.message or "the runtime is not waiting")
        self.st.conditions = self.conds.as_list()
        self.plan.status = self.st
        return self.plan

    def waiting_for_pool(self, keep_job: bool = False) -> JobPlan:
        """No engine to start against. `keep_job`: the current attempt's Job was created already
        (jobName stays, so that no later pass takes the attempt for never started)."""
        if self.phase != JobPhase.WAITING_FOR_POOL:
            missing = self.pool_reason == JobReason.POOL_NOT_FOUND
            self.event("Warning" if missing else "Normal", JobReason.WAITING_FOR_POOL, self.pool_message)
        self.set_phase(JobPhase.WAITING_FOR_POOL, self.pool_reason, self.pool_message)
        if not keep_job:
            self.st.job_name = None
        self.conds.set(JobConditionType.RUNNING, False, JobReason.WAITING_FOR_POOL, self.pool_message)
        return self.done()

    def starting(self, job_name: str) -> None:
        message = self.obs.pending_message(job_name)
        self.set_phase(JobPhase.PENDING, JobReason.JOB_CREATED, message)
        self.conds.set(JobConditionType.RUNNING, False, JobReason.STARTING, message)

    def rollouts_so_far(self) -> str:
        return f"{self.st.num_rollouts if self.st.num_rollouts is not None else '?'}"


def mirror_commit(st: RolloutJobStatus, commit: CommitSummary | None) -> None:
    """Copy the runtime's last commit into status (CommitSummary and status share field names)."""
    if commit is None:
        return
    if commit.rollout_id >= 0:
        st.rollout_id = commit.rollout_id
    if commit.num_rollouts is not None:
        st.num_rollouts = commit.num_rollouts
    st.completed, st.aborted, st.filtered = commit.completed, commit.aborted, commit.filtered
    if commit.last_commit_time:
        st.last_commit_time = commit.last_commit_time
    st.stale = commit.stale
    if commit.weight_version_min is not None:
        st.weight_version_min, st.weight_version_max = commit.weight_version_min, commit.weight_version_max


def mirror_wait(st: RolloutJobStatus, wait: WeightWait | None, attempt: int) -> WeightWait | None:
    """Copy the runtime's weight wait into status; the wait itself when the current attempt is waiting now.

    `waitingForWeightVersion` is cleared here and set again only by a Running attempt (a wait reported by
    an attempt that has since failed or been replaced is history, not state).
    """
    st.waiting_for_weight_version = None
    if wait is None:
        return None
    if wait.served is not None:
        st.served_weight_version = wait.served
    if wait.waiting_for is None or (wait.attempt is not None and wait.attempt != attempt):
        return None
    return wait


def resolve_endpoint(spec: RolloutJobSpec, pool: dict[str, Any] | None, namespace: str
                     ) -> tuple[str | None, JobReason, str]:
    """(url or None, reason, message) for the engine this job should use."""
    if spec.endpoint:
        return spec.endpoint, JobReason.EXTERNAL_ENDPOINT, f"using endpoint {spec.endpoint}"
    assert spec.pool_ref is not None
    name = spec.pool_ref.name
    if pool is None:
        return None, JobReason.POOL_NOT_FOUND, f"SGLangPool {name} not found in namespace {namespace}"
    status = SGLangPoolStatus.model_validate(pool.get("status") or {})
    ready = next((c for c in status.conditions or [] if c.type == PoolConditionType.READY), None)
    if ready is None or ready.status != "True" or not status.endpoint:
        detail = (ready.message if ready else None) or "no status yet"
        return None, JobReason.POOL_NOT_READY, f"SGLangPool {name} is not Ready: {detail}"
    return status.endpoint, JobReason.POOL_READY, f"SGLangPool {name} is Ready at {status.endpoint}"


def deadline_seconds(spec: RolloutJobSpec, started: datetime | None, now: datetime) -> int | None:
    """What is left of spec.activeDeadlineSeconds, for the Job (it enforces it if the operator is down)."""
    if not spec.active_deadline_seconds:
        return None
    if started is None:
        return spec.active_deadline_seconds
    return max(1, int(spec.active_deadline_seconds - (now - started).total_seconds()))
