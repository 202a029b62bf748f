"""RolloutJob (`kuberollout.io/v1alpha1`): generate rollout batches against a pool or an endpoint.

The dataset/rollout/reward/filters/eval/output sections are not written here: they are built
from `rollout_runtime.config.RolloutConfig`, whose fields carry `section` and `crd` metadata.
The runtime reads the same sections back with `RolloutConfig.from_sections`, so the CRD, the
operator and the runtime cannot disagree about a setting's name, type, default or bounds.
What this module adds on top is policy the runtime cannot know: which settings are immutable
once a job has started, which are required in a cluster, and the operator-level fields
(poolRef/endpoint, runtime pod settings, suspend, retries, deadlines).
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, create_model

from rollout_operator.api.common import (
    MAX_ENV,
    MAX_VOLUMES,
    ApiModel,
    CustomResource,
    EnvVar,
    ResourceRequirements,
    Scheduling,
    Volume,
    VolumeMount,
    mounts_need_volumes,
    rule,
    x,
)
from rollout_operator.api.crd_info import CrdInfo
from rollout_operator.api.printer_columns import ROLLOUTJOB_COLUMNS
from rollout_operator.api.rolloutjob_status import RolloutJobStatus
from rollout_operator.constants import CATEGORY, MAX_JOB_NAME
from rollout_runtime import config as runtime_config
from rollout_runtime.config import RolloutConfig, section_fields
from rollout_runtime.contract import API_VERSION, JOB_KIND, JOB_PLURAL

# `engine` settings the operator owns: the URL comes from poolRef/endpoint.
OPERATOR_OWNED = {("engine", "url")}

# Changing these mid-run corrupts the job: the committed dataset position indexes into the
# (filtered, shuffled) dataset; the buffer holds groups of samplesPerPrompt; batches and the
# buffer blob live under the output path. CEL transition rules reject such updates.
IMMUTABLE = ("prompt_data", "rollout_shuffle", "rollout_seed", "rollout_max_prompt_len",
             "rollout_batch_size", "n_samples_per_prompt", "output_dir", "output_format")
# Optional in RolloutConfig (slime allows custom data sources) but required in a RolloutJob:
# the data source is not configurable from the spec, and the default one reads this path.
REQUIRED_IN_CLUSTER = ("prompt_data",)
# Settings holding a dotted Python path (pkg.module.function).
DOTTED_PATH_FIELDS = tuple(n for n in section_fields() if n.endswith("_path"))


def _rm_type_rule(schema: dict[str, Any]) -> None:
    """Restrict reward.type to the runtime's built-in rewards (optionally boxed_), with a readable error.

    Evaluated only when a schema is generated, because importing the reward hub pulls in
    math-verify and sympy, which the operator process has no use for.
    """
    from rollout_runtime.rm_hub import BUILTIN_RM_TYPES

    names = sorted(BUILTIN_RM_TYPES)
    schema["maxLength"] = 64
    schema["x-kubernetes-validations"] = [rule(
        "self.matches('^(boxed_)?(" + "|".join(names) + ")$')",
        "spec.reward.type must be a built-in reward type",
        message_expression="\"unknown reward type '\" + self + \"': use one of " + ", ".join(names)
                           + " (optionally with the boxed_ prefix), or set spec.reward.customPath\"",
    )]


def _field_extra(name: str, crd_key: str, section: str) -> tuple[Any, list[dict[str, Any]]]:
    """(json_schema_extra, section-level CEL rules) for one RolloutConfig field."""
    rules: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    info = RolloutConfig.model_fields[name]
    if name in IMMUTABLE:
        extra.update(x(validations=[rule("self == oldSelf", f"spec.{section}.{crd_key} is immutable: changing it "
                                                           f"mid-run would corrupt the committed state; create a new "
                                                           f"RolloutJob instead")]))
        if not info.is_required() and info.default is None and name not in REQUIRED_IN_CLUSTER:
            rules.append(rule(f"has(self.{crd_key}) == has(oldSelf.{crd_key})",
                              f"spec.{section}.{crd_key} cannot be added or removed after creation"))
    if name in DOTTED_PATH_FIELDS:
        extra["pattern"] = runtime_config.DOTTED_PATH_RE.pattern
    if name == "rm_type":
        return _rm_type_rule, rules
    return extra or None, rules


def _section_model(section: str, doc: str, *, extra_fields: dict[str, Any] | None = None,
                   rules: list[dict[str, Any]] | None = None) -> type[ApiModel]:
    """A pydantic model for one spec section, built from RolloutConfig's field metadata."""
    fields: dict[str, Any] = {}
    section_rules = list(rules or [])
    for name, (sec, key) in section_fields().items():
        if sec != section or (sec, key) in OPERATOR_OWNED:
            continue
        info = RolloutConfig.model_fields[name]
        annotation: Any = info.annotation
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        json_extra, field_rules = _field_extra(name, key, section)
        section_rules += field_rules
        description = info.description or ""
        if name in IMMUTABLE:
            description += " Immutable."
        required = info.is_required() or name in REQUIRED_IN_CLUSTER
        if required:
            default: Any = ...
            annotation = annotation if info.is_required() else _non_optional(info.annotation, info.metadata)
        else:
            default = info.get_default(call_default_factory=True)
        fields[name] = (annotation, Field(default, alias=key, description=description, json_schema_extra=json_extra))
    fields.update(extra_fields or {})
    base: type[ApiModel] = ApiModel
    if section_rules:
        base = type(f"_{section.title()}Base", (ApiModel,),
                    {"model_config": ConfigDict(json_schema_extra=x(validations=section_rules))})
    return create_model(f"{section.title()}Section", __base__=base, __doc__=doc, **fields)


