"""Samples keep SGLang's weight-version spans, in response positions, across calls (and into batch files)."""

from __future__ import annotations

from rollout_runtime.output import read_batch, write_batch
from rollout_runtime.types import Sample


def finished(n: int, spans: list[dict[str, object]], version: str) -> dict[str, object]:
    return {"finish_reason": {"type": "stop"}, "weight_version": version, "weight_versions": spans,
            "completion_tokens": n}


def test_spans_accumulate_across_calls_shifted_to_response_positions(tmp_path) -> None:
    s = Sample(tokens=[1, 2])
    # First call (aborted at the end of a rollout, continued later): 3 tokens under "1".
    s.append_response_tokens(tokens=[5, 6, 7], log_probs=[0.0] * 3,
                             meta_info={"finish_reason": {"type": "abort"}, "weight_version": "1",
                                        "weight_versions": [{"version": "1", "start": 0, "end": 3}]})
    # A streamed chunk without finish_reason records nothing.
    s.append_response_tokens(tokens=[], log_probs=[], meta_info={"weight_versions": [{"version": "x", "start": 0,
                                                                                      "end": 9}]})
    # Second call: the weights changed after 2 of its 4 tokens.
    s.append_response_tokens(tokens=[8, 9, 10, 11], log_probs=[0.0] * 4,
                             meta_info=finished(4, [{"version": "1", "start": 0, "end": 2},
                                                    {"version": "2", "start": 2, "end": 4}], "2"))
    assert s.weight_versions == ["1", "2"]  # slime's field: one per finished call
    assert s.weight_version_spans == [{"version": "1", "start": 0, "end": 3}, {"version": "1", "start": 3, "end": 5},
                                      {"version": "2", "start": 5, "end": 7}]
    for fmt in ("jsonl", "parquet"):
        (back,) = read_batch(write_batch(str(tmp_path / fmt), 0, [[s]], fmt, "a1-00ff00"))
        assert back.weight_version_spans == s.weight_version_spans
