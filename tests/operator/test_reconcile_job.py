"""The RolloutJob state machine as a pure function: observation in, plan out (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rollout_operator.reconcile.rolloutjob import JobObserved, JobPlan, decide_job
from rollout_operator.reconcile.rolloutjob_observed import JobRejection
from rollout_operator.reconcile.spec_validation import validate_spec
from rollout_operator.settings import OperatorConfig

from tests.operator.conftest import rolloutjob, sglangpool

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_job(name: str, attempt: int, *, ready: int = 0, failed: str | None = None, complete: bool = False,
              deleting: bool = False) -> dict[str, Any]:
    conditions = []
    if failed:
        conditions.append({"type": "Failed", "status": "True", "reason": failed, "message": f"Job has {failed}"})
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    meta: dict[str, Any] = {"name": f"{name}-{attempt}", "labels": {"kuberollout.io/attempt": str(attempt)}}
    if deleting:
        meta["deletionTimestamp"] = stamp(NOW)
    return {"metadata": meta, "status": {"active": 0 if failed or complete else 1, "ready": ready,
                                         "conditions": conditions}}


def state(rollout_id: int, *, completed: int = 0, aborted: int = 0, filtered: int = 0, attempt: int = 1,
          finished: bool = False, num: int = 3) -> dict[str, Any]:
    return {"metadata": {"name": "arith-state", "annotations": {"kuberollout.io/attempt": str(attempt)}},
            "data": {"rolloutId": str(rollout_id), "numRollouts": str(num), "completed": str(completed),
                     "aborted": str(aborted), "filtered": str(filtered), "attempt": str(attempt),
                     "finished": "true" if finished else "false", "lastCommitTime": stamp(NOW)}}


def failed_pod(job_name: str, code: int, message: str) -> dict[str, Any]:
    return {"metadata": {"name": f"{job_name}-x", "labels": {"job-name": job_name}},
            "status": {"phase": "Failed", "containerStatuses": [
                {"name": "runtime", "state": {"terminated": {"exitCode": code, "message": message}}}]}}


def decide(body: dict[str, Any], config: OperatorConfig, **obs: Any):
    return decide_job(JobObserved(body=body, now=obs.pop("now", NOW), **obs), config)


def wire(plan: JobPlan) -> dict[str, Any]:
    """The status as the controller patches it (camelCase, unset fields left out)."""
    return plan.status.wire()


def cond(plan: Any, type_: str) -> dict[str, Any]:
    return next(c for c in wire(plan)["conditions"] if c["type"] == type_)


def running_status(attempt: int = 1, **extra: Any) -> dict[str, Any]:
    return {"phase": "Running", "attempt": attempt, "jobName": f"arith-{attempt}", "startTime": stamp(NOW),
            "observedGeneration": 1, **extra}


# --------------------------------------------------------------------------------- start


def test_new_endpoint_job_starts_attempt_one(config: OperatorConfig) -> None:
    plan = decide(rolloutjob(), config)
    assert [m["kind"] for m in plan.ensure] == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding"]
    assert plan.ensure[0]["metadata"]["annotations"]["kuberollout.io/attempt"] == "1"
    assert plan.create_job["metadata"]["name"] == "arith-1" and plan.fence == 1
    st = wire(plan)
    assert (st["phase"], st["attempt"], st["jobName"], st["endpoint"]) == ("Pending", 1, "arith-1", "http://engine:30000")
    assert st["startTime"] == stamp(NOW) and st["stateConfigMap"] == "arith-state" and st["observedGeneration"] == 1
    assert cond(plan, "ConfigValid")["status"] == "True" and cond(plan, "Running")["status"] == "False"
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "Started")]


def test_pool_job_waits_for_the_pool(config: OperatorConfig) -> None:
    body = rolloutjob(endpoint=None, poolRef={"name": "qwen"})
    plan = decide(body, config, pool=None)
    assert wire(plan)["phase"] == "WaitingForPool" and plan.create_job is None
    assert cond(plan, "PoolReady")["reason"] == "PoolNotFound"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "WaitingForPool")]
    # Created but not Ready.
    pending_pool = sglangpool(status={"conditions": [{"type": "Ready", "status": "False", "message": "0/2 servers"}]})
    plan = decide(body, config, pool=pending_pool)
    assert wire(plan)["phase"] == "WaitingForPool" and cond(plan, "PoolReady")["reason"] == "PoolNotReady"
    assert "0/2 servers" in wire(plan)["message"]
    # Ready: the Job runs against the pool's endpoint.
    ready_pool = sglangpool(status={"endpoint": "http://qwen-router.ns.svc:30000",
                                    "conditions": [{"type": "Ready", "status": "True"}]})
    plan = decide(body, config, pool=ready_pool)
    assert plan.create_job is not None and wire(plan)["endpoint"] == "http://qwen-router.ns.svc:30000"
    cmd = plan.create_job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "http://qwen-router.ns.svc:30000" in cmd


def test_running_job_mirrors_commits(config: OperatorConfig) -> None:
    body = rolloutjob(status=running_status())
    plan = decide(body, config, jobs={1: batch_job("arith", 1)}, state=state(1, completed=8, aborted=2, filtered=1))
    st = wire(plan)
    assert (st["rolloutId"], st["numRollouts"], st["completed"], st["aborted"], st["filtered"]) == (1, 3, 8, 2, 1)
    assert st["lastCommitTime"] == stamp(NOW)
    assert st["phase"] == "Running"  # commits from the current attempt prove it runs
    assert plan.create_job is None and not plan.delete_jobs
    # Before any commit and with no ready pod: Pending, with the pod's problem in the message.
    pods = [{"metadata": {"name": "arith-1-abc", "labels": {"job-name": "arith-1"}},
             "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "message": "0/2 nodes are available"}]}}]
    plan = decide(rolloutjob(status={**running_status(), "phase": "Pending"}), config,
                  jobs={1: batch_job("arith", 1)}, pods=pods)
    assert wire(plan)["phase"] == "Pending" and "Unschedulable: 0/2 nodes" in wire(plan)["message"]


def waiting(cm: dict[str, Any], *, waiting_for: int | None, served: int | None, rollout_id: int,
            attempt: int = 1) -> dict[str, Any]:
    """The state ConfigMap with the runtime's weight-wait report merged in (as `report_wait` patches it)."""
    data = {"waitingForWeightVersion": "" if waiting_for is None else str(waiting_for),
            "servedWeightVersion": "" if served is None else str(served), "waitingRolloutId": str(rollout_id),
            "waitingAttempt": str(attempt), "waitingSince": stamp(NOW) if waiting_for is not None else ""}
    return {**cm, "data": {**cm["data"], **data}}


