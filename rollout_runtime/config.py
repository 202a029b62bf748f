"""The `args` object: slime's rollout flags as one validated pydantic model.

Attribute names are slime's flag names in snake_case, so a generate function, reward
function or filter written for slime reads the same attributes here. Unknown keys and
wrong types are rejected with the key named: a typo in a config must never pass
silently and run with a default. Code may still set new attributes on a built config
(slime plugins do), and the keys of the YAML at `custom_config_path` become attributes.

Each field that a `RolloutJob` exposes carries `section` and `crd` metadata; the operator
builds the CRD's dataset/rollout/reward/filters/eval/output sections from that metadata,
so there is exactly one hand-written list of settings.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from rollout_runtime.contract import CONFIG_SECTIONS
from rollout_runtime.eval_config import EvalConfigError, EvalDatasetConfig, resolve_eval_datasets
from rollout_runtime.slime_flags import add_trainer_flags, trainer_defaults, trainer_dests


#: Rollout functions that generate with the default per-sample generate (which needs rollout_max_response_len).
DEFAULT_ROLLOUT_FUNCTIONS = frozenset({"rollout_runtime.sglang_rollout.generate_rollout",
                                       "rollout_runtime.rollout.batch_loop.generate_rollout",
                                       "slime.rollout.sglang_rollout.generate_rollout"})  # slime's name, mapped


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the fix."""


def _f(default: Any = ..., *, section: str | None = None, crd: str | None = None, description: str = "", **kw: Any) -> Any:
    extra = {}
    if section:
        assert section in CONFIG_SECTIONS, section
        extra = {"section": section, "crd": crd}
    return Field(default, description=description, json_schema_extra=extra or None, **kw)