def _non_optional(annotation: Any, metadata: list[Any]) -> Any:
    """`X | None` -> X (keeping the field's constraints)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    inner = args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1 else annotation
    return Annotated[(inner, *metadata)] if metadata else inner


class EvalDataset(ApiModel):
    """One evaluation dataset."""

    name: str = Field(description="Name used in eval metrics (e.g. aime).", min_length=1)
    path: str = Field(description="Dataset path or fsspec URL (.jsonl or .parquet).", min_length=1)


DatasetSection = _section_model("dataset", "Prompt dataset and tokenizer (slime's data flags).")
# The CEL twins of RolloutConfig.check_runnable (which the operator runs too, for objects stored
# before these rules): the same rule, given to the user at `kubectl apply`.
RolloutSection = _section_model(
    "rollout", "Sampling and batching (slime's rollout flags).",
    rules=[rule("has(self.numRollouts) || has(self.numEpochs)",
                "set spec.rollout.numRollouts or spec.rollout.numEpochs: how many rollouts to generate"),
           rule(f"has(self.maxResponseLength) || has(self.customGenerateFunctionPath) || "
                f"!(self.rolloutFunctionPath in {sorted(runtime_config.DEFAULT_ROLLOUT_FUNCTIONS)})",
                "spec.rollout.maxResponseLength is required by the default generate function (it is max_new_tokens): "
                "set it (e.g. 1024), or set spec.rollout.customGenerateFunctionPath",
                field_path=".maxResponseLength")])
RewardSection = _section_model(
    "reward", "How samples are scored.",
    rules=[rule("!has(self.type) || !self.type.endsWith('remote_rm') || has(self.url) || has(self.customPath)",
                "spec.reward.type remote_rm needs spec.reward.url (where samples are POSTed for scoring): set it, "
                "or choose another reward type", field_path=".url")])
FiltersSection = _section_model("filters", "Dynamic-sampling, over-sampling and buffer filters (dotted paths).")
EvalSection = _section_model("eval", "Periodic evaluation.", extra_fields={
    "datasets": (list[EvalDataset] | None, Field(None, description="Evaluation datasets.", max_length=64)),
}, rules=[rule("!has(self.interval) || (has(self.datasets) && size(self.datasets) > 0)",
               "spec.eval.interval needs spec.eval.datasets: without an eval dataset nothing is evaluated; add "
               "spec.eval.datasets or remove spec.eval.interval", field_path=".interval")])
OutputSection = _section_model("output", "Where rollout batches are written.")
EngineSection = _section_model("engine", "How the runtime talks to the engine (the URL comes from poolRef or "
                                         "endpoint).")

SECTION_MODELS: dict[str, type[ApiModel]] = {
    "dataset": DatasetSection, "rollout": RolloutSection, "reward": RewardSection, "filters": FiltersSection,
    "eval": EvalSection, "output": OutputSection, "engine": EngineSection,
}


class PoolRef(ApiModel):
    """An SGLangPool in the job's namespace."""

    name: str = Field(description="SGLangPool name.", min_length=1)


