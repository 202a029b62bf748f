"""Answer extraction and equivalence for math rewards.

Extraction keeps slime's rules (the last `\\boxed{...}` of the response; labels may be
boxed too). Equivalence is a normalised string match first (cheap, catches most cases),
then math-verify's symbolic check, instead of slime's hand-written sympy grader.
"""

from __future__ import annotations

import logging
import re

from math_verify import parse, verify

# math-verify warns on every call that its signal-based timeouts are off; we disable them on
# purpose (graders run in worker threads, where signals cannot be used) and bound time ourselves.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def last_boxed_only_string(text: str) -> str | None:
    """The last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces, or None."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    if text.startswith("\\boxed ", idx):  # "\boxed 5" form
        rest = text[idx + len("\\boxed "):]
        return "\\boxed " + rest.split("$")[0].strip()
    depth = 0
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[idx:i + 1]
    return None


def remove_boxed(text: str) -> str:
    if text.startswith("\\boxed "):
        return text[len("\\boxed "):]
    for left in ("\\boxed{", "\\fbox{"):
        if text.startswith(left) and text.endswith("}"):
            return text[len(left):-1]
    return text


def extract_boxed_answer(text: str) -> str | None:
    boxed = last_boxed_only_string(text)
    return remove_boxed(boxed) if boxed is not None else None


def extract_answer(passage: str) -> str | None:
    """slime's name: the last boxed answer, or None when the passage has no `\\boxed`."""
    return extract_boxed_answer(passage) if "\\boxed" in passage else None


_REMOVE = ["\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "$", "\\%", "%", " ", "^\\circ", "^{\\circ}", "\\displaystyle"]


def normalize_answer(answer: str) -> str:
    """mathd-style normalisation: strip spacing, dollars, text wrappers, trailing dots, unit degrees."""
    s = answer.strip()
    s = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", s)
    s = re.sub(r"\\mbox\{\s*([^}]*)\}", r"\1", s)
    for token in _REMOVE:
        s = s.replace(token, "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    if s.startswith("0.") is False and re.fullmatch(r"-?\.\d+", s):
        s = s.replace(".", "0.", 1)
    return s


def is_equiv(pred: str, gold: str) -> bool:
    """Normalised string equality, else math-verify equivalence (no signal timeouts: we run off the main thread)."""
    if pred is None or gold is None:
        return False
    a, b = normalize_answer(pred), normalize_answer(gold)
    if a == b:
        return True
    if not a or not b:
        return False
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=None)
        pred_parsed = parse(f"${pred}$", parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:
        return False


def grade_answer_mathd(given_answer: str, ground_truth: str) -> bool:
    """Equal after mathd-style normalisation (slime's lenient first check)."""
    return given_answer is not None and ground_truth is not None and \
        normalize_answer(given_answer) == normalize_answer(ground_truth)


def grade_answer_sympy(given_answer: str, ground_truth: str) -> bool:
    """Symbolic equivalence. slime hand-normalises and calls sympy; we use math-verify, which parses LaTeX
    properly (see docs/slime.md)."""
    return is_equiv(given_answer, ground_truth)


def grade_answer_verl(response: str, label: str) -> bool:
    """slime's `math` reward: the last boxed answer of the response against the (maybe boxed) label."""
    if label is None:
        return False
    label = str(label)
    gold = extract_boxed_answer(label) if "\\boxed" in label else label
    pred = extract_boxed_answer(response)
    if pred is None or gold is None:
        return False
    return is_equiv(pred, gold)
