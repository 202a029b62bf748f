"""Where a RolloutJob's phase is decided: a pure function of what the operator observed.

    Pending ──> Running ──> Succeeded          (the runtime committed `finished`)
      │  ^         │
      │  └─────────┤ attempt failed, retries left: new Job <name>-<attempt+1>, resumes from the commit
      │            └──> Failed                 (backoffLimit exceeded, deadline, config error)
      └──> WaitingForPool (poolRef not found / not Ready)
    any ──> Suspended (spec.suspend) ──> Pending (new attempt, resumes from the commit)

`decide_job` runs the steps in `STEPS` in order, KubeRay style: each step reads the observation
and the decision so far, and either returns the plan (the decision is made) or None (go on).
The phases, condition types and reasons are the enums of `api/rolloutjob_status.py`; this module
is the only place that sets them (the controller only reports what it saw, e.g. a rejected Job).

Rules that make it safe to re-run at any time, from any (possibly stale) observation:
- identity first: the new attempt number is written to status (with the object's
  resourceVersion as a precondition) before its Job is created, and Job names are
  deterministic, so a repeated decision creates the same Job (409) rather than a second one;
- decisions need positive evidence: a new attempt starts only when the current Job is seen
  Failed (or was deliberately stopped by suspend), never merely because a Job is missing
  from the cache; a created attempt keeps its jobName while the pool is not Ready (its Job
  is re-created by name against status.endpoint), so a pool that flaps before the watch
  delivers the Job cannot make the attempt look abandoned;
- success is read from the runtime's own commit (`finished` in the state ConfigMap), not from
  the pod's exit code.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError
from rollout_operator.api.common import validation_message
from rollout_operator.api.rolloutjob_status import (
    RECOVERABLE_REASONS,
    TERMINAL_PHASES,
    JobConditionType,
    JobPhase,
    JobReason,
    RolloutJobStatus,
)
from rollout_operator.api.rolloutjob_types import RolloutJob
from rollout_operator.builders import rolloutjob as build
from rollout_operator.builders.field_routes import batch_job_routes
from rollout_operator.reconcile.common import deleting, to_int
from rollout_operator.reconcile.rolloutjob_decision import (
    JobDecision,
    JobPlan,
    deadline_seconds,
    mirror_commit,
    mirror_wait,
    resolve_endpoint,
)
from rollout_operator.reconcile.rolloutjob_observed import (
    BATCH_DEADLINE_EXCEEDED,
    BATCH_POD_FAILURE_POLICY,
    JobObserved,
    committed_finished,
    job_complete,
    job_failed,
    job_finished,
)
from rollout_operator.reconcile.policy import job_refusal
from rollout_operator.reconcile.rejection import explain
from rollout_operator.reconcile.spec_validation import validate_spec
from rollout_operator.settings import OperatorConfig
from rollout_runtime.contract import format_time, parse_time

#: One step of the decision: the plan when this step decides, None to go on to the next.
Step = Callable[[JobDecision], JobPlan | None]


# ------------------------------------------------------------------------------- the steps


def finished(d: JobDecision) -> JobPlan | None:
    """Succeeded and Failed are final, except a spec failure once the spec has changed, and a policy
    refusal once the policy allows the spec (an administrator widened it and restarted the operator)."""
    recoverable = d.phase == JobPhase.FAILED and (
        (d.old.reason in RECOVERABLE_REASONS and d.old.observed_generation != d.generation)
        or (d.old.reason == JobReason.NOT_ALLOWED and d.job is not None and d.refusal is None))
    if d.phase not in TERMINAL_PHASES or recoverable:
        return None
    if d.phase == JobPhase.FAILED:
        d.stop_live_jobs()
    d.ttl()
    return d.done()


def not_allowed(d: JobDecision) -> JobPlan | None:
    """The installation's pod policy (ServiceAccount, volume types, image): refused before anything is created."""
    if d.refusal:
        d.conds.set(JobConditionType.ADMITTED, False, JobReason.NOT_ALLOWED, d.refusal)
        return d.fail(JobReason.NOT_ALLOWED, d.refusal)
    d.conds.set(JobConditionType.ADMITTED, True, JobReason.ALLOWED, "the pod policy allows the runtime pod")
    return None


