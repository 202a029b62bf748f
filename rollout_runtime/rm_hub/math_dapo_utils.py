"""DAPO's reward: a Minerva-style `Answer: X` in the last 300 characters, scored +1/-1."""

from __future__ import annotations

import re
from typing import Any

from rollout_runtime.rm_hub.math_utils import last_boxed_only_string, remove_boxed

SUBSTITUTIONS = [("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
                 (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}")]
REMOVED_EXPRESSIONS = ["square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue",
                       "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
                       "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
                       "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;",
                       r",\!", "{,}", '"', "\\dots"]


def normalize_final_answer(final_answer: str) -> str:
    """Minerva's normalisation (Lewkowycz et al., 2022), as DAPO uses it."""
    final_answer = final_answer.split("=")[-1]
    for before, after in SUBSTITUTIONS:
        final_answer = final_answer.replace(before, after)
    for expr in REMOVED_EXPRESSIONS:
        final_answer = final_answer.replace(expr, "")
    final_answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", final_answer)
    final_answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", final_answer)
    final_answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", final_answer)
    final_answer = final_answer.replace("$", "")
    if final_answer.replace(",", "").isdigit():
        final_answer = final_answer.replace(",", "")
    return final_answer.strip()


def is_correct_minerva(solution_str: str, gt: str, answer_pattern: str = r"(?i)Answer\s*:\s*([^\n]+)") -> tuple[bool, str]:
    match = re.findall(answer_pattern, solution_str)
    extracted = match[-1] if match else "[INVALID]"
    pred = normalize_final_answer(extracted)
    if "\\boxed" in gt:
        boxed = last_boxed_only_string(gt)
        gt = remove_boxed(boxed) if boxed else gt
    gt = normalize_final_answer(gt)
    return pred == gt, pred


def compute_score(solution_str: str, ground_truth: Any) -> dict[str, Any]:
    """{"score": 1.0 | -1.0, "acc": bool, "pred": str}; use reward_key "score"."""
    solution_str = solution_str[-300:]
    gt = str(ground_truth)
    try:
        gt = str(int(float(gt)))
    except ValueError:
        pass
    correct, pred = is_correct_minerva(solution_str, gt)
    return {"score": 1.0 if correct else -1.0, "acc": correct, "pred": pred}
