"""Dynamic sampling filters returning numpy and torch booleans, as slime accepts."""

import numpy as np
import torch


def keep_varied_numpy(args, samples, **kwargs):
    rewards = np.array([s.get_reward_value(args) for s in samples], dtype=np.float64)
    return rewards.std() > 1e-6  # numpy.bool_


def keep_varied_torch(args, samples, **kwargs):
    rewards = torch.tensor([s.get_reward_value(args) for s in samples], dtype=torch.float64)
    return rewards.std() > 1e-6  # a 0-d bool tensor


def sort_by_reward_std(args, samples, **kwargs):
    """The seed's over-sampling filter in its original form: every group, sorted (not sliced)."""
    def std(group):
        return torch.tensor([s.get_reward_value(args) for s in group], dtype=torch.float64).std().item()

    return sorted(samples, key=std, reverse=True)
