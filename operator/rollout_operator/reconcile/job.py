"""RolloutJob: the state machine, as a pure function of what the operator observed.

    Pending ──> Running ──> Succeeded          (the runtime committed `finished`)
      │  ^         │
      │  └─────────┤ attempt failed, retries left: new Job <name>-<attempt+1>, resumes from the commit
      │            └──> Failed                 (backoffLimit exceeded, deadline, config error)
      └──> WaitingForPool (poolRef not found / not Ready)
    any ──> Suspended (spec.suspend) ──> Pending (new attempt, resumes from the commit)

Rules that make it safe to re-run at any time, from any (possibly stale) observation:
- identity first: the new attempt number is written to status (with the object's
  resourceVersion as a precondition) before its Job is created, and Job names are
  deterministic, so a repeated decision creates the same Job (409) rather than a second one;
- decisions need positive evidence: a new attempt starts only when the current Job is seen
  Failed (or was deliberately stopped by suspend), never merely because a Job is missing
  from the cache;
- success is read from the runtime's own commit (`finished` in the state ConfigMap), not from
  the pod's exit code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from rollout_operator.api.rolloutjob_types import RUNTIME_SECTIONS, TERMINAL_PHASES, RolloutJobSpec
from rollout_operator.builders import job as build
from rollout_operator.builders.common import Manifest
from rollout_operator.conditions import ConditionSet, parse_time, rfc3339
from rollout_operator.constants import LABEL_ATTEMPT, RUNTIME_CONTAINER
from rollout_operator.reconcile.common import Event, condition, condition_true, deleting, to_int
from rollout_operator.reconcile.pods import summarize, termination_message
from rollout_operator.settings import OperatorConfig

from rollout_runtime.config import ConfigError, RolloutConfig, is_dotted_path, parse_cli_flags, section_fields

# Condition types.
CONFIG_VALID = "ConfigValid"
POOL_READY = "PoolReady"
RUNNING = "Running"
SUSPENDED = "Suspended"
COMPLETE = "Complete"
FAILED = "Failed"

# Failures caused by the spec; re-evaluated when the spec changes (metadata.generation).
RECOVERABLE = ("InvalidSpec", "JobRejected")


@dataclass
class JobObserved:
    body: dict[str, Any]
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)  # attempt -> batch Job
    state: dict[str, Any] | None = None  # the state ConfigMap
    pool: dict[str, Any] | None = None  # the SGLangPool named by poolRef (None: not found)
    pods: list[dict[str, Any]] = field(default_factory=list)  # runtime pods of this RolloutJob
    now: datetime | None = None


@dataclass
class JobPlan:
    ensure: list[Manifest] = field(default_factory=list)  # state ConfigMap + RBAC
    fence: int | None = None  # make this attempt the newest allowed ConfigMap writer
    create_job: Manifest | None = None
    delete_jobs: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    delete_self: bool = False
    requeue_after: float | None = None


# ------------------------------------------------------------------------ observations


def job_attempt(job: dict[str, Any]) -> int | None:
    return to_int(((job.get("metadata") or {}).get("labels") or {}).get(LABEL_ATTEMPT))


def job_failed(job: dict[str, Any] | None) -> bool:
    return condition_true(job, "Failed")


def job_complete(job: dict[str, Any] | None) -> bool:
    return condition_true(job, "Complete")


def job_finished(job: dict[str, Any] | None) -> bool:
    return job_failed(job) or job_complete(job)


def state_data(state: dict[str, Any] | None) -> dict[str, str]:
    return (state or {}).get("data") or {}


def state_finished(state: dict[str, Any] | None) -> bool:
    return state_data(state).get("finished") == "true"


def mirror_state(st: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Copy the runtime's last commit (flat ConfigMap keys) into status."""
    data = state_data(state)
    if not data:
        return
    for key in ("rolloutId", "numRollouts", "completed", "aborted", "filtered"):
        value = to_int(data.get(key))
        if value is not None and not (key == "rolloutId" and value < 0):
            st[key] = value
    if data.get("lastCommitTime"):
        st["lastCommitTime"] = data["lastCommitTime"]


