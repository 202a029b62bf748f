"""Token-level F1 with SQuAD normalisation (slime's `f1` reward)."""

from __future__ import annotations

import re
import string
from collections import Counter


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> tuple[float, float, float]:
    """(f1, precision, recall); yes/no/noanswer must match exactly or score 0."""
    pred, gold = normalize_answer(prediction or ""), normalize_answer(str(ground_truth or ""))
    zero = (0.0, 0.0, 0.0)
    if pred in ("yes", "no", "noanswer") and pred != gold:
        return zero
    if gold in ("yes", "no", "noanswer") and pred != gold:
        return zero
    pt, gt = pred.split(), gold.split()
    common = Counter(pt) & Counter(gt)
    same = sum(common.values())
    if same == 0:
        return zero
    precision, recall = same / len(pt), same / len(gt)
    return 2 * precision * recall / (precision + recall), precision, recall
