"""The GRPO trainer of examples/rl-loop: advantages, loss, offsets, the parity check, saved versions."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from grpo import (  # noqa: E402
    GRPOConfig, GRPOTrainer, ParityError, clipped_pg_loss, group_advantages, pack, token_logprobs,
    token_versions,
)
from local_sampler import render_prompt, sample_groups  # noqa: E402
from rollout_runtime.types import Sample  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "tiny-model"


def _rows(n: int) -> list[dict]:
    with open(REPO / "examples" / "data" / "arith_train.jsonl") as f:
        return [json.loads(line) for line in f][:n]


@pytest.fixture(scope="module")
def batch() -> list[list[Sample]]:
    """8 prompts x 4 samples from the tiny model (version 0), sampled in-process at T=1."""
    torch.manual_seed(0)
    trainer = GRPOTrainer(TINY, GRPOConfig())
    from transformers import AutoTokenizer

    return sample_groups(trainer.model, AutoTokenizer.from_pretrained(str(TINY)), _rows(8), 4, 16, version=0)


def test_group_advantages_are_normalised_per_group_and_none_without_variance():
    rewards = [1.0, 0.0, 0.0, 1.0]
    adv = group_advantages(rewards)
    std = math.sqrt((4 * 0.25) / 3)  # unbiased, as slime's torch.std
    assert adv == pytest.approx([(r - 0.5) / (std + 1e-6) for r in rewards])
    assert sum(adv) == pytest.approx(0.0)
    assert group_advantages([1.0, 1.0, 1.0]) is None  # all right: no signal
    assert group_advantages([0.0, 0.0]) is None  # all wrong: no signal
    assert group_advantages([1.0]) is None  # a group of one has no baseline


def test_clipped_loss_is_a_token_mean_and_stops_the_gradient_outside_the_clip():
    logp = torch.tensor([[0.0, 0.5, -1.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is masked out
    loss, extra = clipped_pg_loss(logp, old, adv, mask, clip_eps=0.2)
    # token 0: ratio 1 -> -1; token 1: ratio e^0.5 > 1.2, clipped -> -1.2; mean over the 2 unmasked tokens
    assert loss.item() == pytest.approx((-1.0 - 1.2) / 2)
    loss.backward()
    assert logp.grad[0, 0].item() == pytest.approx(-0.5)  # d(-ratio*A/2)/dlogp at ratio 1
    assert logp.grad[0, 1].item() == 0.0  # clipped: no gradient pushes the ratio further
    assert logp.grad[0, 2].item() == 0.0  # masked
    assert extra["clip_fraction"] == pytest.approx(0.5)


def test_pack_puts_response_token_t_at_position_t_minus_1():
    s = Sample(index=0, tokens=[5, 6, 7, 8, 9], response_length=2, loss_mask=[1, 0], rollout_log_probs=[-0.1, -0.2],
               weight_versions=["3"])
    p = pack([s], [2.0], current_version=3)
    # tokens 8 and 9 are the response: predicted at positions 2 and 3 of the 4 shifted positions
    assert p.target_mask.tolist() == [[0.0, 0.0, 1.0, 0.0]]
    assert p.rollout_logp.tolist() == [[0.0, 0.0, pytest.approx(-0.1), pytest.approx(-0.2)]]
    assert p.parity_mask.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    assert pack([s], [2.0], current_version=2).parity_mask.sum() == 0  # another version: no parity check
    # weights changed mid-sample: per-token spans decide which tokens the trainer's version generated
    s.weight_versions = ["3"]
    s.weight_version_spans = [{"version": "2", "start": 0, "end": 1}, {"version": "3", "start": 1, "end": 2}]
    assert token_versions(s) == [2, 3]
    assert token_versions(Sample(response_length=2, weight_versions=["default"])) == [0, 0]  # a server's own weights
    assert token_versions(Sample(response_length=2, weight_versions=["1", "2"])) == [None, None]  # no spans: unknown
    assert pack([s], [2.0], current_version=3).parity_mask.tolist() == [[0.0, 0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="rollout_log_probs"):
        pack([Sample(index=1, tokens=[1, 2, 3], response_length=2, rollout_log_probs=[-0.1])], [1.0], 0)


def test_step_checks_parity_trains_and_advances_the_version(batch, tmp_path):
    trainer = GRPOTrainer(TINY, GRPOConfig())
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.step(batch)
    assert stats.version == trainer.version == 1
    assert stats.parity_max_abs is not None and stats.parity_max_abs < 1e-4
    assert math.isfinite(stats.loss) and stats.tokens > 0 and stats.groups == 8
    assert stats.groups_trained == sum(1 for g in batch if len({s.reward for s in g}) > 1)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())

    saved = trainer.save(tmp_path / "v1")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in saved.iterdir()}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(str(saved), dtype=torch.float32)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name
    tok = AutoTokenizer.from_pretrained(str(saved))
    assert render_prompt(tok, "What is 1+2?") == render_prompt(AutoTokenizer.from_pretrained(str(TINY)), "What is 1+2?")


def test_parity_assert_catches_an_offset_bug(batch):
    """Rollout log-probs shifted by one token (what an off-by-one in the response offset looks like)."""
    shifted = copy.deepcopy(batch)
    for group in shifted:
        for s in group:
            s.rollout_log_probs = s.rollout_log_probs[1:] + [s.rollout_log_probs[0]]
    with pytest.raises(ParityError, match="tokenization, chat template or offset"):
        GRPOTrainer(TINY, GRPOConfig()).step(shifted)


def test_groups_without_reward_variance_change_nothing_but_the_version(batch):
    flat = copy.deepcopy(batch)
    for group in flat:
        for s in group:
            s.reward = 1
    trainer = GRPOTrainer(TINY, GRPOConfig())
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.step(flat)
    assert stats.groups_trained == 0 and stats.tokens == 0 and stats.version == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_trainer_logprobs_match_a_plain_forward_pass(batch):
    """The packed forward pass scores each response token as an unpadded forward of that sample does."""
    trainer = GRPOTrainer(TINY, GRPOConfig())
    samples = [s for g in batch for s in g][:6]
    p = pack(samples, [1.0] * len(samples), None)
    with torch.no_grad():
        batched = token_logprobs(trainer.model, p.input_ids, p.attention_mask)
        for i, s in enumerate(samples):
            ids = torch.tensor([s.tokens])
            single = token_logprobs(trainer.model, ids, torch.ones_like(ids))[0]
            n = len(s.tokens) - 1
            assert torch.allclose(batched[i, :n], single, atol=1e-5)