class RuntimeSpec(ApiModel):
    """Settings of the runtime pod (the batch Job that runs `rollout-runtime run`)."""

    image: str | None = Field(None, description="Runtime image (default: the operator's --runtime-image).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(None, description="Image pull "
                                                                                                   "policy.")
    image_pull_secrets: list[str] | None = Field(None, description="Names of image pull Secrets.")
    extra_args: list[str] | None = Field(None, description="Extra `rollout-runtime run` flags in slime's spelling "
                                                           "(e.g. [--rollout-num-engines, '4']) for settings the spec "
                                                           "does not expose.")
    resources: ResourceRequirements | None = Field(None, description="Runtime container resources.")
    env: list[EnvVar] | None = Field(None, description="Extra environment variables.", max_length=MAX_ENV)
    volumes: list[Volume] | None = Field(None, description="Pod volumes (e.g. the PVC holding the dataset and "
                                                           "outputs).", max_length=MAX_VOLUMES)
    volume_mounts: list[VolumeMount] | None = Field(None, description="Runtime container volume mounts (of "
                                                                      "`volumes`).", max_length=MAX_VOLUMES)
    service_account_name: str | None = Field(None, description="Run as this ServiceAccount instead of the one the "
                                                               "operator creates; the operator binds the runtime's "
                                                               "Role to it.")
    scheduling: Scheduling | None = Field(None, description="Runtime pod placement.")

    model_config = ConfigDict(json_schema_extra=x(validations=[mounts_need_volumes()]))


class RolloutJobSpec(ApiModel):
    """Desired state of a RolloutJob."""

    pool_ref: PoolRef | None = Field(None, description="The SGLangPool to generate with (the job waits until it is "
                                                       "Ready). Exactly one of poolRef and endpoint.")
    endpoint: str | None = Field(None, description="URL of an SGLang router or engine outside kuberollout. Exactly "
                                                   "one of poolRef and endpoint.",
                                 json_schema_extra=x(pattern="^https?://.+"))
    dataset: DatasetSection = Field(description=DatasetSection.__doc__)  # type: ignore[valid-type]
    rollout: RolloutSection = Field(description=RolloutSection.__doc__)  # type: ignore[valid-type]
    reward: RewardSection = Field(default_factory=RewardSection, description=RewardSection.__doc__,  # type: ignore
                                  json_schema_extra=x(default={}))
    filters: FiltersSection = Field(default_factory=FiltersSection, description=FiltersSection.__doc__,  # type: ignore
                                    json_schema_extra=x(default={}))
    eval: EvalSection = Field(default_factory=EvalSection, description=EvalSection.__doc__,  # type: ignore
                              json_schema_extra=x(default={}))
    output: OutputSection = Field(default_factory=OutputSection, description=OutputSection.__doc__,  # type: ignore
                                  json_schema_extra=x(default={}))
    engine: EngineSection = Field(default_factory=EngineSection, description=EngineSection.__doc__,  # type: ignore
                                  json_schema_extra=x(default={}))
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description=RuntimeSpec.__doc__,  # type: ignore[arg-type]
                                 json_schema_extra=x(default={}))
    suspend: bool = Field(False, description="Stop the runtime pod and keep the committed state; setting it back "
                                             "to false resumes from the last commit.")
    backoff_limit: int = Field(3, ge=0, description="Retries after a failed attempt; each retry is a new Job that "
                                                    "resumes from the last commit.")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Fail the job once it has been running "
                                                                        "this long (counted from status.startTime; "
                                                                        "not retried).")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description="Delete the RolloutJob (and its Jobs "
                                                                           "and state ConfigMap) this long after it "
                                                                           "succeeded or failed.")

    model_config = ConfigDict(json_schema_extra=x(validations=[
        rule("has(self.poolRef) != has(self.endpoint)", "set exactly one of spec.poolRef or spec.endpoint"),
    ]))


class RolloutJob(CustomResource):
    """Rollout generation with a pool of SGLang servers, checkpointed in a ConfigMap."""

    api_version: str = API_VERSION
    kind: str = JOB_KIND
    spec: RolloutJobSpec
    status: RolloutJobStatus = Field(default_factory=RolloutJobStatus)


@functools.cache
def section_keys() -> dict[str, tuple[str, ...]]:
    """section -> its camelCase keys (for tests and docs)."""
    return {s: tuple(m.model_json_schema(by_alias=True)["properties"]) for s, m in SECTION_MODELS.items()}


CRD = CrdInfo(
    kind=JOB_KIND,
    plural=JOB_PLURAL,
    singular="rolloutjob",
    short_names=("rj",),
    categories=(CATEGORY,),
    printer_columns=ROLLOUTJOB_COLUMNS,
    root_rules=(
        rule(f"size(self.metadata.name) <= {MAX_JOB_NAME} && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
             f"a RolloutJob name must be a DNS label of at most {MAX_JOB_NAME} characters (its Jobs are named "
             f"<name>-<attempt>)"),
    ),
)