class RolloutConfig(BaseModel):
    """slime's rollout `args`, validated.

    Built from keyword arguments, a YAML file (`from_yaml`), slime-style CLI flags
    (`from_cli`), or a RolloutJob spec's sections (`from_sections`).
    """

    model_config = ConfigDict(extra="allow", validate_default=True, protected_namespaces=())

    # --- engines and router ---------------------------------------------------------
    hf_checkpoint: str | None = _f(None, section="dataset", crd="tokenizer",
                                   description="Tokenizer (HF checkpoint) path used to tokenize prompts and decode responses.")
    sglang_router_ip: str | None = _f(None, description="Router (or single engine) host.")
    sglang_router_port: int | None = _f(None, description="Router (or single engine) port.")
    sglang_router_url: str | None = _f(None, section="engine", crd="url",
                                       description="Full router or engine URL; overrides sglang_router_ip/port.")
    sglang_server_concurrency: int = _f(512, section="rollout", crd="concurrency", gt=0,
                                        description="Requests in flight per engine; the semaphore is this times the engine count.")
    rollout_num_engines: int | None = _f(None, section="engine", crd="numEngines", ge=1,
                                         description="Number of engines behind the router (for the concurrency limit). Default 1.")
    router_policy: Literal["random", "round_robin", "cache_aware", "power_of_two", "manual"] | None = _f(
        None, description="The router's policy (sglang-router 0.3.2's --policy choices), for the record: every "
                          "/generate carries X-SMG-Routing-Key = the sample's session id, which manual routes by "
                          "(sticky sessions) and the others ignore.")
    sglang_enable_deterministic_inference: bool = _f(False, section="rollout", crd="deterministic",
                                                     description="Send a per-sample sampling_seed derived from rollout_seed.")
    http_max_retries: int = _f(5, section="engine", crd="maxRetries", ge=0,
                               description="Retries of a /generate call on connection errors and 5xx (never on 4xx).")
    http_retry_backoff: float = _f(0.5, ge=0, description="First retry delay in seconds; doubles per retry, capped at 30 s.")
    http_request_timeout: float | None = _f(None, section="engine", crd="requestTimeoutSeconds", gt=0,
                                            description="Per-request timeout for /generate in seconds (none by default).")
    abort_scope: Literal["all", "own"] = _f("all", section="rollout", crd="abortScope",
                                            description="How a rollout stops its stragglers: all aborts every request "
                                                        "on every worker (slime); own aborts only this runtime's "
                                                        "requests, by rid, for engine pools shared by several jobs.")
    abort_poll_interval: float = _f(0.5, gt=0, description="Seconds between /v1/loads polls while waiting for aborted engines to go idle.")
    abort_wait_timeout: float = _f(60.0, gt=0, description="Give up waiting for engines to go idle after this many seconds.")

    # --- dataset --------------------------------------------------------------------
    prompt_data: str | None = _f(None, section="dataset", crd="path",
                                 description="Prompt dataset: a .jsonl or .parquet path or fsspec URL, optional @[start:end] row slice.")
    input_key: str = _f("input", section="dataset", crd="inputKey", description="Row key holding the prompt (string or chat messages).")
    label_key: str | None = _f(None, section="dataset", crd="labelKey", description="Row key holding the label.")
    metadata_key: str = _f("metadata", section="dataset", crd="metadataKey", description="Row key holding per-row metadata.")
    tool_key: str = _f("tools", section="dataset", crd="toolKey", description="Row key holding tool definitions for the chat template.")
    multimodal_keys: dict[str, str] | None = _f(None, description="Media type -> row key, e.g. {\"image\": \"images\"}; "
                                                                  "prompts become chat messages with image parts, rendered "
                                                                  "with the processor's chat template; images go to SGLang "
                                                                  "as image_data.")
    apply_chat_template: bool = _f(False, section="dataset", crd="applyChatTemplate",
                                   description="Render prompts with the tokenizer's chat template.")
    apply_chat_template_kwargs: dict[str, Any] = _f({}, section="dataset", crd="chatTemplateKwargs",
                                                    description="Extra keyword arguments for apply_chat_template.")
    rollout_max_prompt_len: int | None = _f(None, section="dataset", crd="maxPromptLength", gt=0,
                                            description="Drop prompts longer than this many tokens.")
    rollout_max_context_len: int | None = _f(None, gt=0, description="Context length: max_new_tokens is capped to it minus "
                                                                     "the sample's tokens; default: what the servers report "
                                                                     "(max_model_len of GET /v1/models). Also defaults "
                                                                     "rollout_max_prompt_len to it minus 1.")
    rollout_shuffle: bool = _f(False, section="dataset", crd="shuffle", description="Shuffle prompts each epoch (seeded).")
    rollout_seed: int = _f(42, section="dataset", crd="seed", description="Shuffle seed and base of deterministic sampling seeds.")
    rollout_global_dataset: bool = _f(True, description="Read prompts through the data source (slime's default).")
    data_source_path: str = _f("rollout_runtime.data_source.RolloutDataSourceWithBuffer",
                               description="Data source class, built as cls(args).")

    # --- rollout ---------------------------------------------------------------------
    rollout_batch_size: int = _f(..., section="rollout", crd="batchSize", gt=0, description="Prompt groups per rollout.")
    n_samples_per_prompt: int = _f(1, section="rollout", crd="samplesPerPrompt", gt=0, description="Samples per prompt group.")
    num_rollout: int | None = _f(None, section="rollout", crd="numRollouts", ge=0, description="Number of rollouts to generate.")
    num_epoch: int | None = _f(None, section="rollout", crd="numEpochs", gt=0,
                               description="Epochs over the dataset; used when numRollouts is unset.")
    over_sampling_batch_size: int | None = _f(None, section="rollout", crd="overSamplingBatchSize", gt=0,
                                              description="Groups fetched per refill wave; may be smaller than the batch.")
    rollout_max_response_len: int | None = _f(None, section="rollout", crd="maxResponseLength", gt=0,
                                              description="max_new_tokens per sample; required by the default generate function.")
    rollout_temperature: float = _f(1.0, section="rollout", crd="temperature", gt=0, description="Sampling temperature (> 0).")
    rollout_top_p: float = _f(1.0, section="rollout", crd="topP", gt=0, le=1, description="Nucleus sampling p in (0, 1].")
    rollout_top_k: int = _f(-1, section="rollout", crd="topK", description="Top-k; -1 means all tokens.")
    rollout_stop: list[str] | None = _f(None, section="rollout", crd="stop", description="Stop strings.")
    rollout_stop_token_ids: list[int] | None = _f(None, section="rollout", crd="stopTokenIds", description="Stop token ids.")
    rollout_skip_special_tokens: bool = _f(False, section="rollout", crd="skipSpecialTokens",
                                           description="Skip special tokens when the engine detokenizes.")
    partial_rollout: bool = _f(False, section="rollout", crd="partialRollout",
                               description="Recycle groups unfinished at the end of a rollout into the buffer; continue them later.")
    continuous_refill: bool = _f(False, section="rollout", crd="continuousRefill",
                                 description="With partialRollout: keep overSamplingBatchSize groups in flight until the "
                                             "batch is full, so engines never idle on a batch's long tail (unfinished "
                                             "groups are recycled, not wasted). Off: slime's refill rule.")
    mask_offpolicy_in_partial_rollout: bool = _f(False, section="rollout", crd="maskOffPolicy",
                                                 description="Zero the loss mask of tokens generated before a partial-rollout resume.")
    max_staleness: int | None = _f(None, section="rollout", crd="maxStaleness", ge=0,
                                   description="Bounded staleness (eta): rollout N admits a new group only while the "
                                               "served weight version is at least N - maxStaleness (training step N "
                                               "consumes rollout N and makes version N+1), and commits no sample with "
                                               "tokens from an older version. 0 is synchronous; unset runs free.")
    stale_group_policy: Literal["regenerate", "drop"] = _f(
        "regenerate", section="rollout", crd="staleGroupPolicy",
        description="With maxStaleness: a group holding tokens older than the bound (a recycled partial group, or "
                    "one served by a server behind the others) is regenerated from its prompt, or dropped; either "
                    "way its samples count as stale.")
    sglang_pool: str | None = _f(None, description="SGLangPool whose status.weightVersion is the served version "
                                                   "(cluster mode; the operator passes it from spec.poolRef). Unset: "
                                                   "the lowest weight_version in /model_info of the engines.")
    weight_poll_interval: float | None = _f(None, gt=0, description="Seconds between reads of the served weight "
                                                                    "version while waiting for a newer one "
                                                                    "(maxStaleness); default 0.05 from the engines, "
                                                                    "0.5 from an SGLangPool's status.")
    custom_generate_function_path: str | None = _f(None, section="rollout", crd="customGenerateFunctionPath",
                                                   description="Dotted path of a per-sample generate(args, sample, sampling_params).")
    rollout_function_path: str = _f("rollout_runtime.sglang_rollout.generate_rollout", section="rollout",
                                    crd="rolloutFunctionPath",
                                    description="Dotted path of the whole rollout function (slime's --rollout-function-path).")
    rollout_sample_hook_path: list[str] = _f([], description="Per-sample hooks run before the reward.")
    rollout_sample_filter_path: str | None = _f(None, description="f(args, groups) marking sample.remove_sample.")
    rollout_all_samples_process_path: str | None = _f(None, description="f(args, all_groups, data_source) after a rollout.")
    start_rollout_id: int | None = _f(None, ge=0, description="First rollout id; defaults to the last committed id + 1, else 0.")

    # --- reward --------------------------------------------------------------------
    rm_type: str | None = _f(None, section="reward", crd="type",
                             description="Built-in reward: math, deepscaler, dapo, f1, gpqa, remote_rm, random (optional boxed_ prefix).")
    rm_url: str | None = _f(None, section="reward", crd="url", description="Remote reward model URL (rm_type remote_rm).")
    custom_rm_path: str | None = _f(None, section="reward", crd="customPath", description="Dotted path of async rm(args, sample).")
    group_rm: bool = _f(False, section="reward", crd="groupRM", description="Score each group once, after it is generated.")
    reward_key: str | None = _f(None, section="reward", crd="rewardKey", description="Key of the scalar in a dict reward.")
    rm_timeout: float = _f(60.0, section="reward", crd="timeoutSeconds", gt=0, description="Timeout of one remote reward call.")
    rm_max_retries: int = _f(3, section="reward", crd="maxRetries", ge=0, description="Retries of a failed remote reward call.")
    reward_executor: Literal["local", "ray"] = _f("local", section="reward", crd="executor",
                                                  description="Where synchronous CPU-heavy reward code runs: threads, or Ray tasks.")

    # --- filters --------------------------------------------------------------------
    dynamic_sampling_filter_path: str | None = _f(None, section="filters", crd="dynamicSampling",
                                                  description="Per-group keep/drop filter, e.g. ...check_reward_nonzero_std.")
    over_sampling_filter_path: str | None = _f(None, section="filters", crd="overSampling",
                                               description="Filter over the over-sampled groups, e.g. ...sort_by_reward_std.")
    over_sampling_filter_input_size: int | None = _f(None, section="filters", crd="overSamplingInputSize", gt=0,
                                                     description="Groups collected before the over-sampling filter picks the batch.")
    buffer_filter_path: str | None = _f(None, section="filters", crd="buffer",
                                        description="Chooses which buffered groups are reused; default FIFO.")

    # --- eval -----------------------------------------------------------------------
    eval_prompt_data: list[str] | None = _f(None, description="name path [name path ...]; a single path is named 'aime'.")
    eval_interval: int | None = _f(None, section="eval", crd="interval", gt=0, description="Evaluate every N rollouts.")
    n_samples_per_eval_prompt: int = _f(1, section="eval", crd="samplesPerPrompt", gt=0, description="Samples per eval prompt.")
    eval_temperature: float | None = _f(None, section="eval", crd="temperature", ge=0, description="Defaults to the rollout's.")
    eval_top_p: float | None = _f(None, section="eval", crd="topP", gt=0, le=1, description="Defaults to the rollout's.")
    eval_top_k: int | None = _f(None, section="eval", crd="topK", description="Defaults to the rollout's.")
    eval_max_response_len: int | None = _f(None, section="eval", crd="maxResponseLength", gt=0, description="Defaults to the rollout's.")
    eval_max_prompt_len: int | None = _f(None, gt=0, description="Drop eval prompts longer than this.")
    eval_min_new_tokens: int | None = _f(None, ge=0, description="min_new_tokens for eval requests.")
    eval_input_key: str | None = _f(None, description="Defaults to input_key.")
    eval_label_key: str | None = _f(None, description="Defaults to label_key.")
    eval_tool_key: str | None = _f(None, description="Defaults to tool_key.")
    eval_reward_key: str | None = _f(None, description="Defaults to reward_key.")
    skip_eval_before_train: bool = _f(False, section="eval", crd="skipBeforeStart", description="Do not evaluate before rollout 0.")

    # --- SFT ------------------------------------------------------------------------
    loss_mask_type: str = _f("qwen", description="Accepted for slime compatibility; masks are computed for any chat template.")

    # --- state and output ---------------------------------------------------------------
    save: str | None = _f(None, description="Folder for the local state store (slime's --save).")
    load: str | None = _f(None, description="Folder to resume from; defaults to save.")
    custom_config_path: str | None = _f(None, description="YAML whose keys become attributes of args, for plugins.")
    state_backend: Literal["file", "configmap"] = _f("file", description="Where commits go: a JSON file under save, or a ConfigMap.")
    state_configmap: str | None = _f(None, description="ConfigMap name for state_backend=configmap (<job>-state).")
    state_namespace: str | None = _f(None, description="Namespace of the state ConfigMap; defaults to the pod's namespace.")
    state_blob_dir: str | None = _f(None, description="Where large state (the buffer) is offloaded; default {output_dir}/.state.")
    output_dir: str = _f("./outputs", section="output", crd="path", description="Where rollout batches are written (path or fsspec URL).")
    output_format: Literal["jsonl", "parquet"] = _f("jsonl", section="output", crd="format", description="Batch file format.")
    output_keep_last: int | None = _f(None, section="output", crd="keepLast", ge=0,
                                      description="Retention: keep the last N committed batches and delete older ones "
                                                  "once the trainer has acked them (RolloutReader.ack); a batch not yet "
                                                  "acked is never deleted. Unset: keep every batch.")

    # --- slime flags added for slime compatibility (issue 13) ----------------------------------
    eval_config: str | None = _f(None, description="OmegaConf YAML/JSON with eval.defaults and eval.datasets (per-dataset "
                                                   "rm_type, custom_rm_path, generate function, keys, sampling); "
                                                   "overrides eval_prompt_data.")
    eval_function_path: str | None = _f(None, description="Rollout function used for eval; defaults to rollout_function_path.")
    eval_max_context_len: int | None = _f(None, gt=0, description="Context length for eval; defaults to rollout_max_context_len.")
    custom_eval_rollout_log_function_path: str | None = _f(
        None, description="f(rollout_id, args, data, extra_metrics) -> bool after each eval; True skips the default log.")
    rollout_num_gpus: int | None = _f(None, ge=0, description="GPUs of the engine pool; with rollout_num_gpus_per_engine it "
                                                             "gives the engine count that sizes the concurrency limit.")
    rollout_num_gpus_per_engine: int = _f(1, gt=0, description="GPUs per engine (tensor parallel size).")
    custom_rollout_log_function_path: str | None = _f(
        None, description="f(rollout_id, args, samples, rollout_extra_metrics, rollout_time) -> bool after each "
                          "rollout; True skips the default log.")

    _eval_datasets: list[EvalDatasetConfig] | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields and k not in trainer_dests()]
            if unknown:
                raise ConfigError("; ".join(_unknown_key_message(k, cls.model_fields) for k in unknown))
        return data

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "RolloutConfig":
        if self.over_sampling_filter_input_size is not None and self.over_sampling_filter_input_size < self.rollout_batch_size:
            raise ConfigError(
                f"over_sampling_filter_input_size ({self.over_sampling_filter_input_size}) must be >= rollout_batch_size "
                f"({self.rollout_batch_size}): the over-sampling filter picks the batch from at least that many groups"
            )
        if self.continuous_refill and not self.partial_rollout:
            raise ConfigError("continuous_refill needs partial_rollout: without it the extra in-flight groups would be "
                              "thrown away at the end of each rollout; set partial_rollout or unset continuous_refill")
        if self.rollout_max_prompt_len is None and self.rollout_max_context_len is not None:
            self.rollout_max_prompt_len = self.rollout_max_context_len - 1
        if self.load is None and self.save is not None:
            self.load = self.save
        self._derive_slime_defaults()
        if self.custom_config_path:
            path = Path(self.custom_config_path)
            if not path.is_file():
                raise ConfigError(f"custom_config_path: no such file {path}")
            extra = yaml.safe_load(path.read_text()) or {}
            if not isinstance(extra, dict):
                raise ConfigError(f"custom_config_path: {path} must hold a mapping of keys to values")
            for key, value in extra.items():
                setattr(self, key, value)
        return self

    def _derive_slime_defaults(self) -> None:
        """Defaults slime derives at parse time. Stored without marking the field as set, so a config dumped with
        exclude_unset and built again derives them afresh (a later rollout_batch_size still moves them)."""
        derived = {
            "over_sampling_batch_size": self.over_sampling_batch_size or self.rollout_batch_size,
            "eval_reward_key": self.eval_reward_key or self.reward_key,
            "eval_function_path": self.eval_function_path or self.rollout_function_path,
            "eval_max_context_len": self.eval_max_context_len or self.rollout_max_context_len,
        }
        if self.sglang_router_url and not (self.sglang_router_ip and self.sglang_router_port):
            # slime-written generate functions build f"http://{args.sglang_router_ip}:{args.sglang_router_port}/..."
            from urllib.parse import urlsplit

            parts = urlsplit(self.sglang_router_url)
            derived["sglang_router_ip"] = self.sglang_router_ip or parts.hostname
            derived["sglang_router_port"] = self.sglang_router_port or parts.port or (443 if parts.scheme == "https" else 80)
        for name, value in derived.items():
            self.__dict__[name] = value
        try:
            self._eval_datasets = resolve_eval_datasets(self)
        except EvalConfigError as exc:
            raise ConfigError(str(exc)) from None
        if self.eval_interval is not None and not self._eval_datasets:
            raise ConfigError("eval_interval needs eval datasets: set eval_prompt_data (eval.datasets) or eval_config")

    @property
    def eval_datasets(self) -> list[EvalDatasetConfig]:
        """slime's `args.eval_datasets`: one EvalDatasetConfig per eval dataset, settings resolved."""
        return self._eval_datasets or []

    @eval_datasets.setter
    def eval_datasets(self, value: list[EvalDatasetConfig]) -> None:
        self._eval_datasets = list(value)

    def __getattr__(self, name: str) -> Any:
        """slime's args carry every trainer flag with its default; so do these (see slime_flags.py)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            defaults = trainer_defaults()
            if name in defaults:
                return defaults[name]
            raise

    def check_runnable(self) -> None:
        """Settings that other settings make necessary for a run: refuse before it starts.

        Not a validator: partial configs are fine for the parts that do not run rollouts (a
        plugin's tests, slime's own args). `rollout-runtime run` calls this before it starts,
        and the operator calls it before it creates a RolloutJob's pod (spec_validation), so a
        job missing one of these fails at once, naming the spec field, instead of mid-run. (An
        eval_interval without eval datasets is a validator: slime refuses it at parse time too.)
        """
        if (self.rm_type or "").removeprefix("boxed_") == "remote_rm" and not self.rm_url and not self.custom_rm_path:
            raise ConfigError(f"rm_type {self.rm_type} needs rm_url, the URL the samples are POSTed to for scoring: "
                              f"set rm_url, or choose another rm_type")
        if (self.rollout_max_response_len is None and self.custom_generate_function_path is None
                and self.rollout_function_path in DEFAULT_ROLLOUT_FUNCTIONS):
            raise ConfigError("rollout_max_response_len must be set: the default generate function sends it as "
                              "max_new_tokens; set it (e.g. 1024), or set custom_generate_function_path to a "
                              "generate function that chooses its own")

    # ----------------------------------------------------------------------- builders
    @classmethod
    def build(cls, data: dict[str, Any]) -> "RolloutConfig":
        """Validate a dict; errors come back as one ConfigError naming each key."""
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "RolloutConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a rollout config must be a mapping of slime flag names to values")
        data = {k.replace("-", "_"): v for k, v in data.items()}
        data.update(overrides)
        return cls.build(data)

    @classmethod
    def from_cli(cls, argv: list[str], base: dict[str, Any] | None = None) -> "RolloutConfig":
        """Parse slime-style flags (`--rollout-batch-size 8 --partial-rollout ...`)."""
        values = dict(base or {})
        values.update(parse_cli_flags(argv))
        return cls.build(values)

    @classmethod
    def from_sections(cls, sections: dict[str, dict[str, Any]], **overrides: Any) -> "RolloutConfig":
        """Build from a RolloutJob spec's camelCase sections (see `section_fields`)."""
        data: dict[str, Any] = {}
        index = {(s, crd): name for name, (s, crd) in section_fields().items()}
        for section, values in sections.items():
            values = dict(values or {})
            if section == "eval" and "datasets" in values:
                data["eval_prompt_data"] = [x for d in values.pop("datasets") or [] for x in (d["name"], d["path"])]
            for key, value in values.items():
                name = index.get((section, key))
                if name is None:
                    known = [c for (s, c) in index if s == section]
                    hint = difflib.get_close_matches(key, known, n=1)
                    raise ConfigError(
                        f"spec.{section}.{key}: unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    )
                data[name] = value
        data.update(overrides)
        return cls.build(data)

    # ------------------------------------------------------------------------ derived
    @property
    def router_url(self) -> str:
        """Base URL of the router or engine, from sglang_router_url or ip/port."""
        if self.sglang_router_url:
            return self.sglang_router_url.rstrip("/")
        if not self.sglang_router_ip or not self.sglang_router_port:
            raise ConfigError("sglang_router_ip/sglang_router_port (or sglang_router_url) must be set to reach an engine")
        host = self.sglang_router_ip
        return host.rstrip("/") if host.startswith("http") else f"http://{host}:{self.sglang_router_port}"

    def rollouts_to_run(self, dataset_len: int) -> int:
        """slime's rule: num_rollout, else num_epoch * len(dataset) // rollout_batch_size."""
        if self.num_rollout is not None:
            return self.num_rollout
        if self.num_epoch is not None:
            return self.num_epoch * dataset_len // self.rollout_batch_size
        raise ConfigError("num_rollout or num_epoch must be set: say how many rollouts to generate")

    def to_dict(self) -> dict[str, Any]:
        """Known fields plus attributes set by plugins, JSON-safe."""
        return json.loads(self.model_dump_json())


def option(args: Any, name: str) -> Any:
    """`args.<name>`, or RolloutConfig's default for it when `args` does not carry it.

    For the settings this runtime adds to slime's (`abort_scope`, `http_max_retries`, `rm_timeout`,
    ...) and for flags current slime has dropped (`over_sampling_filter_path`): our rollout
    function is a drop-in for slime's `--rollout-function-path`, so `args` may be slime's own
    argparse namespace, which lacks them. The default still lives only on the field. Settings that
    slime's args carry are read as plain `args.<name>`.
    """
    try:
        return getattr(args, name)
    except AttributeError:
        return RolloutConfig.model_fields[name].get_default(call_default_factory=True)


# ---------------------------------------------------------------------------- helpers


def _unknown_key_message(key: str, fields: dict[str, Any]) -> str:
    hint = difflib.get_close_matches(str(key), list(fields), n=1)
    msg = f"unknown config key {key!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    else:
        msg += " (plugin settings belong in the YAML at custom_config_path)"
    return msg


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "missing":
            parts.append(f"{loc}: required, set it in the config or with --{loc.replace('_', '-')}")
        elif err["loc"]:
            parts.append(f"{loc}: {msg} (got {err.get('input')!r})")
        else:
            parts.append(msg)
    return "; ".join(parts)


def section_fields() -> dict[str, tuple[str, str]]:
    """field name -> (section, camelCase CRD key), for every field a RolloutJob exposes."""
    out = {}
    for name, info in RolloutConfig.model_fields.items():
        extra = info.json_schema_extra or {}
        if isinstance(extra, dict) and extra.get("section"):
            out[name] = (extra["section"], extra["crd"] or _camel(name))
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_optional) for `X | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def parse_cli_flags(argv: list[str]) -> dict[str, Any]:
    """slime-style flags to a dict: bools are store_true, lists take several values, dicts take JSON."""
    parser = argparse.ArgumentParser(prog="rollout-runtime", add_help=False, allow_abbrev=False)
    for name, info in RolloutConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        inner, _ = _unwrap(info.annotation)
        origin = typing.get_origin(inner)
        if inner is bool:
            parser.add_argument(flag, dest=name, action="store_const", const=True, default=argparse.SUPPRESS)
            parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_const", const=False,
                                default=argparse.SUPPRESS)
        elif origin is list:
            parser.add_argument(flag, dest=name, nargs="+", default=argparse.SUPPRESS)
        elif origin is dict:
            parser.add_argument(flag, dest=name, type=_json_arg(name), default=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, dest=name, default=argparse.SUPPRESS)
    # The rest of a slime command line (trainer, Megatron, --sglang-*, --router-*, and slime's own spellings
    # such as --disable-rollout-global-dataset) becomes plain attributes; see slime_flags.py.
    add_trainer_flags(parser)
    known, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [u for u in unknown if u.startswith("--")]
        bad = flags[0] if flags else unknown[0]
        names = list(parser._option_string_actions)
        hint = difflib.get_close_matches(bad.split("=")[0], names, n=1)
        raise ConfigError(f"unknown flag {bad}" + (f" (did you mean {hint[0]}?)" if hint else ""))
    return vars(known)


def _json_arg(name: str):
    def parse(text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')} takes JSON: {exc}") from None

    return parse


DOTTED_PATH_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


def is_dotted_path(value: str) -> bool:
    return bool(DOTTED_PATH_RE.match(value))
