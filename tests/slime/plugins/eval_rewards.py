"""Two eval datasets, each with its own reward function (set per dataset in --eval-config)."""


async def length_reward(args, sample, **kwargs):
    return float(sample.response_length)


async def constant_reward(args, sample, **kwargs):
    return 0.25