def invalid_spec(d: JobDecision) -> JobPlan | None:
    """What the schema cannot check: fail now, naming the field, rather than in the runtime pod."""
    problem = validate_spec(d.job.raw_spec if d.job else {})
    if problem:
        d.conds.set(JobConditionType.CONFIG_VALID, False, JobReason.INVALID_SPEC, problem)
        return d.fail(JobReason.INVALID_SPEC, problem)
    d.conds.set(JobConditionType.CONFIG_VALID, True, JobReason.VALID, "the spec builds a valid runtime configuration")
    if d.phase == JobPhase.FAILED:  # failed on a spec problem, and the spec changed since: try again
        d.conds.remove(JobConditionType.FAILED)
        d.st.completion_time = None
        d.event("Normal", JobReason.SPEC_FIXED, "the spec is valid again; continuing")
    return None


def rejected(d: JobDecision) -> JobPlan | None:
    """The API server refused this generation's runtime Job (pod settings, quota, policy)."""
    rejection = d.obs.rejection
    if rejection is None or rejection.generation != d.generation:
        return None
    assert d.job is not None
    child = build.batch_job(d.job, max(d.current, 1), d.old.endpoint or "", d.config)
    detail = explain(rejection, batch_job_routes(d.job, child))
    return d.fail(JobReason.JOB_REJECTED, f"the API server rejected the runtime Job: {detail}")


def succeeded(d: JobDecision) -> JobPlan | None:
    """The runtime committed its last rollout."""
    if not committed_finished(d.commit):
        return None
    st = d.st
    message = (f"generated {d.rollouts_so_far()} rollouts: {st.completed or 0} samples completed, "
               f"{st.aborted or 0} aborted, {st.filtered or 0} filtered")
    if d.phase != JobPhase.SUCCEEDED:
        st.completion_time = format_time(d.now)
        d.event("Normal", JobReason.SUCCEEDED, message)
    d.set_phase(JobPhase.SUCCEEDED, JobReason.COMPLETED, message)
    d.conds.set(JobConditionType.COMPLETE, True, JobReason.COMPLETED, message)
    d.conds.set(JobConditionType.RUNNING, False, JobReason.COMPLETED, message)
    d.ttl()
    return d.done()


def suspended(d: JobDecision) -> JobPlan | None:
    """spec.suspend: stop the runtime, keep the committed state (Suspending until the Job is gone)."""
    if not d.spec.suspend:
        if d.conds.get(JobConditionType.SUSPENDED) is not None:
            d.conds.set(JobConditionType.SUSPENDED, False, JobReason.RESUMED, "spec.suspend is false")
        return None
    live = [j for j in d.obs.jobs.values() if not job_finished(j)]
    d.stop_live_jobs()
    d.st.job_name = None
    if live:
        names = ", ".join(sorted(j["metadata"]["name"] for j in live))
        d.conds.set(JobConditionType.SUSPENDED, False, JobReason.SUSPENDING, f"waiting for Job {names} to terminate")
        d.set_phase(JobPhase.SUSPENDED, JobReason.SUSPENDING, f"stopping Job {names}; the committed state is kept")
    else:
        d.conds.set(JobConditionType.SUSPENDED, True, JobReason.SUSPENDED,
                    f"no runtime pod; state kept in ConfigMap {d.st.state_config_map}")
        after = d.st.rollout_id if d.st.rollout_id is not None else "none"
        d.set_phase(JobPhase.SUSPENDED, JobReason.SUSPENDED, f"suspended after rollout {after}; set spec.suspend=false "
                                                       f"to resume from the last commit")
    d.conds.set(JobConditionType.RUNNING, False, JobReason.SUSPENDED, "spec.suspend is true")
    if d.phase != JobPhase.SUSPENDED:
        d.event("Normal", JobReason.SUSPENDED,
                "spec.suspend is true: stopping the runtime, keeping the committed state")
    return d.done()


