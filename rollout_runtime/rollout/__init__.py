"""The default rollout function against SGLang, in small modules; `rollout_runtime.sglang_rollout` re-exports slime's names.

| module | holds |
| --- | --- |
| `stats` | `RolloutStats` (what one rollout did) and `RolloutBatch` (slime's `RolloutFnTrainOutput` with its stats) |
| `sampling_params` | the one builder of sampling params, for train and eval |
| `sglang_payload` | the `/generate` request payload to SGLang, its URL and headers, and reading its response |
| `generate` | `GenerateState` and the per-sample / per-group calls: generate, sample hooks, reward |
| `abort` | ending a rollout: abort the workers, drain or cancel what is in flight |
| `batch_loop` | filling one batch: refills, dynamic and over-sampling filters, recycling (`generate_rollout`) |
| `evaluation` | `eval_rollout`, `eval_rollout_single_dataset` and their metrics (pass@k) |

This package has no re-exports: modules import each other directly, so there is no import loop.
"""
