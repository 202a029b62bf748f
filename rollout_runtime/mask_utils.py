"""Loss masks for chat conversations, for any chat template.

slime keeps one hand-written generator per model family (qwen, qwen3, distill_qwen...)
that calibrates token counts of injected system prompts. Instead we let the template
itself say where each assistant turn is: render the conversation up to the turn with a
generation prompt, render it again including the turn, and the difference is the turn's
content plus its end-of-turn marker. Character spans are then mapped onto the tokens of
the full rendering, so the mask is right for ChatML, Llama-3 or any other template that
renders prefixes consistently (checked, with a clear error when a template does not).
"""

from __future__ import annotations

from typing import Any


class LossMaskError(ValueError):
    """The chat template cannot be split into turns; says which turn and why."""


class MultiTurnLossMaskGenerator:
    """`get_loss_mask(messages, tools) -> (token_ids, loss_mask)`: 1 on assistant turns, 0 elsewhere."""

    def __init__(self, tokenizer: Any, tokenizer_type: str = "auto") -> None:
        self.tokenizer = tokenizer
        self.tokenizer_type = tokenizer_type  # accepted for slime compatibility; the method is template-driven

    def get_response_lengths(self, loss_masks: list[list[int]]) -> list[int]:
        """slime's method form of `get_response_lengths` (its sft_rollout calls it on the generator)."""
        return get_response_lengths(loss_masks)

    def _render(self, messages: list[dict[str, Any]], tools: Any, add_generation_prompt: bool) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def assistant_spans(self, messages: list[dict[str, Any]], tools: Any = None) -> tuple[str, list[tuple[int, int]]]:
        """The full rendered text and the character spans of trained assistant turns."""
        full = self._render(messages, tools, add_generation_prompt=False)
        spans = []
        for i, msg in enumerate(messages):
            if msg.get("role") != "assistant" or msg.get("step_loss_mask", 1) != 1:
                continue
            before = self._render(messages[:i], tools, add_generation_prompt=True)
            upto = self._render(messages[: i + 1], tools, add_generation_prompt=False)
            if not upto.startswith(before) or not full.startswith(upto):
                raise LossMaskError(
                    f"message {i}: the chat template does not render conversation prefixes consistently "
                    f"(it rewrites earlier turns), so assistant turns cannot be located; use a template without "
                    f"history rewriting for SFT"
                )
            spans.append((len(before), len(upto)))
        return full, spans

    def get_loss_mask(self, messages: list[dict[str, Any]], tools: Any = None) -> tuple[list[int], list[int]]:
        full, spans = self.assistant_spans(messages, tools)
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = enc["input_ids"], enc["offset_mapping"]
            if self._boundaries_align(offsets, spans):
                mask = [1 if any(s < end and start < e for s, e in spans) and end > start else 0 for start, end in offsets]
                return list(ids), mask
        return self._piecewise(full, spans)

    @staticmethod
    def _boundaries_align(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> bool:
        """True when no token straddles a span edge (else piecewise tokenization keeps the mask exact)."""
        for s, e in spans:
            for start, end in offsets:
                if start < s < end or start < e < end:
                    return False
        return True

    def _piecewise(self, full: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        mask: list[int] = []
        pos = 0
        for s, e in spans + [(len(full), len(full))]:
            if s > pos:
                part = self.tokenizer.encode(full[pos:s], add_special_tokens=False)
                ids += part
                mask += [0] * len(part)
            if e > s:
                part = self.tokenizer.encode(full[s:e], add_special_tokens=False)
                ids += part
                mask += [1] * len(part)
            pos = max(pos, e)
        return ids, mask

    def get_text_from_loss_mask(self, token_ids: list[int], loss_mask: list[int]) -> list[str]:
        """The trained spans as text, for eyeballing a mask."""
        out, cur = [], []
        for t, m in zip(token_ids, loss_mask):
            if m:
                cur.append(t)
            elif cur:
                out.append(self.tokenizer.decode(cur))
                cur = []
        if cur:
            out.append(self.tokenizer.decode(cur))
        return out


def get_response_lengths(loss_masks: list[list[int]]) -> list[int]:
    """Length from the first trained token to the end (slime's rule)."""
    out = []
    for mask in loss_masks:
        first = next((i for i, m in enumerate(mask) if m), len(mask))
        out.append(len(mask) - first)
    return out
