"""Eval datasets as slime configures them: `--eval-config` (defaults + per-dataset overrides) or name/path pairs.

`args.eval_datasets` is the list of `EvalDatasetConfig` that slime code iterates. Each setting resolves as in
slime: the dataset's own entry, else `eval.defaults`, else the command-line fallbacks (`eval_temperature`, then
`rollout_temperature`, ...). An `--eval-config` file is OmegaConf YAML or JSON:

    eval:
      defaults: {n_samples_per_eval_prompt: 4, temperature: 0.6}
      datasets:
        - {name: gsm8k, path: gsm8k.jsonl, rm_type: math}
        - {name: qa, path: qa.jsonl, custom_rm_path: my_pkg.rm.qa_reward, max_response_len: 64}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["EvalDatasetConfig", "build_eval_dataset_configs", "ensure_dataset_list", "resolve_eval_datasets",
           "EvalConfigError"]


class EvalConfigError(ValueError):
    """An eval config that cannot run; the message names the dataset and key."""


# setting -> args attributes tried in order when neither the dataset nor eval.defaults sets it
ARG_FALLBACKS: dict[str, tuple[str, ...]] = {
    "n_samples_per_eval_prompt": ("n_samples_per_eval_prompt", "n_samples_per_prompt"),
    "temperature": ("eval_temperature", "rollout_temperature"),
    "top_p": ("eval_top_p", "rollout_top_p"),
    "top_k": ("eval_top_k", "rollout_top_k"),
    "max_response_len": ("eval_max_response_len", "rollout_max_response_len"),
    "min_eval_samples": (),
    "stop": ("rollout_stop",),
    "stop_token_ids": ("rollout_stop_token_ids",),
    "min_new_tokens": ("eval_min_new_tokens",),
    "input_key": ("eval_input_key", "input_key"),
    "label_key": ("eval_label_key", "label_key"),
    "tool_key": ("eval_tool_key", "tool_key"),
    "metadata_key": ("metadata_key",),
    "multimodal_keys": ("multimodal_keys",),
    "apply_chat_template": ("apply_chat_template",),
    "apply_chat_template_kwargs": ("apply_chat_template_kwargs",),
    "custom_rm_path": ("eval_custom_rm_path", "custom_rm_path"),
}


@dataclass
class EvalDatasetConfig:
    """One eval dataset and its overrides (slime's fields, same names and defaults)."""

    name: str
    path: str
    rm_type: str | None = None
    custom_rm_path: str | None = None
    input_key: str | None = None
    label_key: str | None = None
    tool_key: str | None = None
    metadata_key: str | None = None
    multimodal_keys: dict[str, str] | None = None
    apply_chat_template: bool | None = None
    apply_chat_template_kwargs: dict[str, Any] | None = None
    n_samples_per_eval_prompt: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_response_len: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    min_new_tokens: int | None = None
    repetition_penalty: float | None = None
    skip_special_tokens: bool | None = None
    no_stop_trim: bool | None = None
    custom_generate_function_path: str | None = None
    # declared by slime but not read by its eval loop either
    app_service: str | None = None
    eval_task_timeout: int | None = None
    min_eval_samples: int | None = None
    eval_early_stop_remaining: int | None = None
    eval_early_stop_idle_timeout: float | None = None
    message_processor: dict[str, Any] | None = None
    reward_model: dict[str, Any] | None = None
    remote_environment: dict[str, Any] | None = None
    metadata_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metadata_overrides is None:
            self.metadata_overrides = {}
        if not isinstance(self.metadata_overrides, dict):
            raise EvalConfigError(f"eval dataset {self.name!r}: metadata_overrides must be a mapping")
        if self.min_eval_samples is not None and self.min_eval_samples <= 0:
            raise EvalConfigError(f"eval dataset {self.name!r}: min_eval_samples must be positive when set")

    @property
    def cache_key(self) -> tuple[Any, ...]:
        return (self.name, self.path, self.input_key, self.label_key, self.tool_key, self.metadata_key)

    def inject_metadata(self, sample_metadata: Any) -> dict[str, Any]:
        """The sample's metadata with this dataset's rm_type and metadata_overrides applied."""
        metadata = dict(sample_metadata) if isinstance(sample_metadata, dict) else {}
        if self.rm_type is not None:
            metadata["rm_type"] = self.rm_type
        metadata.update(self.metadata_overrides)
        return metadata


FIELD_NAMES = frozenset(f.name for f in fields(EvalDatasetConfig))


def ensure_dataset_list(config: Any) -> list[dict[str, Any]]:
    """eval.datasets as a list of dicts: a list with `name`s, or a mapping keyed by name."""
    if config is None:
        return []
    if isinstance(config, dict):
        return [{**dict(cfg or {}), "name": (cfg or {}).get("name", name)} for name, cfg in config.items()]
    if isinstance(config, (list, tuple)):
        out = []
        for i, item in enumerate(config):
            entry = dict(item or {})
            if "name" not in entry:
                raise EvalConfigError(f"eval.datasets[{i}] has no name: every eval dataset needs `name` and `path`")
            out.append(entry)
        return out
    raise EvalConfigError("eval.datasets must be a list of datasets or a mapping of name to dataset")


def _pick_from_args(args: Any, attrs: tuple[str, ...]) -> Any:
    for attr in attrs:
        value = getattr(args, attr, None)
        if value is not None:
            return value
    return None


def build_eval_dataset_configs(args: Any, raw_config: Iterable[dict[str, Any]],
                               defaults: dict[str, Any] | None) -> list[EvalDatasetConfig]:
    """Resolve each dataset's settings: its own entry, then `defaults`, then `args` fallbacks."""
    defaults = dict(defaults or {})
    unknown = sorted(set(defaults) - FIELD_NAMES)
    if unknown:
        raise EvalConfigError(f"unknown key(s) in eval.defaults: {unknown}; valid keys: {sorted(FIELD_NAMES)}")
    out = []
    for cfg in raw_config:
        entry = dict(cfg or {})
        name = entry.get("name", "?")
        bad = sorted(set(entry) - FIELD_NAMES)
        if bad:
            raise EvalConfigError(f"eval dataset {name!r}: unknown key(s) {bad}; valid keys: {sorted(FIELD_NAMES)}")
        if not entry.get("path"):
            raise EvalConfigError(f"eval dataset {name!r} has no path")
        for key, value in defaults.items():
            entry.setdefault(key, value)
        for key, attrs in ARG_FALLBACKS.items():
            if entry.get(key) is None:
                entry[key] = _pick_from_args(args, attrs)
        out.append(EvalDatasetConfig(**entry))
    return out


def _load_config_file(path: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except FileNotFoundError:
        raise EvalConfigError(f"eval_config: no such file {path}") from None
    except Exception as exc:  # OmegaConf's parse and interpolation errors
        raise EvalConfigError(f"eval_config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EvalConfigError(f"eval_config {path} must hold a mapping (eval: {{defaults, datasets}})")
    return data


def resolve_eval_datasets(args: Any) -> list[EvalDatasetConfig]:
    """The eval datasets of `args`: from `eval_config` when set (it overrides `eval_prompt_data`), else from
    `eval_prompt_data` name/path pairs (a lone path is named 'aime', as in slime)."""
    defaults: dict[str, Any] = {}
    if getattr(args, "eval_config", None):
        data = _load_config_file(args.eval_config)
        eval_cfg = data.get("eval", data)
        if not isinstance(eval_cfg, dict):
            raise EvalConfigError(f"eval_config {args.eval_config}: `eval` must be a mapping")
        defaults = dict(eval_cfg.get("defaults") or {})
        datasets = ensure_dataset_list(eval_cfg.get("datasets"))
        if not datasets:
            raise EvalConfigError(f"eval_config {args.eval_config} defines no datasets under eval.datasets")
    elif getattr(args, "eval_prompt_data", None):
        values = list(args.eval_prompt_data)
        if len(values) == 1:
            values = ["aime", values[0]]
        if len(values) % 2:
            raise EvalConfigError("eval_prompt_data must be 'name path [name path ...]' pairs")
        datasets = [{"name": values[i], "path": values[i + 1]} for i in range(0, len(values), 2)]
    else:
        return []
    return build_eval_dataset_configs(args, datasets, defaults)