def test_waiting_for_weights_shows_while_running_and_clears(config: OperatorConfig) -> None:
    rollout = {"batchSize": 4, "numRollouts": 3, "maxResponseLength": 64, "maxStaleness": 1}
    body = rolloutjob(status=running_status(), rollout=rollout)
    cm = state(1, completed=8)
    cm["data"].update({"stale": "3", "weightVersionMin": "0", "weightVersionMax": "1"})
    plan = decide(body, config, jobs={1: batch_job("arith", 1)}, state=waiting(cm, waiting_for=2, served=1,
                                                                                    rollout_id=3))
    st = wire(plan)
    assert (st["phase"], st["reason"]) == ("Running", "WaitingForWeights")
    assert (st["waitingForWeightVersion"], st["servedWeightVersion"]) == (2, 1)
    assert (st["stale"], st["weightVersionMin"], st["weightVersionMax"]) == (3, 0, 1)
    assert "rollout 3 waits for weight version 2 (served: 1" in st["message"]
    assert cond(plan, "WaitingForWeights")["status"] == "True"
    assert cond(plan, "WaitingForWeights")["reason"] == "WaitingForWeights"
    # The runtime resumed: Running again, the version it read stays, the condition turns False.
    plan = decide(rolloutjob(status=st, rollout=rollout), config, jobs={1: batch_job("arith", 1)},
                  state=waiting(cm, waiting_for=None, served=2, rollout_id=3))
    st = wire(plan)
    assert (st["phase"], st["reason"], st.get("waitingForWeightVersion"), st["servedWeightVersion"]) == (
        "Running", "Running", None, 2)
    assert cond(plan, "WaitingForWeights")["status"] == "False"
    assert cond(plan, "WaitingForWeights")["reason"] == "WeightsCurrent"


