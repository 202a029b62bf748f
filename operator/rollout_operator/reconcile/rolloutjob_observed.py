"""What the operator observed about one RolloutJob, and how to read its Kubernetes children.

The controller fills a `JobObserved` from kopf's indexes (slim copies of the batch Jobs, the
state ConfigMap, the runtime pods and the referenced pool) plus what only it can see: the API
server's refusal to create the runtime Job. `reconcile/rolloutjob.py` decides from it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from rollout_operator.constants import LABEL_ATTEMPT, RUNTIME_CONTAINER
from rollout_operator.reconcile.common import condition, condition_true, deleting, to_int
from rollout_operator.reconcile.pods import summarize, termination_message
from rollout_operator.reconcile.rejection import Rejection
from rollout_runtime.contract import (
    EXIT_CONFIG_ERROR,
    EXIT_ENGINE_UNAVAILABLE,
    EXIT_INTERRUPTED,
    CommitSummary,
    WeightWait,
    decode_flat,
    decode_wait,
)

#: The runtime's exit codes (rollout_runtime.contract) in words, for events and status messages.
#: A configuration error fails the job (podFailurePolicy FailJob); the others are retried.
EXIT_MEANINGS: dict[int, str] = {
    EXIT_CONFIG_ERROR: "configuration error",
    EXIT_ENGINE_UNAVAILABLE: "the engine was unavailable; retried, the new attempt resumes from the last commit",
    EXIT_INTERRUPTED: "stopped by a signal",
}

# Reasons of a batch Job's Failed condition (set by Kubernetes' Job controller) that the
# RolloutJob maps to its own failures; anything else is a failed attempt that may be retried.
BATCH_DEADLINE_EXCEEDED = "DeadlineExceeded"  # the Job's activeDeadlineSeconds
BATCH_POD_FAILURE_POLICY = "PodFailurePolicy"  # the FailJob rule: the runtime's configuration-error exit code


#: The API server refused the runtime Job for this generation (invalid pod settings, a ResourceQuota
#: or an admission policy): retrying the same spec cannot help, so the decision fails the
#: RolloutJob until its spec changes.
JobRejection = Rejection


@dataclass
class JobObserved:
    """One RolloutJob as the operator sees it (all slim dicts, as kept in kopf's indexes)."""

    body: dict[str, Any]
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)  # attempt -> batch Job
    state: dict[str, Any] | None = None  # the state ConfigMap
    pool: dict[str, Any] | None = None  # the SGLangPool named by poolRef (None: not found)
    pods: list[dict[str, Any]] = field(default_factory=list)  # runtime pods of this RolloutJob
    now: datetime | None = None
    rejection: JobRejection | None = None  # the last refused create of the runtime Job

    @cached_property
    def commit(self) -> CommitSummary | None:
        """The runtime's last commit, from the state ConfigMap's flat keys (None before the first)."""
        return decode_flat((self.state or {}).get("data"))

    @cached_property
    def wait(self) -> WeightWait | None:
        """The runtime's last report of a wait for newer weights (bounded staleness), or None."""
        return decode_wait((self.state or {}).get("data"))

    def pods_of(self, job_name: str) -> list[dict[str, Any]]:
        return [p for p in self.pods if ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == job_name]

    def failure_detail(self, job: dict[str, Any]) -> tuple[str, str]:
        """(Job failure reason, the most specific message available) for a failed attempt."""
        cond = condition(job, "Failed") or {}
        reason = cond.get("reason") or "Failed"
        for pod in self.pods_of(job["metadata"]["name"]):
            code, message = termination_message(pod, RUNTIME_CONTAINER)
            if code is not None:
                meaning = f" ({EXIT_MEANINGS[code]})" if code in EXIT_MEANINGS else ""
                return reason, f"exit code {code}{meaning}" + (f": {message}" if message else "")
        return reason, cond.get("message") or reason

    def pending_message(self, job_name: str) -> str:
        problem = summarize(self.pods_of(job_name))
        return f"Job {job_name} created; waiting for the runtime pod" + (f" ({problem})" if problem else "")


def committed_finished(commit: CommitSummary | None) -> bool:
    """The runtime committed its last rollout (success is read from the commit, not the exit code)."""
    return commit is not None and commit.finished


def job_attempt(job: dict[str, Any]) -> int | None:
    return to_int(((job.get("metadata") or {}).get("labels") or {}).get(LABEL_ATTEMPT))


def job_failed(job: dict[str, Any] | None) -> bool:
    return condition_true(job, "Failed")


def job_complete(job: dict[str, Any] | None) -> bool:
    return condition_true(job, "Complete")


def job_finished(job: dict[str, Any] | None) -> bool:
    return job_failed(job) or job_complete(job)


def job_live(job: dict[str, Any]) -> bool:
    return not job_finished(job) and not deleting(job)
