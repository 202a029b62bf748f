"""Answer helpers shared by the simulated engine, the tiny-model training script and tests.

The simulated engine writes ``\\boxed{ANSWER}`` responses whose correctness it controls, so it must know
the right answer for a prompt without a model: either by evaluating a simple arithmetic question in the
prompt (``What is 12+34?``) or by extracting it with a user-supplied regex (for datasets that embed the
label in the prompt text).
"""

from __future__ import annotations

import re

_ARITH_RE = re.compile(r"(-?\d+)\s*([+\-*×x])\s*(-?\d+)\s*(?:=\s*)?\?")
_ARITH_LOOSE_RE = re.compile(r"(-?\d+)\s*([+\-*×])\s*(-?\d+)")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (balanced braces), stripped; None if absent."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    j = i
    while j < len(text):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
        j += 1
    return None


def arithmetic_answer(prompt: str) -> str | None:
    """Evaluate the last ``A op B`` in ``prompt`` (op in + - * ×); None if there is none.

    Prefers an expression directly followed by ``?`` (``What is 12+34?``), so numbers elsewhere in a
    chat-formatted prompt do not confuse it.
    """
    matches = list(_ARITH_RE.finditer(prompt)) or list(_ARITH_LOOSE_RE.finditer(prompt))
    if not matches:
        return None
    a_s, op, b_s = matches[-1].groups()
    a, b = int(a_s), int(b_s)
    if op == "+":
        return str(a + b)
    if op == "-":
        return str(a - b)
    return str(a * b)


def regex_answer(prompt: str, pattern: str | re.Pattern[str]) -> str | None:
    """First group (or whole match) of the last match of ``pattern`` in ``prompt``."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    matches = list(rx.finditer(prompt))
    if not matches:
        return None
    m = matches[-1]
    return (m.group(1) if rx.groups else m.group(0)).strip()