def test_a_wait_of_an_earlier_attempt_is_not_shown(config: OperatorConfig) -> None:
    """Attempt 1 died while waiting; attempt 2 runs and has not waited: its status must not say it waits."""
    rollout = {"batchSize": 4, "numRollouts": 3, "maxResponseLength": 64, "maxStaleness": 0}
    body = rolloutjob(status=running_status(2, waitingForWeightVersion=4), rollout=rollout)
    plan = decide(body, config, jobs={2: batch_job("arith", 2, ready=1)},
                  state=waiting(state(3, attempt=1), waiting_for=4, served=3, rollout_id=4, attempt=1))
    st = wire(plan)
    assert (st["phase"], st["reason"], st.get("waitingForWeightVersion")) == ("Running", "Running", None)
    # A job that failed while its runtime waited: the condition does not stay True.
    body = rolloutjob(status={**running_status(), "failed": 3, "waitingForWeightVersion": 4, "conditions": [
        {"type": "WaitingForWeights", "status": "True", "reason": "WaitingForWeights", "message": "waits"}]},
        rollout=rollout)
    plan = decide(body, config, jobs={1: batch_job("arith", 1, failed="BackoffLimitExceeded")},
                  state=waiting(state(3), waiting_for=4, served=3, rollout_id=4))
    assert wire(plan)["phase"] == "Failed" and wire(plan).get("waitingForWeightVersion") is None
    assert cond(plan, "WaitingForWeights")["status"] == "False"


def test_finished_commit_means_succeeded(config: OperatorConfig) -> None:
    body = rolloutjob(status=running_status())
    plan = decide(body, config, jobs={1: batch_job("arith", 1, ready=1)},
                  state=state(2, completed=12, finished=True))
    assert wire(plan)["phase"] == "Succeeded" and wire(plan)["completionTime"] == stamp(NOW)
    assert cond(plan, "Complete")["status"] == "True" and wire(plan)["completed"] == 12
    assert [e.reason for e in plan.events] == ["Succeeded"]
    # Terminal: the next pass changes nothing and posts nothing.
    again = decide(rolloutjob(status=wire(plan)), config, state=state(2, completed=12, finished=True))
    assert wire(again) == wire(plan) and not again.events and again.create_job is None


def test_recreates_a_job_the_cache_has_not_seen_yet(config: OperatorConfig) -> None:
    """status says attempt 1 exists, the index does not have it: same name again (409 is fine)."""
    plan = decide(rolloutjob(status={**running_status(), "phase": "Pending"}), config, jobs={})
    assert plan.create_job["metadata"]["name"] == "arith-1" and wire(plan)["attempt"] == 1


