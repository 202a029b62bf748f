import pytest
from transformers import AutoTokenizer

from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSource
from rollout_runtime.mask_utils import MultiTurnLossMaskGenerator
from rollout_runtime.sft_rollout import generate_rollout
from tests.conftest import TINY_MODEL, write_jsonl

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CONVERSATION = [
    {"role": "system", "content": "You add numbers."},
    {"role": "user", "content": "What is 1+2?"},
    {"role": "assistant", "content": "\\boxed{3}"},
    {"role": "user", "content": "And 20+22?"},
    {"role": "assistant", "content": "It is \\boxed{42}"},
]


def tokenizer(template: str | None = None):
    tok = AutoTokenizer.from_pretrained(TINY_MODEL)
    if template:
        tok.chat_template = template
    return tok


@pytest.mark.parametrize("template,expected", [
    (None, ["\\boxed{3}<|im_end|>\n", "It is \\boxed{42}<|im_end|>\n"]),
    (LLAMA3_TEMPLATE, ["\\boxed{3}<|eot_id|>", "It is \\boxed{42}<|eot_id|>"]),
])
def test_masks_cover_assistant_content_and_end_of_turn(template, expected):
    tok = tokenizer(template)
    gen = MultiTurnLossMaskGenerator(tok)
    ids, mask = gen.get_loss_mask(CONVERSATION)
    assert len(ids) == len(mask)
    assert [t.replace(" ", "") for t in gen.get_text_from_loss_mask(ids, mask)] == [e.replace(" ", "") for e in expected]
    assert tok.decode(ids).replace(" ", "") == tok.apply_chat_template(CONVERSATION, tokenize=False).replace(" ", "")
    assert mask[0] == 0 and mask[-1] == 1


def test_step_loss_mask_zeroes_a_turn():
    gen = MultiTurnLossMaskGenerator(tokenizer())
    conv = [dict(m) for m in CONVERSATION]
    conv[2]["step_loss_mask"] = 0
    ids, mask = gen.get_loss_mask(conv)
    assert gen.get_text_from_loss_mask(ids, mask) == ["It is \\boxed{42}<|im_end|>\n"]


def test_sft_generate_rollout(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"messages": CONVERSATION}, {"messages": CONVERSATION[:3]}])
    args = RolloutConfig(prompt_data=path, input_key="messages", hf_checkpoint=str(TINY_MODEL), rollout_batch_size=2,
                         rollout_function_path="rollout_runtime.sft_rollout.generate_rollout")
    groups = generate_rollout(args, 0, RolloutDataSource(args))
    s = groups[1][0]
    first_trained = s.tokens.index(s.tokens[len(s.tokens) - s.response_length])
    assert s.reward == 0 and len(s.loss_mask) == s.response_length and s.loss_mask[0] == 1
    assert all(s.loss_mask)  # a single assistant turn at the end
    multi = groups[0][0]
    assert multi.loss_mask[0] == 1 and 0 in multi.loss_mask  # the middle user turn stays masked
    assert first_trained >= 0