def failed_attempt(d: JobDecision) -> JobPlan | None:
    """The current attempt failed (or exited 0 without finishing): fail the job or mark it for a retry."""
    old, spec, current = d.old, d.spec, d.current
    job = d.obs.jobs.get(current) if current else None
    d.current_job = job
    d.need_new = current == 0 or (job is None and not old.job_name)
    if job is None or not (job_failed(job) or (job_complete(job) and not committed_finished(d.commit))):
        return None
    if job_failed(job):
        reason, detail = d.obs.failure_detail(job)
    else:
        reason, detail = "ExitedEarly", "the runtime exited 0 before committing its last rollout"
    if reason == BATCH_DEADLINE_EXCEEDED:
        return d.fail(JobReason.DEADLINE_EXCEEDED, f"spec.activeDeadlineSeconds exceeded during attempt {current}")
    if reason == BATCH_POD_FAILURE_POLICY:
        return d.fail(JobReason.CONFIG_ERROR, f"attempt {current}: the runtime rejected its configuration ({detail}); "
                                           f"fix the spec (not retried)")
    failed = old.failed or 0
    if old.job_name == job["metadata"]["name"]:
        # Count each failed attempt once: clearing jobName marks this failure as counted
        # (the status patch carries a resourceVersion precondition).
        failed += 1
        d.st.failed = failed
        d.st.job_name = None
        if failed > spec.backoff_limit:
            return d.fail(JobReason.BACKOFF_LIMIT_EXCEEDED, f"attempt {current} failed ({detail}); {failed} failed "
                                                         f"attempts exceed spec.backoffLimit={spec.backoff_limit}")
        d.event("Warning", JobReason.ATTEMPT_FAILED,
                f"attempt {current} (Job {job['metadata']['name']}) failed: {detail}")
    d.retry_note = f"retry {failed}/{spec.backoff_limit} after: {detail}"
    d.need_new = True
    return None


def engine(d: JobDecision) -> JobPlan | None:
    """Which engine the runtime talks to (PoolReady); never decides on its own."""
    d.url, d.pool_reason, d.pool_message = resolve_endpoint(d.spec, d.obs.pool, d.ns)
    became = d.conds.set(JobConditionType.POOL_READY, d.url is not None, d.pool_reason, d.pool_message)
    if became and d.url is None and d.phase not in (None, JobPhase.PENDING, JobPhase.WAITING_FOR_POOL):
        d.event("Warning", d.pool_reason, d.pool_message)
    return None


def deadline(d: JobDecision) -> JobPlan | None:
    """spec.activeDeadlineSeconds, counted from status.startTime (the clock restarts on resume)."""
    started = parse_time(d.old.start_time)
    limit = d.spec.active_deadline_seconds
    if not limit or not started or (d.need_new and d.phase == JobPhase.SUSPENDED):
        return None
    remaining = limit - (d.now - started).total_seconds()
    if remaining <= 0:
        return d.fail(JobReason.DEADLINE_EXCEEDED, f"running for more than spec.activeDeadlineSeconds={limit}s")
    d.plan.requeue_after = remaining
    return None


def current_attempt(d: JobDecision) -> JobPlan | None:
    """Keep the current attempt going: (re)create its Job, or report Pending / Running."""
    if d.need_new:
        return None
    job, current, st = d.current_job, d.current, d.st
    job_name = build.batch_job_name(d.name, current)
    if job is None:
        # Created before (status says so) but not in the cache: create it again. A 409 means
        # it exists and the cache was late; the name makes it idempotent. Against the endpoint
        # the attempt was started with when the pool is not Ready right now: a missing Job is no
        # evidence that the attempt ended, and a pool that flaps (its router Deployment rolling)
        # must not make this attempt look abandoned (clearing jobName would start attempt N+1
        # beside a still-running N once the pool is back).
        url = d.url or d.old.endpoint
        if url is None:
            return d.waiting_for_pool(keep_job=True)
        assert d.job is not None
        d.st.job_name = job_name
        d.plan.fence = current
        d.plan.create_job = build.batch_job(d.job, current, url, d.config,
                                            deadline_seconds(d.spec, parse_time(d.old.start_time), d.now))
        d.starting(job_name)
        return d.done()
    if deleting(job):
        d.set_phase(JobPhase.PENDING, JobReason.JOB_TERMINATING, f"Job {job_name} is being deleted")
        d.conds.set(JobConditionType.RUNNING, False, JobReason.JOB_TERMINATING, f"Job {job_name} is being deleted")
        return d.done()
    st.job_name = job_name
    commit = d.commit
    committing = commit is not None and commit.attempt == current and commit.rollout_id >= 0
    ready = to_int((job.get("status") or {}).get("ready"), 0) or 0
    if ready >= 1 or committing:
        message = f"attempt {current}: Job {job_name} running"
        if st.rollout_id is not None:
            message += f", rollout {st.rollout_id}/{d.rollouts_so_far()} committed"
        if d.phase != JobPhase.RUNNING:
            d.event("Normal", JobReason.RUNNING, f"attempt {current}: the runtime is running (Job {job_name})")
        d.set_phase(JobPhase.RUNNING, JobReason.RUNNING, message)
        d.conds.set(JobConditionType.RUNNING, True, JobReason.RUNNING, f"attempt {current}: Job {job_name}")
        report_weight_wait(d)
    else:
        d.starting(job_name)
    return d.done()


