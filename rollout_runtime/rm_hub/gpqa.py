"""Multiple-choice reward: extract the chosen letter, compare with the label (letter, index or text)."""

from __future__ import annotations

import re
from typing import Any

_PATTERNS = [
    r"(?i)answer\s*(?:is|:)?\s*[\(\[]?\s*([A-Z])\s*[\)\]]?(?![A-Za-z])",
    r"\\boxed\{\s*\(?([A-Z])\)?\s*\}",
    r"\(([A-Z])\)",
]


def _letters(metadata: dict[str, Any]) -> list[str]:
    if metadata.get("valid_letters"):
        return [str(x).upper() for x in metadata["valid_letters"]]
    n = len(metadata.get("choices") or []) or 4
    return [chr(ord("A") + i) for i in range(n)]


def extract_letter(response: str, valid: list[str]) -> str | None:
    text = response.split("</think>")[-1]
    for pattern in _PATTERNS:
        found = [m for m in re.findall(pattern, text) if m.upper() in valid]
        if found:
            return found[-1].upper()
    loose = [m for m in re.findall(r"\b([A-Z])\b", text) if m in valid]
    return loose[-1] if loose else None


def _correct_letter(label: Any, metadata: dict[str, Any], valid: list[str]) -> str | None:
    if metadata.get("correct_letter"):
        return str(metadata["correct_letter"]).upper()
    choices = metadata.get("choices") or []
    if isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit()):
        idx = int(label)
        return valid[idx] if 0 <= idx < len(valid) else None
    if isinstance(label, str):
        s = label.strip().strip("()").upper()
        if s in valid:
            return s
        answer_text = metadata.get("correct_answer") or metadata.get("answer_text") or label
        for i, choice in enumerate(choices):
            if str(choice).strip() == str(answer_text).strip():
                return valid[i]
    return None


def compute_gpqa_reward(response: str, label: Any, metadata: dict[str, Any] | None = None) -> float:
    metadata = metadata or {}
    valid = _letters(metadata)
    gold = _correct_letter(label, metadata, valid)
    pred = extract_letter(response or "", valid)
    return 1.0 if gold is not None and pred == gold else 0.0
