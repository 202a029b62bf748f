"""The one builder of SGLang sampling params, for training rollouts and for eval (slime's rules).

Eval takes each `eval_*` setting when set and the rollout's otherwise, and may add
`min_new_tokens`; an eval dataset of `--eval-config` brings its own resolved settings (and may add
`repetition_penalty`). Training with `rollout_top_p != 1` asks for top-p replay
(`custom_params.return_top_p_token_ids`), eval never does. With deterministic inference each sample
of a group gets its own seed, `rollout_seed + index in group`, the same for train and eval.
"""

from __future__ import annotations

from typing import Any

from rollout_runtime.eval_config import EvalDatasetConfig


def build_sampling_params(args: Any, *, evaluation: bool = False, dataset: EvalDatasetConfig | None = None) -> dict[str, Any]:
    """The request's `sampling_params` (values may be None; the payload drops those)."""
    if dataset is not None:
        return _dataset_params(args, dataset)

    def setting(rollout_name: str, eval_name: str) -> Any:
        value = getattr(args, eval_name) if evaluation else None
        return value if value is not None else getattr(args, rollout_name)

    params: dict[str, Any] = dict(
        temperature=setting("rollout_temperature", "eval_temperature"),
        top_p=setting("rollout_top_p", "eval_top_p"),
        top_k=setting("rollout_top_k", "eval_top_k"),
        max_new_tokens=setting("rollout_max_response_len", "eval_max_response_len"),
        stop=args.rollout_stop,
        stop_token_ids=args.rollout_stop_token_ids,
        skip_special_tokens=args.rollout_skip_special_tokens,
        no_stop_trim=True,
        spaces_between_special_tokens=False,
    )
    if evaluation and args.eval_min_new_tokens is not None:
        params["min_new_tokens"] = args.eval_min_new_tokens
    if not evaluation and args.rollout_top_p != 1.0:
        params["custom_params"] = {"return_top_p_token_ids": True}  # top-p replay (slime's patched SGLang)
    return params


def _dataset_params(args: Any, cfg: EvalDatasetConfig) -> dict[str, Any]:
    """An eval dataset's params: its resolved settings (dataset, eval.defaults, then flags), as slime builds them."""
    params: dict[str, Any] = dict(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        max_new_tokens=cfg.max_response_len,
        stop=cfg.stop,
        stop_token_ids=cfg.stop_token_ids,
        skip_special_tokens=cfg.skip_special_tokens if cfg.skip_special_tokens is not None
        else args.rollout_skip_special_tokens,
        no_stop_trim=cfg.no_stop_trim if cfg.no_stop_trim is not None else True,
        spaces_between_special_tokens=False,
    )
    if cfg.repetition_penalty is not None:
        params["repetition_penalty"] = cfg.repetition_penalty
    if cfg.min_new_tokens is not None:
        params["min_new_tokens"] = cfg.min_new_tokens
    return params


def sampling_seed(args: Any, index_in_group: int) -> int | None:
    """The deterministic-inference seed of a group's `index_in_group`-th sample, or None when off."""
    if not args.sglang_enable_deterministic_inference:
        return None
    return args.rollout_seed + index_in_group
