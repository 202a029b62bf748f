"""DeepScaleR's reward: grade only the text after the reasoning, which must contain a boxed answer."""

from __future__ import annotations

from rollout_runtime.rm_hub.math_utils import extract_boxed_answer, is_equiv


def get_deepscaler_rule_based_reward(response: str, label: str) -> int:
    """DeepScaleR: grade only the text after the reasoning, which must contain a boxed answer."""
    if "</think>" in response:
        solution = response.split("</think>", 1)[1]
    elif "###Response" in response:
        solution = response.split("###Response", 1)[1]
    else:
        return 0
    if "\\boxed" not in solution:
        return 0
    pred = extract_boxed_answer(solution)
    if pred is None:
        return 0
    labels = label if isinstance(label, list) else [label]
    for gt in labels:
        gt = str(gt)
        gold = extract_boxed_answer(gt) if "\\boxed" in gt else gt
        if gold is not None and is_equiv(pred, gold):
            return 1
    return 0