# -------------------------------------------------------------------------- validation

_FIELD_PATHS = {name: f"spec.{sec}.{key}" for name, (sec, key) in section_fields().items()}
_NAME_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _FIELD_PATHS), key=len, reverse=True)) + r")\b")


def spec_paths(message: str) -> str:
    """Rewrite RolloutConfig field names in a message as the spec fields a user edits."""
    return _NAME_RE.sub(lambda m: _FIELD_PATHS[m.group(1)], message)


def validate_spec(spec: dict[str, Any]) -> str | None:
    """What the schema cannot check: RolloutConfig's own rules, plugin paths, extra flags.

    Returns a message naming the offending field, or None when the spec can run.
    """
    sections = {k: v for k, v in spec.items() if k in RUNTIME_SECTIONS and v is not None}
    engine = spec.get("engine") or {}
    overrides = {name: engine[key] for name, (sec, key) in section_fields().items() if sec == "engine" and key in engine}
    overrides["sglang_router_url"] = "http://validation.invalid"
    for name, (sec, key) in section_fields().items():
        value = (sections.get(sec) or {}).get(key)
        if name.endswith("_path") and isinstance(value, str) and not is_dotted_path(value):
            return f"spec.{sec}.{key}: {value!r} is not a dotted Python path like my_pkg.my_module.my_function"
    try:
        RolloutConfig.from_sections(sections, **overrides)
    except ConfigError as exc:
        return spec_paths(str(exc))
    extra = ((spec.get("runtime") or {}).get("extraArgs")) or []
    if extra:
        try:
            parse_cli_flags([str(a) for a in extra])
        except ConfigError as exc:
            return f"spec.runtime.extraArgs: {exc}"
    return None


# ---------------------------------------------------------------------------- decision


def resolve_endpoint(spec: RolloutJobSpec, pool: dict[str, Any] | None, namespace: str
                     ) -> tuple[str | None, str, str]:
    """(url or None, reason, message) for the engine this job should use."""
    if spec.endpoint:
        return spec.endpoint, "ExternalEndpoint", f"using endpoint {spec.endpoint}"
    assert spec.pool_ref is not None
    name = spec.pool_ref.name
    if pool is None:
        return None, "PoolNotFound", f"SGLangPool {name} not found in namespace {namespace}"
    ready = condition(pool, "Ready")
    endpoint = (pool.get("status") or {}).get("endpoint")
    if not ready or ready.get("status") != "True" or not endpoint:
        detail = (ready or {}).get("message") or "no status yet"
        return None, "PoolNotReady", f"SGLangPool {name} is not Ready: {detail}"
    return endpoint, "PoolReady", f"SGLangPool {name} is Ready at {endpoint}"


