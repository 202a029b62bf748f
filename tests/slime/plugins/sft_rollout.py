"""A user's own copy of an SFT rollout in slime's style, running on the runtime's mask generator."""

from slime.utils.mask_utils import MultiTurnLossMaskGenerator
from slime.utils.processing_utils import load_processor, load_tokenizer

TOKENIZER = None
PROCESSOR = None
MASK_GENERATOR = None


def generate_rollout(args, rollout_id, data_buffer, evaluation=False):
    assert not evaluation
    assert args.rollout_global_dataset
    global TOKENIZER, PROCESSOR, MASK_GENERATOR
    if TOKENIZER is None:
        TOKENIZER = load_tokenizer(args.hf_checkpoint, trust_remote_code=True)
    if PROCESSOR is None:
        PROCESSOR = load_processor(args.hf_checkpoint, trust_remote_code=True)
    if MASK_GENERATOR is None:
        MASK_GENERATOR = MultiTurnLossMaskGenerator(TOKENIZER, tokenizer_type=args.loss_mask_type)
    samples = data_buffer.get_samples(args.rollout_batch_size)
    for sample in samples:
        (sample,) = sample
        token_ids, loss_mask = MASK_GENERATOR.get_loss_mask(sample.prompt, tools=sample.metadata.get("tools", None))
        response_length = MASK_GENERATOR.get_response_lengths([loss_mask])[0]
        sample.tokens = token_ids
        sample.response_length = response_length
        sample.reward = 0
        sample.loss_mask = loss_mask[-response_length:]
        sample.metadata["processor_is_none"] = PROCESSOR is None
    return samples
