"""A whole rollout function written against slime's shapes: out.samples and data, _ = eval_rollout(...)."""

from slime.rollout.base_types import RolloutFnEvalOutput, RolloutFnTrainOutput
from slime.rollout.sglang_rollout import eval_rollout, generate_rollout_async
from slime.utils.async_utils import run


def generate_rollout(args, rollout_id, data_source, evaluation=False):
    if evaluation:
        data, _ = run(eval_rollout(args, rollout_id))
        assert isinstance(data, RolloutFnEvalOutput)
        return RolloutFnEvalOutput(data=data.data, metrics={"custom/eval": 1.0})
    out, aborted = run(generate_rollout_async(args, rollout_id, data_source.get_samples))
    assert isinstance(out, RolloutFnTrainOutput)
    if aborted:
        data_source.add_samples(aborted)
    for group in out.samples:
        for sample in group:
            sample.metadata["seen_by_custom_rollout_fn"] = rollout_id
    return RolloutFnTrainOutput(samples=out.samples, metrics={**(out.metrics or {}), "custom/groups": len(out.samples)})