class _Decision:
    """Accumulates the new status, conditions and plan for one reconcile."""

    def __init__(self, obs: JobObserved) -> None:
        self.obs = obs
        self.body = obs.body
        meta = self.body["metadata"]
        self.name: str = meta["name"]
        self.ns: str = meta["namespace"]
        self.now = obs.now or datetime.now().astimezone()
        self.old: dict[str, Any] = dict(self.body.get("status") or {})
        self.st: dict[str, Any] = dict(self.old)
        self.conds = ConditionSet(self.old.get("conditions"), meta.get("generation"), self.now)
        self.plan = JobPlan()
        self.st["observedGeneration"] = meta.get("generation")
        self.st["stateConfigMap"] = build.state_name(self.name)

    # -- helpers -------------------------------------------------------------------------

    def phase(self, phase: str, reason: str, message: str) -> None:
        self.st["phase"], self.st["reason"], self.st["message"] = phase, reason, message

    def event(self, type_: str, reason: str, message: str) -> None:
        self.plan.events.append(Event(type_, reason, message))  # type: ignore[arg-type]

    def live_jobs(self) -> list[dict[str, Any]]:
        return [j for j in self.obs.jobs.values() if not job_finished(j) and not deleting(j)]

    def stop_live_jobs(self) -> None:
        self.plan.delete_jobs = sorted(j["metadata"]["name"] for j in self.live_jobs())

    def fail(self, reason: str, message: str) -> JobPlan:
        changed = self.old.get("phase") != "Failed" or self.old.get("reason") != reason
        self.phase("Failed", reason, message)
        self.st.setdefault("completionTime", rfc3339(self.now))
        if changed:
            self.st["completionTime"] = rfc3339(self.now)
        self.st.pop("jobName", None)
        self.conds.set(FAILED, True, reason, message)
        self.conds.set(RUNNING, False, reason, message)
        self.stop_live_jobs()
        if changed or self.old.get("message") != message:
            self.event("Warning", reason, message)
        self.ttl()
        return self.done()

    def ttl(self) -> None:
        ttl = (self.body.get("spec") or {}).get("ttlSecondsAfterFinished")
        finished_at = parse_time(self.st.get("completionTime"))
        if ttl is None or finished_at is None:
            return
        due = finished_at + timedelta(seconds=int(ttl))
        if self.now >= due:
            self.plan.delete_self = True
        else:
            self.plan.requeue_after = (due - self.now).total_seconds()

    def done(self) -> JobPlan:
        self.st["conditions"] = self.conds.as_list()
        self.plan.status = {k: v for k, v in self.st.items() if v is not None}
        return self.plan

    def failure_detail(self, job: dict[str, Any]) -> tuple[str, str]:
        """(Job failure reason, the most specific message available) for a failed attempt."""
        cond = condition(job, "Failed") or {}
        reason = cond.get("reason") or "Failed"
        job_name = job["metadata"]["name"]
        for pod in self.obs.pods:
            if ((pod.get("metadata") or {}).get("labels") or {}).get("job-name") == job_name:
                code, message = termination_message(pod, RUNTIME_CONTAINER)
                if code is not None:
                    return reason, f"exit code {code}" + (f": {message}" if message else "")
        return reason, cond.get("message") or reason

    def pending_message(self, job_name: str) -> str:
        pods = [p for p in self.obs.pods
                if ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == job_name]
        problem = summarize(pods)
        return f"Job {job_name} created; waiting for the runtime pod" + (f" ({problem})" if problem else "")