def test_a_pool_that_flaps_before_the_cache_sees_the_job_never_starts_a_second_attempt(config: OperatorConfig) -> None:
    """Job 1 is created; the pool drops out of Ready before the watch delivers Job 1; it comes back.

    The reconciles in between see no Job 1 in the cache. That is no evidence that attempt 1 ended,
    so it is never abandoned: no pass may start attempt 2 while Job 1 may be running.
    """
    body = rolloutjob(endpoint=None, poolRef={"name": "qwen"})
    endpoint = "http://qwen-router.ns.svc:30000"
    ready_pool = sglangpool(status={"endpoint": endpoint, "conditions": [{"type": "Ready", "status": "True"}]})
    flapping = sglangpool(status={"endpoint": endpoint, "conditions": [
        {"type": "Ready", "status": "False", "message": "waiting for the router to become available"}]})
    first = decide(body, config, pool=ready_pool)
    assert first.create_job["metadata"]["name"] == "arith-1"
    created = wire(first)
    assert (created["attempt"], created["jobName"], created["endpoint"]) == (1, "arith-1", endpoint)
    # The pool flaps; Job 1 is not in the cache yet.
    during = decide(rolloutjob(endpoint=None, poolRef={"name": "qwen"}, status=created), config, jobs={},
                    pool=flapping)
    st = wire(during)
    assert (st["attempt"], st["jobName"]) == (1, "arith-1")
    assert during.create_job is None or during.create_job["metadata"]["name"] == "arith-1"
    # The pool is back, and the cache still lags: still attempt 1 (a create of arith-1 is a harmless 409).
    after = decide(rolloutjob(endpoint=None, poolRef={"name": "qwen"}, status=st), config, jobs={}, pool=ready_pool)
    assert wire(after)["attempt"] == 1 and wire(after)["jobName"] == "arith-1"
    assert after.create_job is None or after.create_job["metadata"]["name"] == "arith-1"
    assert not [e for e in during.events + after.events if e.reason in ("Started", "Retrying")]
    # And once the cache shows Job 1 running, it is simply attempt 1, running.
    seen = decide(rolloutjob(endpoint=None, poolRef={"name": "qwen"}, status=wire(after)), config,
                  jobs={1: batch_job("arith", 1, ready=1)}, pool=flapping)
    assert wire(seen)["phase"] == "Running" and wire(seen)["attempt"] == 1 and seen.create_job is None


def test_a_created_attempt_without_an_endpoint_keeps_its_job_name_while_the_pool_is_away(
        config: OperatorConfig) -> None:
    """A status without an endpoint (written by an older operator): wait, but keep jobName."""
    status = {**running_status(), "phase": "Pending"}
    plan = decide(rolloutjob(endpoint=None, poolRef={"name": "qwen"}, status=status), config, jobs={}, pool=None)
    st = wire(plan)
    assert st["phase"] == "WaitingForPool" and st["jobName"] == "arith-1" and plan.create_job is None
    back = sglangpool(status={"endpoint": "http://qwen-router.ns.svc:30000",
                              "conditions": [{"type": "Ready", "status": "True"}]})
    again = decide(rolloutjob(endpoint=None, poolRef={"name": "qwen"}, status=st), config, jobs={}, pool=back)
    assert again.create_job["metadata"]["name"] == "arith-1" and wire(again)["attempt"] == 1


# --------------------------------------------------------------------------------- retry


def test_failed_attempt_is_retried_from_the_commit(config: OperatorConfig) -> None:
    body = rolloutjob(status=running_status(), backoffLimit=2)
    jobs = {1: batch_job("arith", 1, failed="BackoffLimitExceeded")}
    pods = [failed_pod("arith-1", 137, "killed")]
    plan = decide(body, config, jobs=jobs, pods=pods, state=state(1, completed=8))
    st = wire(plan)
    assert (st["attempt"], st["failed"], st["jobName"]) == (2, 1, "arith-2")
    assert plan.create_job["metadata"]["name"] == "arith-2" and plan.fence == 2
    env = {e["name"]: e.get("value") for e in plan.create_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEROLLOUT_ATTEMPT"] == "2"
    reasons = [(e.type, e.reason) for e in plan.events]
    assert reasons == [("Warning", "AttemptFailed"), ("Normal", "Retrying")]
    assert "exit code 137: killed" in plan.events[0].message and "after rollout 1" in plan.events[1].message


def test_a_failure_is_counted_once(config: OperatorConfig) -> None:
    """Waiting for the pool after a failure: the failure was counted when jobName was cleared."""
    body = rolloutjob(endpoint=None, poolRef={"name": "qwen"}, backoffLimit=3,
                      status={**running_status(), "failed": 1})
    body["status"].pop("jobName")
    jobs = {1: batch_job("arith", 1, failed="BackoffLimitExceeded")}
    plan = decide(body, config, jobs=jobs, pool=None)
    assert wire(plan)["failed"] == 1 and wire(plan)["phase"] == "WaitingForPool"
    assert not [e for e in plan.events if e.reason == "AttemptFailed"]


def test_backoff_limit_exceeded(config: OperatorConfig) -> None:
    body = rolloutjob(status={**running_status(attempt=2), "failed": 1}, backoffLimit=1)
    plan = decide(body, config, jobs={2: batch_job("arith", 2, failed="BackoffLimitExceeded")})
    st = wire(plan)
    assert (st["phase"], st["reason"], st["failed"]) == ("Failed", "BackoffLimitExceeded", 2)
    assert plan.create_job is None and cond(plan, "Failed")["status"] == "True"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "BackoffLimitExceeded")]


