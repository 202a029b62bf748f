"""A fan-out generate function (one prompt -> several samples sharing rollout_id), as slime's compact_generate."""

import copy

from slime.rollout.sglang_rollout import generate as default_generate

MAX_FANOUT = 3


async def generate(args, sample, sampling_params):
    base = await default_generate(args, sample, sampling_params)
    siblings = []
    for k in range(1 + sample.index % MAX_FANOUT):
        s = copy.deepcopy(base)
        s.rollout_id = sample.index
        s.metadata["sibling"] = k
        siblings.append(s)
    return siblings


async def reward(args, samples, **kwargs):
    """Batch mode (fan-out siblings are scored in one call): one reward per sample."""
    if isinstance(samples, list):
        return [float(len(s.response) % 2) for s in samples]
    return float(len(samples.response) % 2)


async def interrupted(args, sample, sampling_params):
    """A fan-out whose siblings were cut off by an abort (finish_reason abort)."""
    siblings = [copy.deepcopy(sample) for _ in range(2)]
    for s in siblings:
        s.status = s.Status.ABORTED
    return siblings