def decide_job(obs: JobObserved, config: OperatorConfig) -> JobPlan:
    """The whole RolloutJob reconcile decision (see the module docstring)."""
    d = _Decision(obs)
    body, old, st, conds = d.body, d.old, d.st, d.conds

    try:
        spec = build.parse(body).spec
    except ValidationError as exc:
        return d.fail("InvalidSpec", f"spec does not parse: {exc}")

    current = to_int(old.get("attempt"), 0) or 0
    # The state ConfigMap is created with the attempt about to start as its fencing token.
    first_attempt_now = current == 0 and not spec.suspend
    d.plan.ensure = [build.state_configmap(body, fence=1 if first_attempt_now else current)]
    d.plan.ensure += build.rbac_children(body)
    mirror_state(st, obs.state)

    phase = old.get("phase")
    generation = body["metadata"].get("generation")
    recoverable = (phase == "Failed" and old.get("reason") in RECOVERABLE
                   and old.get("observedGeneration") != generation)
    if phase in TERMINAL_PHASES and not recoverable:
        if phase == "Failed":
            d.stop_live_jobs()
        d.ttl()
        return d.done()

    # -- what the schema cannot check ---------------------------------------------------
    problem = validate_spec(body.get("spec") or {})
    if problem:
        conds.set(CONFIG_VALID, False, "InvalidSpec", problem)
        return d.fail("InvalidSpec", problem)
    conds.set(CONFIG_VALID, True, "Valid", "the spec builds a valid runtime configuration")
    if phase == "Failed":  # failed on a spec problem, and the spec changed since: try again
        conds.remove(FAILED)
        st.pop("completionTime", None)
        d.event("Normal", "SpecFixed", "the spec is valid again; continuing")

    # -- success: the runtime committed its last rollout -----------------------------------
    if state_finished(obs.state):
        message = (f"generated {st.get('numRollouts', '?')} rollouts: {st.get('completed', 0)} samples completed, "
                   f"{st.get('aborted', 0)} aborted, {st.get('filtered', 0)} filtered")
        if phase != "Succeeded":
            st["completionTime"] = rfc3339(d.now)
            d.event("Normal", "Succeeded", message)
        d.phase("Succeeded", "Completed", message)
        conds.set(COMPLETE, True, "Completed", message)
        conds.set(RUNNING, False, "Completed", message)
        d.ttl()
        return d.done()

    # -- suspend: stop the runtime, keep the state ------------------------------------------
    live = [j for j in obs.jobs.values() if not job_finished(j)]
    if spec.suspend:
        d.stop_live_jobs()
        st.pop("jobName", None)
        if live:
            names = ", ".join(sorted(j["metadata"]["name"] for j in live))
            conds.set(SUSPENDED, False, "Suspending", f"waiting for Job {names} to terminate")
            d.phase("Suspended", "Suspending", f"stopping Job {names}; the committed state is kept")
        else:
            conds.set(SUSPENDED, True, "Suspended", f"no runtime pod; state kept in ConfigMap {st['stateConfigMap']}")
            d.phase("Suspended", "Suspended", f"suspended after rollout {st.get('rolloutId', 'none')}; set "
                                              f"spec.suspend=false to resume from the last commit")
        conds.set(RUNNING, False, "Suspended", "spec.suspend is true")
        if phase != "Suspended":
            d.event("Normal", "Suspended", "spec.suspend is true: stopping the runtime, keeping the committed state")
        return d.done()
    if conds.get(SUSPENDED) is not None:
        conds.set(SUSPENDED, False, "Resumed", "spec.suspend is false")

    # -- the current attempt ----------------------------------------------------------------
    job = obs.jobs.get(current) if current else None
    need_new = current == 0 or (job is None and not old.get("jobName"))
    retry_note = ""
    if job is not None and (job_failed(job) or (job_complete(job) and not state_finished(obs.state))):
        if job_failed(job):
            reason, detail = d.failure_detail(job)
        else:
            reason, detail = "ExitedEarly", "the runtime exited 0 before committing its last rollout"
        if reason == "DeadlineExceeded":
            return d.fail("DeadlineExceeded", f"spec.activeDeadlineSeconds exceeded during attempt {current}")
        if reason == "PodFailurePolicy":
            return d.fail("ConfigError", f"attempt {current}: the runtime rejected its configuration ({detail}); "
                                         f"fix the spec (not retried)")
        failed = to_int(old.get("failed"), 0) or 0
        if old.get("jobName") == job["metadata"]["name"]:
            # Count each failed attempt once: clearing jobName marks this failure as counted
            # (the status patch carries a resourceVersion precondition).
            failed += 1
            st["failed"] = failed
            st.pop("jobName", None)
            if failed > spec.backoff_limit:
                return d.fail("BackoffLimitExceeded", f"attempt {current} failed ({detail}); {failed} failed "
                                                      f"attempts exceed spec.backoffLimit={spec.backoff_limit}")
            d.event("Warning", "AttemptFailed", f"attempt {current} (Job {job['metadata']['name']}) failed: {detail}")
        retry_note = f"retry {failed}/{spec.backoff_limit} after: {detail}"
        need_new = True

    # -- which engine ---------------------------------------------------------------------
    url, pool_reason, pool_message = resolve_endpoint(spec, obs.pool, d.ns)
    if conds.set(POOL_READY, url is not None, pool_reason, pool_message) and url is None and phase not in (
            None, "Pending", "WaitingForPool"):
        d.event("Warning", pool_reason, pool_message)

    # -- deadline -------------------------------------------------------------------------
    started = parse_time(old.get("startTime"))
    if spec.active_deadline_seconds and started and not (need_new and phase == "Suspended"):
        remaining = spec.active_deadline_seconds - (d.now - started).total_seconds()
        if remaining <= 0:
            return d.fail("DeadlineExceeded", f"running for more than spec.activeDeadlineSeconds="
                                              f"{spec.active_deadline_seconds}s")
        d.plan.requeue_after = remaining

    # -- keep the current attempt running ---------------------------------------------------
    if not need_new:
        job_name = build.batch_job_name(d.name, current)
        if job is None:
            # Created before (status says so) but not in the cache: create it again. A 409
            # means it exists and the cache was late; the name makes it idempotent.
            if url is None:
                return _waiting(d, pool_reason, pool_message)
            d.plan.fence = current
            d.plan.create_job = build.batch_job(body, current, url, config, _deadline(spec, started, d.now))
            d.phase("Pending", "JobCreated", d.pending_message(job_name))
            conds.set(RUNNING, False, "Starting", d.pending_message(job_name))
            return d.done()
        if deleting(job):
            d.phase("Pending", "JobTerminating", f"Job {job_name} is being deleted")
            conds.set(RUNNING, False, "JobTerminating", f"Job {job_name} is being deleted")
            return d.done()
        st["jobName"] = job_name
        data = state_data(obs.state)
        committing = to_int(data.get("attempt")) == current and (to_int(data.get("rolloutId"), -1) or 0) >= 0
        ready = to_int(((job.get("status") or {}).get("ready")), 0) or 0
        if ready >= 1 or committing:
            message = f"attempt {current}: Job {job_name} running"
            if st.get("rolloutId") is not None:
                message += f", rollout {st['rolloutId']}/{st.get('numRollouts', '?')} committed"
            if phase != "Running":
                d.event("Normal", "Running", f"attempt {current}: the runtime is running (Job {job_name})")
            d.phase("Running", "Running", message)
            conds.set(RUNNING, True, "Running", f"attempt {current}: Job {job_name}")
        else:
            d.phase("Pending", "JobCreated", d.pending_message(job_name))
            conds.set(RUNNING, False, "Starting", d.pending_message(job_name))
        return d.done()

    # -- start a new attempt: first start, resume after suspend, or retry ---------------------
    if url is None:
        return _waiting(d, pool_reason, pool_message)
    new = current + 1
    job_name = build.batch_job_name(d.name, new)
    st["attempt"], st["jobName"], st["endpoint"] = new, job_name, url
    resumed = phase == "Suspended"
    if not old.get("startTime") or resumed:
        st["startTime"] = rfc3339(d.now)  # like batch Jobs: the deadline restarts on resume
    deadline = _deadline(spec, parse_time(st["startTime"]), d.now)
    d.plan.fence = new
    d.plan.create_job = build.batch_job(body, new, url, config, deadline)
    after = f"after rollout {st['rolloutId']}" if st.get("rolloutId") is not None else "from the start"
    if retry_note:
        d.event("Normal", "Retrying", f"attempt {new}: created Job {job_name}, resuming {after} ({retry_note})")
    elif resumed:
        d.event("Normal", "Resumed", f"attempt {new}: created Job {job_name}, resuming {after}")
    else:
        d.event("Normal", "Started", f"attempt {new}: created Job {job_name} against {url}")
    d.phase("Pending", "JobCreated", d.pending_message(job_name))
    conds.set(RUNNING, False, "Starting", d.pending_message(job_name))
    conds.remove(COMPLETE)
    return d.done()


def _waiting(d: _Decision, reason: str, message: str) -> JobPlan:
    if d.old.get("phase") != "WaitingForPool":
        d.event("Warning" if reason == "PoolNotFound" else "Normal", "WaitingForPool", message)
    d.phase("WaitingForPool", reason, message)
    d.st.pop("jobName", None)
    d.conds.set(RUNNING, False, "WaitingForPool", message)
    return d.done()


def _deadline(spec: RolloutJobSpec, started: datetime | None, now: datetime) -> int | None:
    if not spec.active_deadline_seconds:
        return None
    if started is None:
        return spec.active_deadline_seconds
    return max(1, int(spec.active_deadline_seconds - (now - started).total_seconds()))