def test_configuration_errors_are_not_retried(config: OperatorConfig) -> None:
    body = rolloutjob(status=running_status(), backoffLimit=5)
    pods = [failed_pod("arith-1", 2, "rollout-runtime: configuration error: bad input key")]
    plan = decide(body, config, jobs={1: batch_job("arith", 1, failed="PodFailurePolicy")}, pods=pods)
    assert wire(plan)["phase"] == "Failed" and wire(plan)["reason"] == "ConfigError"
    assert "bad input key" in wire(plan)["message"] and plan.create_job is None


def test_exit_zero_without_finishing_counts_as_a_failure(config: OperatorConfig) -> None:
    body = rolloutjob(status=running_status(), backoffLimit=1)
    plan = decide(body, config, jobs={1: batch_job("arith", 1, complete=True)}, state=state(1))
    assert wire(plan)["failed"] == 1 and wire(plan)["attempt"] == 2


# ------------------------------------------------------------------------------- suspend


def test_suspend_stops_the_runtime_and_resume_starts_a_new_attempt(config: OperatorConfig) -> None:
    body = rolloutjob(status=running_status(), suspend=True)
    plan = decide(body, config, jobs={1: batch_job("arith", 1, ready=1)}, state=state(1))
    assert plan.delete_jobs == ["arith-1"] and wire(plan)["phase"] == "Suspended"
    assert cond(plan, "Suspended")["reason"] == "Suspending" and "jobName" not in wire(plan)
    assert [e.reason for e in plan.events] == ["Suspended"]
    # The Job is being deleted: nothing more to delete, still suspending.
    plan2 = decide(rolloutjob(status=wire(plan), suspend=True), config,
                   jobs={1: batch_job("arith", 1, deleting=True)})
    assert plan2.delete_jobs == [] and cond(plan2, "Suspended")["status"] == "False"
    # Gone: suspended for good, state kept.
    plan3 = decide(rolloutjob(status=wire(plan2), suspend=True), config, jobs={}, state=state(1))
    assert cond(plan3, "Suspended")["status"] == "True" and not plan3.events and plan3.create_job is None
    # Resume: attempt 2 resumes from the commit; the deadline clock restarts.
    later = NOW + timedelta(hours=1)
    plan4 = decide(rolloutjob(status=wire(plan3), suspend=False), config, jobs={}, state=state(1), now=later)
    assert plan4.create_job["metadata"]["name"] == "arith-2" and wire(plan4)["startTime"] == stamp(later)
    assert cond(plan4, "Suspended")["status"] == "False" and wire(plan4).get("failed") is None
    assert [e.reason for e in plan4.events] == ["Resumed"]


def test_created_suspended_never_starts(config: OperatorConfig) -> None:
    plan = decide(rolloutjob(suspend=True), config)
    assert plan.create_job is None and wire(plan)["phase"] == "Suspended"
    assert plan.ensure[0]["metadata"]["annotations"]["kuberollout.io/attempt"] == "0"


# ------------------------------------------------------------------------ deadline + ttl


