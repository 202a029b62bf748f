"""SGLangPool (`kuberollout.io/v1alpha1`): a pool of SGLang servers behind an SGLang router.

The pool is the serving half of kuberollout: a Deployment of identical servers (one replica =
one tensor-parallel group on `gpusPerReplica` GPUs), a headless Service, and a router that finds
the servers by label through the Kubernetes API. RolloutJobs reference it with `spec.poolRef`
and wait until it is Ready.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from rollout_operator.api.common import (
    MAX_ENV,
    MAX_VOLUMES,
    ApiModel,
    CustomResource,
    EnvVar,
    Quantity,
    ResourceRequirements,
    Scheduling,
    Volume,
    VolumeMount,
    mounts_need_volumes,
    rule,
    x,
)
from rollout_operator.api.crd_info import CrdInfo
from rollout_operator.api.printer_columns import SGLANGPOOL_COLUMNS
from rollout_operator.api.sglangpool_status import SGLangPoolStatus
from rollout_operator.constants import CATEGORY, DEFAULT_SERVER_PORT, MAX_POOL_NAME, ROUTER_PORT
from rollout_runtime.contract import API_VERSION, POOL_KIND, POOL_PLURAL
from rollout_runtime.weights.target import PauseMode

# sglang-router 0.3.2's --policy choices, all of which work with sglang 0.5.23 servers (and ours).
# power_of_two: the servers serve no load endpoint it can read, so it compares the router's own
# in-flight counts (a fair spread, tests/engines/test_router_client.py); it refuses to start with
# fewer than two --worker-urls, but the pool's router uses service discovery, which it accepts.
# manual: routes by the X-SMG-Routing-Key header, which the runtime sets to each sample's session.
RouterPolicy = Literal["cache_aware", "round_robin", "random", "power_of_two", "manual"]
#: Volumes the server pods always (dshm: /dev/shm) or with model.pvc (model: /model) have.
RESERVED_VOLUMES = ("dshm", "model")


class PVCModelSource(ApiModel):
    """A PersistentVolumeClaim that holds the model; mounted read-only at /model."""

    claim_name: str = Field(description="Name of the PVC in the pool's namespace.", min_length=1)
    sub_path: str | None = Field(None, description="Folder inside the volume that holds the model.")
    read_only: bool = Field(True, description="Mount the claim read-only.")


class ModelSource(ApiModel):
    """The model to serve: a path or Hugging Face id the image can read, or a PVC."""

    path: str | None = Field(None, description="--model-path: a local path in the image/volumes or a Hugging Face "
                                               "repo id.", min_length=1)
    pvc: PVCModelSource | None = Field(None, description="Serve the model from a PVC (mounted at /model).")
    served_model_name: str | None = Field(None, description="--served-model-name reported by the servers.")

    model_config = ConfigDict(json_schema_extra=x(validations=[
        rule("has(self.path) != has(self.pvc)", "set exactly one of model.path or model.pvc"),
    ]))


class RouterSpec(ApiModel):
    """The SGLang router in front of the servers (Kubernetes service discovery by pod label)."""

    enabled: bool = Field(True, description="Run a router; without one, the endpoint is the servers' headless "
                                            "Service.")
    policy: RouterPolicy = Field("cache_aware", description="Load-balancing policy. cache_aware keeps prompts that "
                                                            "share a prefix (the samples of a group) on one server; "
                                                            "manual keeps each sample's requests (multi-turn, "
                                                            "continued) on one server by X-SMG-Routing-Key.")
    image: str | None = Field(None, description="Router image (default: the operator's --router-image).")
    replicas: int = Field(1, ge=0, description="Router replicas.")
    port: int = Field(ROUTER_PORT, ge=1, le=65535, description="Router HTTP port.")
    extra_args: list[str] | None = Field(None, description="Extra sglang_router.launch_router arguments.")
    resources: ResourceRequirements | None = Field(None, description="Router container resources.")
    scheduling: Scheduling | None = Field(None, description="Router pod placement (it needs no GPU).")


class WeightsSpec(ApiModel):
    """Weights to serve instead of the model's own: loaded into the running servers over HTTP.

    Changing this never changes the server pod template (that would restart every server): the
    operator pauses each Ready server, loads `path` as `version` and continues it, all servers at
    once, and brings every server that starts later to the same version before it takes traffic.
    """

    path: str = Field(description="Directory with the new weights, as the servers see it (typically a volume shared "
                                  "with the trainer), in a format SGLang's update_weights_from_disk loads.",
                      min_length=1)
    version: int = Field(description="The policy version (e.g. the trainer's step), sent to SGLang as weight_version. "
                                     "The model's own weights are version 0. It may not decrease: a rollback is "
                                     "`rollout-runtime update-weights` or a new pool.", ge=0)
    load_format: str | None = Field(None, description="SGLang load format of path (default: the servers' own, "
                                                      "usually auto).", min_length=1)
    pause_mode: PauseMode = Field("retract", description="Requests in flight during the load. retract: stopped, "
                                                         "their KV cache freed and recomputed under the new weights; "
                                                         "abort: returned at once with partial output "
                                                         "(finish_reason abort); in_place: stopped, KV cache kept "
                                                         "(computed under the old weights), cheapest.")

    model_config = ConfigDict(json_schema_extra=x(validations=[
        rule("self.version >= oldSelf.version", "spec.weights.version may not decrease: the servers already serve "
             "a newer version; to roll back, load the older weights as a new, higher version (or use "
             "rollout-runtime update-weights outside the operator)", field_path=".version"),
    ]))


class SGLangPoolSpec(ApiModel):
    """Desired state of an SGLangPool."""

    engine: Literal["sglang", "simulated"] = Field(
        "sglang", description="sglang runs real SGLang servers; simulated runs `rollout-runtime sim-engine` (no "
                              "model, no GPU needed) for development and load tests.")
    model: ModelSource | None = Field(None, description="The model to serve (required for engine sglang).")
    replicas: int = Field(1, ge=0, description="Number of servers (tensor-parallel groups). Scalable with kubectl "
                                               "scale.")
    gpus_per_replica: int = Field(1, ge=0, le=64, description="GPUs per server; also the tensor-parallel size "
                                                              "(--tp-size). nvidia.com/gpu requests = limits.")
    image: str | None = Field(None, description="Server image (default: the operator's --sglang-image, or its "
                                                "--runtime-image for the simulated engine).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(None, description="Image pull "
                                                                                                   "policy.")
    port: int = Field(DEFAULT_SERVER_PORT, ge=1, le=65535, description="Server HTTP port.")
    extra_args: list[str] | None = Field(None, description="Extra server arguments, e.g. [--mem-fraction-static, "
                                                           "'0.85'].")
    shm_size: Quantity = Field("16Gi", description="Size limit of the memory-backed /dev/shm.")
    startup_timeout_seconds: int = Field(1800, ge=60, description="How long a server may take to load the model "
                                                                  "before it is restarted (startup probe budget).")
    resources: ResourceRequirements | None = Field(None, description="Server resources besides GPUs (cpu, "
                                                                     "memory).")
    env: list[EnvVar] | None = Field(None, description="Extra server environment variables.", max_length=MAX_ENV)
    volumes: list[Volume] | None = Field(None, description="Extra pod volumes (e.g. a Hugging Face cache). The names "
                                                           "dshm and model are the pool's own.",
                                         max_length=MAX_VOLUMES)
    volume_mounts: list[VolumeMount] | None = Field(None, description="Extra server volume mounts (of `volumes`, or "
                                                                      "of dshm / model).", max_length=MAX_VOLUMES)
    scheduling: Scheduling | None = Field(None, description="Server pod placement.")
    router: RouterSpec = Field(default_factory=RouterSpec,  # type: ignore[arg-type]
                               description="The router.",
                               json_schema_extra=x(default={}))
    weights: WeightsSpec | None = Field(None, description="Live weights: a new policy version loaded into the running "
                                                          "servers in place. Absent: the model's own weights "
                                                          "(version 0).")

    model_config = ConfigDict(json_schema_extra=x(validations=[
        rule("self.engine == 'simulated' || has(self.model)", "spec.model is required for engine sglang",
             field_path=".model"),
        rule("self.engine == 'simulated' || self.gpusPerReplica >= 1",
             "engine sglang needs gpusPerReplica >= 1", field_path=".gpusPerReplica"),
        rule("!has(self.resources) || !has(self.resources.limits) || !('nvidia.com/gpu' in self.resources.limits)",
             "set GPUs with spec.gpusPerReplica, not in resources", field_path=".resources"),
        rule("!has(self.resources) || !has(self.resources.requests) || !('nvidia.com/gpu' in self.resources.requests)",
             "set GPUs with spec.gpusPerReplica, not in resources", field_path=".resources"),
        rule(f"!has(self.volumes) || self.volumes.all(v, !(v.name in {list(RESERVED_VOLUMES)}))",
             "the volume names dshm and model are the pool's own (/dev/shm and the model PVC): choose another name",
             field_path=".volumes"),
        mounts_need_volumes(f"{list(RESERVED_VOLUMES[:1])} + (has(self.model) && has(self.model.pvc) ? "
                            f"{list(RESERVED_VOLUMES[1:])} : [])"),
        rule("!has(oldSelf.weights) || has(self.weights)", "spec.weights cannot be removed once set: the servers "
             "serve those weights now; set a new version instead", field_path=".weights"),
    ]))


class SGLangPool(CustomResource):
    """A pool of SGLang inference servers behind an SGLang router."""

    api_version: str = API_VERSION
    kind: str = POOL_KIND
    spec: SGLangPoolSpec
    status: SGLangPoolStatus = Field(default_factory=SGLangPoolStatus)


CRD = CrdInfo(
    kind=POOL_KIND,
    plural=POOL_PLURAL,
    singular="sglangpool",
    short_names=("sgp",),
    categories=(CATEGORY,),
    printer_columns=SGLANGPOOL_COLUMNS,
    scale={"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
           "labelSelectorPath": ".status.selector"},
    root_rules=(
        rule(f"size(self.metadata.name) <= {MAX_POOL_NAME} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
             f"an SGLangPool name must be a DNS label of at most {MAX_POOL_NAME} characters that starts with a letter "
             f"(its Services are named <pool>-server and <pool>-router)"),
    ),
)
