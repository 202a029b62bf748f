"""(d) The runtime's client against sglang 0.5.23's and sglang-router 0.3.2's own code.

* Requests capped to the room left in the context: every body a rollout of long prompts sends is
  accepted by the real schema and verifier and by the real admission (``_validate_one_request``,
  ``init_req_max_new_tokens``, ``validate_input_length``), so no sample of such a dataset draws a 400.
* The 400 texts the real admission produces are the ones the client reads as "no room" (and the
  room it reads from them is what the real admission then accepts).
* The keys the client learns the context from are the real ones: ``max_model_len`` of the
  ``/v1/models`` card, ``max_req_input_len`` of the scheduler info in ``/server_info``.
* Speculative-decoding counts: the real ``_calculate_spec_decoding_metrics`` fills ``meta_info``,
  and ``Sample.spec_info`` gets the same rate and length out of it.
* The router policies the runtime config and the SGLangPool API accept are exactly sglang-router
  0.3.2's ``--policy`` choices.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any, Dict, Union

import pytest

from rollout_runtime.config import RolloutConfig
from rollout_runtime.data_source import RolloutDataSourceWithBuffer
from rollout_runtime.http_client import EngineRequestError
from rollout_runtime.rollout.context import context_overflow
from rollout_runtime.sglang_rollout import generate_rollout
from rollout_runtime.types import Sample
from tests.conformance import real_sglang
from tests.conformance.test_request_rules import CTX, real_pipeline  # noqa: F401 - the fixture, shared
from tests.conftest import TINY_MODEL, write_jsonl

TM = "srt/managers/tokenizer_manager.py"


@pytest.fixture(scope="module")
def small_context_engine() -> Iterator[Any]:
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    cfg = SimEngineConfig(tokenizer=str(TINY_MODEL), context_length=CTX, length_dist="fixed", length_median=4 * CTX,
                          answer_mode="none", record_requests=10_000)
    handle = start_sim_engine_thread(cfg)
    try:
        yield handle.value
    finally:
        handle.stop()


def test_capped_payloads_pass_the_real_admission(small_context_engine: Any, real_verdict: Any, real_pipeline: Any,
                                                 hf_tokenizer: Any, tmp_path: Path) -> None:
    rows = []
    for n in (5, 20, 40, 55, 57, 58, 60, 70):  # around CTX − max_response_len, CTX − 6 and CTX
        ids = hf_tokenizer.encode(" ".join(f"w{i}" for i in range(n)), add_special_tokens=False)[:n]
        rows.append({"prompt": hf_tokenizer.decode(ids), "label": "0", "metadata": {"n": n}})
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    args = RolloutConfig(prompt_data=data, input_key="prompt", label_key="label", hf_checkpoint=str(TINY_MODEL),
                         sglang_router_url=small_context_engine.url, rollout_batch_size=len(rows),
                         n_samples_per_prompt=2, rollout_max_response_len=32, rm_type="math",
                         eval_prompt_data=["long", data], eval_min_new_tokens=30)
    small_context_engine.clear_recorded()
    groups = generate_rollout(args, 0, RolloutDataSourceWithBuffer(args)).samples
    evaluated = generate_rollout(args, 0, None, evaluation=True).data["long"]["samples"]
    sent = small_context_engine.recorded_requests
    assert {p["sampling_params"]["max_new_tokens"] for p in sent} > {32}  # some were capped
    for body in sent:
        assert real_verdict(body) is None, body
        n, max_new = len(body["input_ids"]), body["sampling_params"]["max_new_tokens"]
        assert real_pipeline(n, max_new, False)[0] == "ok", (n, max_new)
    for s in [s for g in groups for s in g] + evaluated:
        assert s.status == Sample.Status.TRUNCATED
        assert ("context_overflow" in s.metadata) == (s.metadata["n"] >= CTX - 6)


def test_real_context_400s_are_read_as_no_room(real_pipeline: Any) -> None:
    seen = set()
    for n in (10, 40, 57, 58, 59, 63, 64, 70):
        for max_new in (1, 8, 30, 60):
            verdict = real_pipeline(n, max_new, False)
            if verdict[0] != "400":
                continue
            overflow = context_overflow(EngineRequestError(f"POST x -> HTTP 400: {verdict[1]}", status=400))
            assert overflow is not None, verdict[1]
            seen.add(verdict[1].split(" ")[0])
            assert overflow.input_tokens == n
            again = real_pipeline(n, overflow.room or 1, False)
            if overflow.room and n < CTX - 6:  # the room the server counts is what it then accepts
                assert again[0] == "ok", (n, max_new)
            else:  # no room, or an input past max_req_input_len: asked again, it is still no room
                assert again[0] == "400"
                retry = context_overflow(EngineRequestError(f"POST x -> HTTP 400: {again[1]}", status=400))
                assert retry is not None and retry.room == 0
    assert seen == {"Requested", "The", "Input"}  # all three of the real texts


def test_the_keys_the_context_is_learned_from_are_real() -> None:
    card = real_sglang.source("srt/entrypoints/openai/protocol.py").read_text()
    assert "max_model_len: Optional[int] = None" in card
    http = real_sglang.source("srt/entrypoints/http_server.py").read_text()
    assert "max_model_len=_global_state.tokenizer_manager.model_config.context_len" in http
    assert ("GET", "/v1/models") in real_sglang.routes("srt/entrypoints/http_server.py")
    assert ("GET", "/server_info") in real_sglang.routes("srt/entrypoints/http_server.py")
    assert 'scheduler_info["max_req_input_len"]' in http  # /server_info merges the scheduler info


def test_spec_decoding_counts_from_real_meta_info() -> None:
    fill = real_sglang.real_function(TM, "_calculate_spec_decoding_metrics", {
        "Dict": Dict, "Any": Any, "Union": Union, "BatchStrOutput": object, "BatchEmbeddingOutput": object,
        "BatchTokenIDOutput": object, "get_spec": lambda: NS(speculative_num_draft_tokens=4),
        "_ragged_verify_cap_accept": lambda: False,
    }, cls="TokenizerManager")
    sample = Sample()
    metas = []
    for verify_ct, correct, completion in ((3, 5, 9), (2, 1, 4)):  # two calls: a partial sample and its continuation
        meta: dict[str, Any] = {"finish_reason": {"type": "length"}, "completion_tokens": completion}
        fill(None, meta, NS(spec_verify_ct=[verify_ct], spec_num_correct_drafts=[correct],
                            completion_tokens=[completion], spec_num_cap_tokens=None,
                            spec_correct_drafts_histogram=None), 0)
        metas.append(meta)
        sample.append_response_tokens(tokens=list(range(completion)), log_probs=[0.0] * completion, meta_info=meta)
    assert metas[0]["spec_num_correct_drafts"] == 5 and metas[0]["spec_num_proposed_drafts"] == 9
    info = sample.spec_info
    assert (info.spec_accept_token_num, info.spec_draft_token_num, info.spec_verify_ct,
            info.completion_token_num) == (6, 15, 5, 13)
    assert info.spec_accept_rate == pytest.approx(6 / 15) and info.spec_accept_length == pytest.approx(13 / 5)
    one = Sample()
    one.append_response_tokens(tokens=list(range(9)), log_probs=[0.0] * 9, meta_info=metas[0])
    # one call: the rate and length SGLang itself reports
    assert one.spec_info.spec_accept_rate == pytest.approx(metas[0]["spec_accept_rate"])
    assert one.spec_info.spec_accept_length == pytest.approx(metas[0]["spec_accept_length"])


def test_router_policies_are_the_real_routers() -> None:
    from sglang_router import launch_router

    from rollout_operator.api.sglangpool_types import RouterPolicy

    real = set()
    for policy in ("random", "round_robin", "cache_aware", "power_of_two", "manual", "consistent_hashing",
                   "prefix_hash", "bucket"):
        try:
            launch_router.parse_router_args(["--worker-urls", "http://w:1", "--policy", policy])
        except SystemExit:
            continue
        real.add(policy)
    assert real == {"random", "round_robin", "cache_aware", "power_of_two", "manual"}
    ours = set(typing.get_args(typing.get_args(RolloutConfig.model_fields["router_policy"].annotation)[0]))
    assert ours == real
    assert set(typing.get_args(RouterPolicy)) == real
