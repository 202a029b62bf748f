"""The rollout loop against SGLang under slime's module name: `rollout_runtime.sglang_rollout`.

slime code imports these names from `slime.rollout.sglang_rollout`; here they are re-exported from
the small modules of `rollout_runtime.rollout` that hold them, so custom generate functions, the
docs and `rollout_function_path: rollout_runtime.sglang_rollout.generate_rollout` keep working:

- `GenerateState`, `generate`, `generate_and_rm`, `generate_and_rm_group`: `rollout.generate`
- `get_model_url` and the `/generate` payload: `rollout.sglang_payload`
- `abort`: `rollout.abort`
- `generate_rollout_async`, `generate_rollout`: `rollout.batch_loop`
- `eval_rollout`, `eval_rollout_single_dataset`: `rollout.evaluation`
- `RolloutFnTrainOutput`, `RolloutFnEvalOutput`, `call_rollout_fn`: `base_types` (slime's `rollout/base_types.py`)
- `RolloutStats`: `rollout.stats`

Where we differ from slime (documented in the README): `GenerateState` is per `args` object;
`over_sampling_batch_size` may be smaller than the batch; without partial rollout the end of a
rollout cancels discarded groups instead of waiting on their reward calls; with partial rollout,
completed groups beyond the batch go back to the buffer; HTTP 4xx from the engine is raised with
the engine's message, not retried 60 times.
"""

from __future__ import annotations

from rollout_runtime.base_types import RolloutFnEvalOutput, RolloutFnTrainOutput, call_rollout_fn
from rollout_runtime.rollout.abort import abort
from rollout_runtime.rollout.batch_loop import fill_batch, generate_rollout, generate_rollout_async, last_rollout_stats
from rollout_runtime.rollout.evaluation import eval_metrics, eval_rollout, eval_rollout_single_dataset, pass_at_k
from rollout_runtime.rollout.generate import _STATES  # noqa: F401 - the per-args state cache, for tests
from rollout_runtime.rollout.generate import (GenerateState, apply_sample_hooks, close_http, generate, generate_and_rm,
                                              generate_and_rm_group)
from rollout_runtime.rollout.sampling_params import build_sampling_params
from rollout_runtime.rollout.sglang_payload import get_model_url
from rollout_runtime.rollout.stats import RolloutBatch, RolloutStats

__all__ = [
    "GenerateState", "generate", "generate_and_rm", "generate_and_rm_group", "generate_rollout_async",
    "generate_rollout", "eval_rollout", "abort", "get_model_url", "RolloutStats",
    "RolloutBatch", "apply_sample_hooks", "call_rollout_fn", "close_http", "eval_metrics", "fill_batch",
    "last_rollout_stats", "pass_at_k", "build_sampling_params", "eval_rollout_single_dataset",
    "RolloutFnTrainOutput", "RolloutFnEvalOutput",
]