def test_active_deadline(config: OperatorConfig) -> None:
    started = NOW - timedelta(seconds=50)
    body = rolloutjob(status={**running_status(), "startTime": stamp(started)}, activeDeadlineSeconds=60)
    plan = decide(body, config, jobs={1: batch_job("arith", 1, ready=1)})
    assert wire(plan)["phase"] == "Running" and plan.requeue_after == pytest.approx(10)
    plan = decide(body, config, jobs={1: batch_job("arith", 1, ready=1)}, now=NOW + timedelta(seconds=11))
    assert wire(plan)["reason"] == "DeadlineExceeded" and plan.delete_jobs == ["arith-1"]
    # The Job carries the remaining deadline too (it enforces it if the operator is down).
    fresh = decide(rolloutjob(activeDeadlineSeconds=600), config)
    assert fresh.create_job["spec"]["activeDeadlineSeconds"] == 600


def test_ttl_after_finished(config: OperatorConfig) -> None:
    done = {"phase": "Succeeded", "completionTime": stamp(NOW), "attempt": 1, "observedGeneration": 1}
    body = rolloutjob(status=done, ttlSecondsAfterFinished=30)
    plan = decide(body, config, now=NOW + timedelta(seconds=10))
    assert not plan.delete_self and plan.requeue_after == pytest.approx(20)
    plan = decide(body, config, now=NOW + timedelta(seconds=31))
    assert plan.delete_self


# ---------------------------------------------------------------------------- validation


def test_invalid_spec_fails_visibly_and_recovers_on_a_new_generation(config: OperatorConfig) -> None:
    body = rolloutjob(filters={"overSamplingInputSize": 2})  # < batchSize 4
    plan = decide(body, config)
    st = wire(plan)
    assert (st["phase"], st["reason"]) == ("Failed", "InvalidSpec")
    assert "spec.filters.overSamplingInputSize" in st["message"] and "spec.rollout.batchSize" in st["message"]
    assert cond(plan, "ConfigValid")["status"] == "False" and plan.create_job is None
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]
    # Same generation: terminal, quiet.
    again = decide(rolloutjob(filters={"overSamplingInputSize": 2}, status=st), config)
    assert not again.events and again.create_job is None
    # The user fixes the spec (generation 2): the job starts.
    fixed = decide(rolloutjob(filters={"overSamplingInputSize": 8}, status=st, generation=2), config)
    assert fixed.create_job is not None and wire(fixed)["phase"] == "Pending"
    assert cond(fixed, "ConfigValid")["status"] == "True"
    assert not any(c["type"] == "Failed" for c in wire(fixed)["conditions"])


ROLLOUT = {"batchSize": 4, "numRollouts": 1, "maxResponseLength": 64}


@pytest.mark.parametrize("spec,field", [
    ({"rollout": {**ROLLOUT, "customGenerateFunctionPath": "not a path"}},
     "spec.rollout.customGenerateFunctionPath"),
    ({"rollout": ROLLOUT, "filters": {"overSamplingInputSize": 1}},
     "spec.filters.overSamplingInputSize"),
    ({"rollout": ROLLOUT, "runtime": {"extraArgs": ["--no-such-flag", "1"]}},
     "spec.runtime.extraArgs"),
    ({"rollout": {**ROLLOUT, "bogus": 1}}, "spec.rollout.bogus"),
])
def test_validate_spec_names_the_field(spec: dict[str, Any], field: str) -> None:
    message = validate_spec({"dataset": {"path": "d.jsonl"}, **spec})
    assert message is not None and field in message


@pytest.mark.parametrize("spec,fields", [
    ({"rollout": ROLLOUT, "eval": {"interval": 5}}, ("spec.eval.interval", "spec.eval.datasets")),
    ({"rollout": ROLLOUT, "reward": {"type": "remote_rm"}}, ("spec.reward.type", "spec.reward.url")),
    ({"rollout": ROLLOUT, "reward": {"type": "boxed_remote_rm"}}, ("spec.reward.url",)),
    ({"rollout": {"batchSize": 4, "numRollouts": 1}},
     ("spec.rollout.maxResponseLength", "spec.rollout.customGenerateFunctionPath")),
], ids=["eval-interval-without-datasets", "remote-rm-without-url", "boxed-remote-rm", "no-max-response-length"])
def test_settings_that_other_settings_need_are_named_before_a_pod_starts(spec: dict[str, Any],
                                                                         fields: tuple[str, ...]) -> None:
    """RolloutConfig.check_runnable, run by the operator: each message names the spec fields to fix."""
    message = validate_spec({"dataset": {"path": "d.jsonl"}, **spec})
    assert message is not None and all(f in message for f in fields), message


