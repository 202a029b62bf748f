"""SGLangPool status: its phases, condition types and reasons, and the status model.

Readiness: the pool is Ready when at least one server passes its readiness probe and the router
(if enabled) is available, so a RolloutJob can start while the rest of the pool is still
loading its model; `ServersReady` tells whether every replica is up and on the current spec.
Only `reconcile/sglangpool.py` decides which of these a pool is in.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from rollout_operator.api.common import ApiModel, Conditions


class PoolPhase(StrEnum):
    """`status.phase` of an SGLangPool."""

    PENDING = "Pending"
    READY = "Ready"
    FAILED = "Failed"


class PoolConditionType(StrEnum):
    """`status.conditions[].type` of an SGLangPool."""

    READY = "Ready"  # RolloutJobs may use the endpoint (one server ready, router available)
    SERVERS_READY = "ServersReady"  # every replica ready and on the current spec
    ROUTER_READY = "RouterReady"
    CONFIG_VALID = "ConfigValid"  # the spec builds children the API server accepts
    ADMITTED = "Admitted"  # the installation's pod policy allows the server and router pods
    WEIGHTS_SYNCED = "WeightsSynced"  # every live server serves spec.weights.version (see reconcile/sglangpool_weights.py)


class PoolReason(StrEnum):
    """CamelCase reasons of an SGLangPool: in its conditions and in its Events."""

    # ConfigValid / Admitted (and Ready, and the Failed phase, when False).
    INVALID_SPEC = "InvalidSpec"  # the spec does not build the children
    SPEC_REJECTED = "SpecRejected"  # the API server refused a child built from the spec (the field is named)
    NOT_ALLOWED = "NotAllowed"  # the pod policy refuses a volume type or an image
    VALID = "Valid"
    ALLOWED = "Allowed"
    SPEC_FIXED = "SpecFixed"  # event: the spec (or the policy) changed and the pool continues
    # ServersReady.
    SCALED_TO_ZERO = "ScaledToZero"
    CREATING = "Creating"
    ALL_SERVERS_READY = "AllServersReady"
    SERVERS_PROGRESSING = "ServersProgressing"
    NO_SERVER_READY = "NoServerReady"
    # RouterReady.
    ROUTER_DISABLED = "RouterDisabled"
    ROUTER_AVAILABLE = "RouterAvailable"
    ROUTER_NOT_AVAILABLE = "RouterNotAvailable"
    # Ready (when not Ready, it carries the reason of ServersReady or RouterReady) and Events.
    POOL_READY = "PoolReady"
    POOL_NOT_READY = "PoolNotReady"
    # WeightsSynced, and the Events of weight updates.
    SYNCED = "Synced"
    UPDATING = "Updating"
    UPDATE_FAILED = "UpdateFailed"
    WAITING_FOR_SERVERS = "WaitingForServers"
    WEIGHTS_UPDATED = "WeightsUpdated"


class WeightUpdateRecord(ApiModel):
    """The last weight update the operator ran on the pool's servers."""

    version: int = Field(description="The version it loaded.")
    start_time: str | None = Field(None, description="When it started (the first server paused).")
    completion_time: str | None = Field(None, description="When the last server answered.")
    duration_seconds: float | None = Field(None, description="From start to completion.")
    servers: int | None = Field(None, description="Servers it loaded the version into.")
    failed: int | None = Field(None, description="Servers it failed on (named in the WeightsSynced condition).")
    max_pause_seconds: float | None = Field(None, description="The longest time a server was paused.")
    max_load_seconds: float | None = Field(None, description="The slowest server's own load "
                                                             "(/update_weights_from_disk) call.")


class SGLangPoolStatus(ApiModel):
    """Observed state of an SGLangPool."""

    phase: PoolPhase | None = Field(None, description="Pending (no server ready yet), Ready, or Failed.")
    replicas: int | None = Field(None, description="Server pods that exist (the scale subresource's status).")
    ready_replicas: int | None = Field(None, description="Servers whose readiness probe (/health_generate) passes.")
    available_replicas: int | None = Field(None, description="Servers ready for at least minReadySeconds.")
    updated_replicas: int | None = Field(None, description="Servers running the current spec.")
    endpoint: str | None = Field(None, description="URL that RolloutJobs send requests to (the router Service, or "
                                                   "the headless server Service without a router).")
    selector: str | None = Field(None, description="Label selector of the server pods (for the scale "
                                                   "subresource and HPA).")
    message: str | None = Field(None, description="Why the pool is in this phase.")
    observed_generation: int | None = Field(None, description="The .metadata.generation last reconciled.")
    weight_version: int | None = Field(None, description="The weight version every Ready server serves (0: the "
                                                         "model's own); unset while they differ or are unknown.")
    weights_updated_replicas: int | None = Field(None, description="Running servers that serve spec.weights.version.")
    last_weight_update: WeightUpdateRecord | None = Field(None, description="The last weight update.")
    conditions: Conditions | None = None
