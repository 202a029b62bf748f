"""The admission rule of bounded staleness, and which weight versions a sample's tokens came from. Pure.

AReaL (`max_head_offpolicyness` η) and SkyRL (`max_staleness_steps`) admit new work only while

    (η + v + 1) · B − (accepted + running) > 0

with v the served policy version, B the batch size, `accepted` every sample accepted since the
start and `running` the samples in flight. Our runtime fills one batch per rollout id and starts
rollout N only after rollouts 0..N−1 are committed, so accepted = N·B + a (a: accepted in rollout N
so far), and its refill rule admits a group only while a + r < B. The inequality then reads
(η + v + 1 − N)·B > a + r, which holds for every such a + r exactly when η + v + 1 − N >= 1:

    a group may start in rollout N  <=>  v >= N − η        (`admits`)

Rollout N is trained on by step N, which makes version N+1, so N − η is the oldest version that may
generate tokens for rollout N (`oldest_allowed`). Where we go further than the formula: over-sampling
and continuous refill put more than B groups in flight for rollout N; they are admitted under the
same v >= N − η, and a group that is recycled into the buffer is judged again by its oldest token
against the next rollout's bound (`oldest_version`), so the bound holds for every committed token,
not only for the version a group started under.

Versions are SGLang `weight_version` strings read as policy versions (`contract.parse_weight_version`:
"default" is 0, "N" is N). A token from a version that is not one of ours cannot be shown to be fresh:
it counts as older than any bound (`UNKNOWN_VERSION`).
"""

from __future__ import annotations

from typing import Any

from rollout_runtime.contract import parse_weight_version
from rollout_runtime.types import Sample, flatten

#: What a token from an unparseable version (not a policy version of ours) counts as: older than any bound.
UNKNOWN_VERSION = -1


def oldest_allowed(rollout_id: int, max_staleness: int) -> int:
    """The oldest weight version that may generate tokens for rollout `rollout_id`."""
    return rollout_id - max_staleness


def admits(served: int | None, rollout_id: int, max_staleness: int | None) -> bool:
    """Whether a new group may start in rollout `rollout_id` while `served` is the served version.

    Free-running (`max_staleness` None) always admits; an unknown served version never does.
    """
    if max_staleness is None:
        return True
    return served is not None and served >= oldest_allowed(rollout_id, max_staleness)


def areal_admits(max_staleness: int, served: int, batch_size: int, accepted: int, running: int) -> bool:
    """AReaL's admission rule as AReaL states it (in samples since the start); `admits` is its per-rollout form."""
    return (max_staleness + served + 1) * batch_size - (accepted + running) > 0


def token_versions(sample: Sample) -> list[int]:
    """The policy versions that generated this sample's response tokens (UNKNOWN_VERSION for a foreign one).

    From the per-span record (`weight_version_spans`, SGLang's `meta_info.weight_versions`) when the
    sample has one; else from slime's per-call `weight_versions` (the version each call finished
    under). Empty for a sample with no response tokens, or whose generate function kept no versions.
    """
    spans = getattr(sample, "weight_version_spans", None) or []
    raw = [s.get("version") for s in spans if isinstance(s, dict) and int(s.get("end", 0)) > int(s.get("start", 0))]
    if not raw and sample.response_length > 0:
        raw = list(sample.weight_versions)
    out = []
    for value in raw:
        version = parse_weight_version(value)
        out.append(UNKNOWN_VERSION if version is None else version)
    return out


def oldest_version(member: Sample | list[Any]) -> int | None:
    """The oldest version behind any token of a sample, a group or a fan-out; None when none is recorded."""
    versions = [v for s in flatten(member if isinstance(member, list) else [member]) for v in token_versions(s)]
    return min(versions) if versions else None


def is_stale(group: list[Any], rollout_id: int, max_staleness: int | None) -> bool:
    """Whether `group` holds a token older than rollout `rollout_id` allows."""
    if max_staleness is None:
        return False
    oldest = oldest_version(group)
    return oldest is not None and oldest < oldest_allowed(rollout_id, max_staleness)


def version_range(groups: list[list[Any]]) -> tuple[int | None, int | None]:
    """(oldest, newest) policy version behind the tokens of a batch; (None, None) when none is recorded."""
    versions = [v for g in groups for s in flatten(g) for v in token_versions(s) if v != UNKNOWN_VERSION]
    return (min(versions), max(versions)) if versions else (None, None)


def restart_from_prompt(sample: Sample, rollout_id: int | None = None) -> Sample:
    """Forget a sample's response (tokens, log probs, reward, versions) so it is generated again from its prompt.

    What the stale-group policy `regenerate` does to a group whose oldest tokens are too old. The prompt's
    token ids are kept (they are what the sample was first sent with).
    """
    if sample.response_length:
        sample.tokens = sample.tokens[:len(sample.tokens) - sample.response_length]
    sample.response = ""
    sample.response_length = 0
    sample.reward = None
    sample.loss_mask = None
    sample.weight_versions = []
    if hasattr(sample, "weight_version_spans"):
        sample.weight_version_spans = []
    sample.rollout_log_probs = None
    sample.rollout_top_p_token_ids = None
    sample.rollout_top_p_token_offsets = None
    sample.rollout_routed_experts = None
    sample.teacher_log_probs = None
    sample.remove_sample = False
    sample.status = Sample.Status.PENDING
    sample.spec_info = Sample.SpecInfo()
    sample.prefix_cache_info = Sample.PrefixCacheInfo()
    sample.non_generation_time = 0.0
    if rollout_id is not None:
        sample.metadata["start_rollout_id"] = rollout_id
    return sample


def restart_group(group: list[Any], rollout_id: int | None = None) -> list[Sample]:
    """A stale group, every member restarted from its prompt (a finished fan-out restarts from its first sample)."""
    out = []
    for member in group:
        first = member[0] if isinstance(member, list) else member
        while isinstance(first, list):
            first = first[0]
        out.append(restart_from_prompt(first, rollout_id))
    return out