def test_what_makes_those_settings_unnecessary_passes() -> None:
    base = {"dataset": {"path": "d.jsonl"}}
    assert validate_spec({**base, "rollout": ROLLOUT, "eval": {"interval": 5, "datasets": [
        {"name": "aime", "path": "aime.jsonl"}]}}) is None
    assert validate_spec({**base, "rollout": ROLLOUT, "reward": {"type": "remote_rm", "url": "http://rm:8000"}}) is None
    assert validate_spec({**base, "rollout": ROLLOUT, "reward": {"type": "remote_rm", "customPath": "my.rm.fn"}}) is None
    assert validate_spec({**base, "rollout": {"batchSize": 4, "numRollouts": 1,
                                              "customGenerateFunctionPath": "my_pkg.gen.generate"}}) is None
    assert validate_spec({**base, "rollout": {"batchSize": 4, "numRollouts": 1,
                                              "rolloutFunctionPath": "rollout_runtime.sft_rollout.generate_rollout"}}) is None


def test_valid_spec_passes() -> None:
    assert validate_spec({"dataset": {"path": "d.jsonl"}, "rollout": ROLLOUT,
                          "engine": {"requestTimeoutSeconds": 30}}) is None


# --------------------------------------------------------------------------- rejected Job


def test_a_rejected_job_fails_until_the_spec_changes(config: OperatorConfig) -> None:
    """The controller reports the API server's refusal; the decision turns it into Failed/JobRejected."""
    pending = {**running_status(), "phase": "Pending"}
    refused = JobRejection(generation=1, message='Job.batch "arith-1" is invalid: spec.template: bad volume')
    plan = decide(rolloutjob(status=pending), config, jobs={}, rejection=refused)
    st = wire(plan)
    assert (st["phase"], st["reason"]) == ("Failed", "JobRejected") and "jobName" not in st
    assert st["message"] == f"the API server rejected the runtime Job: {refused.message}"
    assert st["completionTime"] == stamp(NOW) and plan.create_job is None
    assert cond(plan, "Failed")["reason"] == "JobRejected" and cond(plan, "Running")["status"] == "False"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "JobRejected")]
    # Same generation: terminal and quiet. A new generation: the old refusal no longer applies.
    again = decide(rolloutjob(status=st), config, rejection=refused)
    assert wire(again)["phase"] == "Failed" and not again.events and again.create_job is None
    fixed = decide(rolloutjob(status=st, generation=2), config, rejection=refused)
    assert fixed.create_job is not None and wire(fixed)["phase"] == "Pending"
    assert [e.reason for e in fixed.events] == ["SpecFixed", "Started"]


def test_an_unavailable_engine_is_retried_and_said_in_words(config: OperatorConfig) -> None:
    """Exit code 3 (contract.EXIT_ENGINE_UNAVAILABLE): a retry from the last commit, with the runtime's one line."""
    from rollout_runtime.contract import EXIT_ENGINE_UNAVAILABLE

    body = rolloutjob(status=running_status(), backoffLimit=2)
    line = "rollout-runtime: engine unavailable: POST http://engine:30000/generate failed: ClientConnectorError"
    plan = decide(body, config, jobs={1: batch_job("arith", 1, failed="BackoffLimitExceeded")},
                  pods=[failed_pod("arith-1", EXIT_ENGINE_UNAVAILABLE, line)], state=state(1, completed=8))
    assert plan.create_job["metadata"]["name"] == "arith-2" and wire(plan)["failed"] == 1
    failed_event = plan.events[0]
    assert failed_event.reason == "AttemptFailed"
    assert f"exit code {EXIT_ENGINE_UNAVAILABLE} (the engine was unavailable; retried" in failed_event.message
    assert line in failed_event.message
