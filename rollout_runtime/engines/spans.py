"""Weight-version spans of a request's output tokens, as SGLang 0.5.23 records them.

Mirrors ``sglang/srt/utils/weight_versions.py``: when the scheduler's weight version changes
(``/update_weight_version`` or a successful weight update), every live request that already has
output tokens records an event ``(old version, tokens so far)``; a request without output tokens
records nothing. When the request finishes, the events plus ``(current version, tokens)`` become
``meta_info.weight_versions`` = ``[{"version", "start", "end"}, ...]`` (always present on a finished
request) and ``meta_info.weight_version`` becomes the last span's version. ``tests/conformance``
checks these functions against the real module.
"""

from __future__ import annotations

from typing import Any

#: One event: (the version before the change, how many output tokens the request had then).
Event = tuple[str, int]


def compute_spans(events: list[Event] | None, current_version: str, num_output_tokens: int) -> list[list[Any]]:
    """``compute_weight_version_spans``: [version, start, end] spans covering the output."""
    changes = list(events or ())
    changes.append((current_version, num_output_tokens))
    spans: list[list[Any]] = []
    for version, end in changes:
        end = min(end, num_output_tokens)
        if spans and end <= spans[-1][2]:
            continue
        if spans and version == spans[-1][0]:
            spans[-1][2] = end
            continue
        start = spans[-1][2] if spans else 0
        spans.append([version, start, end])
    return spans


def add_to_meta_info(meta_info: dict[str, Any], spans: list[list[Any]], num_output_tokens: int) -> None:
    """``add_weight_versions_to_meta_info``: the visible spans, and the last one's version."""
    visible = [s for s in spans if s[1] < num_output_tokens or s[1] == 0]
    meta_info["weight_versions"] = [
        {"version": v, "start": start, "end": min(end, num_output_tokens)} for v, start, end in visible
    ]
    meta_info["weight_version"] = visible[-1][0]
