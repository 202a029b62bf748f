"""What the CRD schema cannot check about a RolloutJob's spec, checked before its runtime starts.

The runtime builds its configuration from the spec's sections with `RolloutConfig.from_sections`
and exits with the configuration-error code when that fails. Running the same check here turns
that into an immediate, visible `Failed/InvalidSpec` with the spec field to fix, instead of a pod
that starts, fails, and is not retried.
"""

from __future__ import annotations

import re
from typing import Any

from rollout_runtime.config import ConfigError, RolloutConfig, is_dotted_path, parse_cli_flags, section_fields
from rollout_runtime.contract import RUNTIME_SECTIONS

_FIELD_PATHS = {name: f"spec.{sec}.{key}" for name, (sec, key) in section_fields().items()}
_FIELD_PATHS["eval_prompt_data"] = "spec.eval.datasets"  # the spec's list of {name, path}
_NAME_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _FIELD_PATHS), key=len, reverse=True)) + r")\b")


def spec_paths(message: str) -> str:
    """Rewrite RolloutConfig field names in a message as the spec fields a user edits."""
    return _NAME_RE.sub(lambda m: _FIELD_PATHS[m.group(1)], message)


def validate_spec(spec: dict[str, Any]) -> str | None:
    """RolloutConfig's own rules, plugin paths and extra flags, on the spec as stored.

    Returns a message naming the offending field, or None when the spec can run.
    """
    sections = {k: v for k, v in spec.items() if k in RUNTIME_SECTIONS and v is not None}
    engine = spec.get("engine") or {}
    fields = section_fields()
    overrides = {name: engine[key] for name, (sec, key) in fields.items() if sec == "engine" and key in engine}
    overrides["sglang_router_url"] = "http://validation.invalid"
    for name, (sec, key) in fields.items():
        value = (sections.get(sec) or {}).get(key)
        if name.endswith("_path") and isinstance(value, str) and not is_dotted_path(value):
            return f"spec.{sec}.{key}: {value!r} is not a dotted Python path like my_pkg.my_module.my_function"
    try:
        RolloutConfig.from_sections(sections, **overrides).check_runnable()
    except ConfigError as exc:
        return spec_paths(str(exc))
    extra = ((spec.get("runtime") or {}).get("extraArgs")) or []
    if extra:
        try:
            parse_cli_flags([str(a) for a in extra])
        except ConfigError as exc:
            return f"spec.runtime.extraArgs: {exc}"
    return None
