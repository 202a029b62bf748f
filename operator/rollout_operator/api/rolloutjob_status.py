"""RolloutJob status: its phases, condition types and reasons, and the status model.

Kept next to the spec types (as KubeRay keeps JobDeploymentStatus and its reasons beside
rayjob_types.go): these names are API, read by users, `kubectl wait`, dashboards and alerts.
Only `reconcile/rolloutjob.py` decides which of them an object is in (its docstring draws the
state machine).

A new phase, condition type or reason is added here first; `phase` is an enum in the CRD (so a
new phase needs the CRDs regenerated), reasons and condition types are free strings on the wire.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from rollout_operator.api.common import ApiModel, Conditions, x


class JobPhase(StrEnum):
    """`status.phase`: the one-word summary that `kubectl get rolloutjobs` shows."""

    PENDING = "Pending"
    WAITING_FOR_POOL = "WaitingForPool"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


#: Phases a RolloutJob does not leave on its own (Failed on a spec problem is left when the spec changes).
TERMINAL_PHASES: frozenset[JobPhase] = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED})


class JobConditionType(StrEnum):
    """`status.conditions[].type` of a RolloutJob."""

    CONFIG_VALID = "ConfigValid"  # the spec builds a valid runtime configuration
    ADMITTED = "Admitted"  # the installation's pod policy allows the runtime pod (ServiceAccount, volumes, image)
    POOL_READY = "PoolReady"  # the engine (poolRef's pool, or the endpoint) can be used
    RUNNING = "Running"  # the current attempt's runtime is running
    SUSPENDED = "Suspended"  # spec.suspend: False while suspending, True once no runtime pod is left
    WAITING_FOR_WEIGHTS = "WaitingForWeights"  # maxStaleness: the runtime waits for a newer weight version
    COMPLETE = "Complete"
    FAILED = "Failed"


class JobReason(StrEnum):
    """CamelCase reasons of a RolloutJob: in `status.reason`, in its conditions and in its Events."""

    # Failed: the phase's reason (and the Failed condition's).
    INVALID_SPEC = "InvalidSpec"  # the spec does not build a runtime configuration
    NOT_ALLOWED = "NotAllowed"  # the pod policy refuses spec.runtime's ServiceAccount, a volume type or the image
    JOB_REJECTED = "JobRejected"  # the API server refused the runtime Job (invalid pod settings, quota, policy)
    CONFIG_ERROR = "ConfigError"  # the runtime exited with the configuration-error code: not retried
    DEADLINE_EXCEEDED = "DeadlineExceeded"  # spec.activeDeadlineSeconds
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"  # more failed attempts than spec.backoffLimit
    # Pending / Running / Succeeded / Suspended.
    JOB_CREATED = "JobCreated"
    JOB_TERMINATING = "JobTerminating"
    RUNNING = "Running"
    COMPLETED = "Completed"
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    # WaitingForPool (and the PoolReady condition).
    POOL_NOT_FOUND = "PoolNotFound"
    POOL_NOT_READY = "PoolNotReady"
    POOL_READY = "PoolReady"
    EXTERNAL_ENDPOINT = "ExternalEndpoint"
    # Running while the runtime is ahead of the policy (spec.rollout.maxStaleness), and the condition's.
    WAITING_FOR_WEIGHTS = "WaitingForWeights"
    # Condition-only reasons.
    WEIGHTS_CURRENT = "WeightsCurrent"
    VALID = "Valid"
    ALLOWED = "Allowed"
    STARTING = "Starting"
    WAITING_FOR_POOL = "WaitingForPool"
    RESUMED = "Resumed"
    # Event-only reasons.
    STARTED = "Started"
    RETRYING = "Retrying"
    ATTEMPT_FAILED = "AttemptFailed"
    SPEC_FIXED = "SpecFixed"
    SUCCEEDED = "Succeeded"


#: Failures caused by the spec: re-evaluated when the spec changes (a new metadata.generation).
RECOVERABLE_REASONS: frozenset[JobReason] = frozenset({JobReason.INVALID_SPEC, JobReason.JOB_REJECTED,
                                                       JobReason.NOT_ALLOWED})


class RolloutJobStatus(ApiModel):
    """Observed state of a RolloutJob; the counts mirror the runtime's last commit."""

    phase: JobPhase | None = Field(None, description="Pending, WaitingForPool, Running, Succeeded, Failed or "
                                                     "Suspended.")
    reason: str | None = Field(None, description="CamelCase reason for the phase (e.g. BackoffLimitExceeded).")
    message: str | None = Field(None, description="Human-readable details.")
    # The runtime's last commit (rollout_runtime.contract.CommitSummary, same field names).
    rollout_id: int | None = Field(None, description="Last committed rollout id (0-based).")
    num_rollouts: int | None = Field(None, description="Rollouts the job generates in total.")
    completed: int | None = Field(None, description="Samples completed, cumulative.")
    aborted: int | None = Field(None, description="Samples aborted (partial rollout / over-sampling), cumulative.")
    filtered: int | None = Field(None, description="Samples dropped by filters, cumulative.")
    stale: int | None = Field(None, description="Samples dropped or regenerated because they held tokens older than "
                                                "spec.rollout.maxStaleness allows, cumulative.")
    weight_version_min: int | None = Field(None, description="Oldest weight version behind a token of the last "
                                                             "committed batch.")
    weight_version_max: int | None = Field(None, description="Newest weight version behind a token of the last "
                                                             "committed batch.")
    waiting_for_weight_version: int | None = Field(None, description="The weight version the runtime waits for "
                                                                     "before it starts more of the next rollout "
                                                                     "(maxStaleness); unset when it is not waiting.")
    served_weight_version: int | None = Field(None, description="The served weight version the runtime last read "
                                                                "(the pool's status.weightVersion, or the lowest "
                                                                "of the engines').")
    attempt: int | None = Field(None, description="Current attempt (1-based); attempt N runs as Job <name>-N.")
    failed: int | None = Field(None, description="Attempts that failed (retried while <= spec.backoffLimit).")
    job_name: str | None = Field(None, description="The batch Job of the current attempt.")
    endpoint: str | None = Field(None, description="Engine URL the runtime uses.")
    state_config_map: str | None = Field(None, description="ConfigMap holding the committed state.")
    start_time: str | None = Field(None, description="When the first attempt started (reset on resume).",
                                   json_schema_extra=x(format="date-time"))
    completion_time: str | None = Field(None, description="When the job succeeded or failed.",
                                        json_schema_extra=x(format="date-time"))
    last_commit_time: str | None = Field(None, description="Time of the runtime's last commit.",
                                         json_schema_extra=x(format="date-time"))
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    conditions: Conditions | None = None