def report_weight_wait(d: JobDecision) -> None:
    """Running, and the runtime waits for newer weights (spec.rollout.maxStaleness): say so, and for which."""
    wait = d.wait
    if wait is None or wait.waiting_for is None:
        if d.spec.rollout.max_staleness is not None or d.conds.get(JobConditionType.WAITING_FOR_WEIGHTS):
            d.conds.set(JobConditionType.WAITING_FOR_WEIGHTS, False, JobReason.WEIGHTS_CURRENT,
                        f"the served weights admit the next rollout (maxStaleness {d.spec.rollout.max_staleness})")
        return
    served = "unknown" if wait.served is None else str(wait.served)
    message = (f"attempt {d.current}: rollout {wait.rollout_id} waits for weight version {wait.waiting_for} "
               f"(served: {served}; spec.rollout.maxStaleness {d.spec.rollout.max_staleness})")
    d.st.waiting_for_weight_version = wait.waiting_for
    d.set_phase(JobPhase.RUNNING, JobReason.WAITING_FOR_WEIGHTS, message)
    d.conds.set(JobConditionType.WAITING_FOR_WEIGHTS, True, JobReason.WAITING_FOR_WEIGHTS, message)


def new_attempt(d: JobDecision) -> JobPlan | None:
    """Start attempt N+1: the first start, a resume after suspend, or a retry."""
    if d.url is None:
        return d.waiting_for_pool()
    assert d.job is not None
    st, new = d.st, d.current + 1
    job_name = build.batch_job_name(d.name, new)
    st.attempt, st.job_name, st.endpoint = new, job_name, d.url
    resumed = d.phase == JobPhase.SUSPENDED
    if not d.old.start_time or resumed:
        st.start_time = format_time(d.now)  # like batch Jobs: the deadline restarts on resume
    d.plan.fence = new
    d.plan.create_job = build.batch_job(d.job, new, d.url, d.config,
                                        deadline_seconds(d.spec, parse_time(st.start_time), d.now))
    after = f"after rollout {st.rollout_id}" if st.rollout_id is not None else "from the start"
    if d.retry_note:
        d.event("Normal", JobReason.RETRYING,
                f"attempt {new}: created Job {job_name}, resuming {after} ({d.retry_note})")
    elif resumed:
        d.event("Normal", JobReason.RESUMED, f"attempt {new}: created Job {job_name}, resuming {after}")
    else:
        d.event("Normal", JobReason.STARTED, f"attempt {new}: created Job {job_name} against {d.url}")
    d.starting(job_name)
    d.conds.remove(JobConditionType.COMPLETE)
    return d.done()


#: The decision, in order. The first step that returns a plan decides.
STEPS: tuple[Step, ...] = (finished, not_allowed, invalid_spec, rejected, succeeded, suspended, failed_attempt, engine,
                           deadline, current_attempt, new_attempt)

def decide_job(obs: JobObserved, config: OperatorConfig) -> JobPlan:
    """The whole RolloutJob reconcile decision (see the module docstring). Parses the object once."""
    try:
        job = RolloutJob.from_body(obs.body)
    except ValidationError as exc:
        old = RolloutJobStatus.model_validate(obs.body.get("status") or {})
        message = f"invalid spec: {validation_message(exc)}"
        return JobDecision(obs, config, old, None).fail(JobReason.INVALID_SPEC, message)
    d = JobDecision(obs, config, job.status, job)
    d.refusal = job_refusal(job, config.policy)
    # Every pass: the children that exist for the job's whole life, and the runtime's last commit.
    # The state ConfigMap is created with the attempt about to start as its fencing token. Nothing
    # for a job the pod policy refuses (above all no RoleBinding to a ServiceAccount it may not use).
    first_attempt_now = d.current == 0 and not job.spec.suspend
    if d.refusal is None:
        d.plan.ensure = [build.state_configmap(job, fence=1 if first_attempt_now else d.current),
                         *build.rbac_children(job)]
    mirror_commit(d.st, d.commit)
    d.wait = mirror_wait(d.st, d.obs.wait, d.current)
    for step in STEPS:
        plan = step(d)
        if plan is not None:
            return plan
    raise AssertionError("new_attempt always decides")
