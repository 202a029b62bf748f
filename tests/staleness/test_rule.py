"""The admission rule and the per-token version checks of bounded staleness (pure)."""

from __future__ import annotations

import itertools

from rollout_runtime.staleness.rule import (UNKNOWN_VERSION, admits, areal_admits, is_stale, oldest_allowed,
                                            oldest_version, restart_from_prompt, restart_group, token_versions,
                                            version_range)
from rollout_runtime.types import Sample


def sample(spans: list[tuple[str, int, int]] = (), *, prompt_len: int = 3, **kw) -> Sample:
    n = max((e for _, _, e in spans), default=0)
    s = Sample(prompt="p", tokens=list(range(prompt_len + n)), response="x" * n, response_length=n,
               rollout_log_probs=[-0.5] * n, loss_mask=[1] * n, reward=1.0 if n else None,
               status=Sample.Status.COMPLETED if n else Sample.Status.PENDING, **kw)
    s.weight_version_spans = [{"version": v, "start": a, "end": b} for v, a, b in spans]
    s.weight_versions = [spans[-1][0]] if spans else []
    return s


def test_admission_rule() -> None:
    assert oldest_allowed(5, 1) == 4 and oldest_allowed(0, 2) == -2
    assert admits(None, 7, None) and admits(0, 100, None)  # free-running: always
    assert not admits(None, 0, 0)  # an unknown served version never admits
    assert admits(4, 5, 1) and not admits(3, 5, 1)
    assert admits(5, 5, 0) and not admits(4, 5, 0)  # synchronous: rollout N needs version N
    assert admits(0, 0, 0) and admits(0, 2, 2) and not admits(0, 3, 2)


def test_per_rollout_rule_is_areals_rule_for_a_batch_loop() -> None:
    """AReaL admits while (η+v+1)·B − (accepted+running) > 0, counting samples since the start. Filling rollout N
    after N committed batches, with a + r < B (the refill rule), that is exactly v >= N − η."""
    for eta, v, n, batch in itertools.product(range(4), range(8), range(10), range(1, 5)):
        for a, r in itertools.product(range(batch), repeat=2):
            if a + r < batch:
                assert admits(v, n, eta) == areal_admits(eta, v, batch, n * batch + a, r), (eta, v, n, batch, a, r)


def test_token_versions_from_spans_and_slime_fallback() -> None:
    s = sample([("default", 0, 4), ("2", 4, 9), ("3", 9, 9)])  # an empty span generated nothing
    assert token_versions(s) == [0, 2]
    assert oldest_version(s) == 0
    foreign = sample([("v2-rc", 0, 2), ("4", 2, 3)])
    assert token_versions(foreign) == [UNKNOWN_VERSION, 4] and oldest_version(foreign) == UNKNOWN_VERSION
    # No spans (a generate function that kept only slime's per-call list): the per-call versions.
    legacy = sample([("5", 0, 2)])
    legacy.weight_version_spans = []
    legacy.weight_versions = ["4", "5"]
    assert token_versions(legacy) == [4, 5]
    assert token_versions(sample()) == [] and oldest_version(sample()) is None


def test_is_stale_and_version_range() -> None:
    group = [sample([("3", 0, 5)]), sample([("2", 0, 1), ("4", 1, 6)]), sample()]
    assert oldest_version(group) == 2
    assert not is_stale(group, 3, 1) and is_stale(group, 4, 1)  # rollout 4 with η=1 allows versions >= 3
    assert not is_stale(group, 50, None)  # free-running judges nothing
    assert not is_stale([sample(), sample()], 9, 0)  # nothing generated yet: nothing to judge
    fan_out = [[sample([("1", 0, 2)]), sample([("6", 0, 2)])], sample([("6", 0, 1)])]
    assert oldest_version(fan_out) == 1 and is_stale(fan_out, 6, 4)
    assert version_range([group, fan_out]) == (1, 6)
    assert version_range([[sample(), sample([("v2-rc", 0, 1)])]]) == (None, None)


def test_restart_from_prompt_keeps_the_prompt_and_forgets_the_response() -> None:
    s = sample([("1", 0, 4)], prompt_len=3, metadata={"start_rollout_id": 2, "k": "v"})
    s.status = Sample.Status.ABORTED
    restart_from_prompt(s, 7)
    assert s.tokens == [0, 1, 2] and s.response == "" and s.response_length == 0
    assert (s.reward, s.loss_mask, s.rollout_log_probs, s.weight_versions, s.weight_version_spans) == (
        None, None, None, [], [])
    assert s.status == Sample.Status.PENDING and s.metadata == {"start_rollout_id": 7, "k": "v"}
    fresh = sample(prompt_len=2)
    assert restart_from_prompt(fresh).tokens == [0, 1]  # nothing generated: the prompt as it was
    fan_out = [[sample([("1", 0, 2)]), sample([("1", 0, 2)])], sample([("1", 0, 3)])]
    restarted = restart_group(fan_out, 9)
    assert len(restarted) == 2 and all(isinstance(m, Sample) and m.response_length == 0 for m in restarted)
