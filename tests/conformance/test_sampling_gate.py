"""(b) Our stand-ins accept and refuse /generate bodies exactly as real SGLang 0.5.23 does.

For every row of a table of valid and invalid bodies, the verdict of the real code (the contract gate
``api_types.GenerateRequest.from_json_value``, then ``SamplingParams(**sp).normalize(tokenizer)
.verify(vocab_size)``) is compared with ours (:mod:`rollout_runtime.engines.gate` and
:func:`rollout_runtime.engines.params.sampling_params_from_json`): same accept/refuse, same kind of
400, same message text. A subset then goes over HTTP to a simulated engine, to check the status and
the two body shapes a client branches on.
"""

from __future__ import annotations

from typing import Any

import pytest

from rollout_runtime.engines.gate import ContractError, check_generate_contract
from rollout_runtime.engines.params import RequestValueError, UnsupportedParamError, sampling_params_from_json
from tests.conformance.verdicts import Verdict, verdict_of
from tests.engines.helpers import EngineClient

SAMPLING_ROWS: list[dict[str, Any]] = [
    {},
    {"temperature": 0},
    {"temperature": 0.0, "top_k": 5},
    {"temperature": 1e-7},
    {"temperature": -0.5},
    {"temperature": 2.5},
    {"temperature": None},
    {"top_p": 0},
    {"top_p": 0.0},
    {"top_p": 1.5},
    {"top_p": 1},
    {"top_p": -0.1},
    {"top_k": 0},
    {"top_k": -1},
    {"top_k": -2},
    {"top_k": 1},
    {"top_k": None},
    {"min_p": -0.1},
    {"min_p": 1.1},
    {"min_p": 0.5},
    {"max_new_tokens": 5, "min_new_tokens": 6},
    {"min_new_tokens": -1},
    {"max_new_tokens": -1},
    {"max_new_tokens": 0},
    {"max_new_tokens": None},
    {"max_new_tokens": True},
    {"max_new_tokens": 1.5},
    {"frequency_penalty": 2.5},
    {"frequency_penalty": -2},
    {"presence_penalty": -3},
    {"repetition_penalty": 0},
    {"repetition_penalty": 2},
    {"repetition_penalty": 2.1},
    {"n": 0},
    {"n": 2},
    {"max_tokens": 8},
    {"best_of": 2},
    {"temperature": "0.5"},
    {"ignore_eos": "yes"},
    {"ignore_eos": True, "skip_special_tokens": False, "no_stop_trim": True, "spaces_between_special_tokens": False},
    {"stop": 5},
    {"stop": [1]},
    {"stop": ""},
    {"stop": "</s>"},
    {"stop": [f"s{i}" for i in range(32)]},
    {"stop": [f"s{i}" for i in range(33)]},
    {"stop_token_ids": ["a"]},
    {"stop_token_ids": [True]},
    {"stop_token_ids": [2, 3]},
    {"stop_regex": [f"r{i}" for i in range(33)]},
    {"stop_regex": "x" * 300},
    {"stop_regex": "\\d+"},
    {"logit_bias": {"5": 1.0}},
    {"logit_bias": {"999999": 1.0}},
    {"logit_bias": {"abc": 1.0}},
    {"logit_bias": {"5": "x"}},
    {"sampling_seed": 2**63},
    {"sampling_seed": -(2**63) - 1},
    {"sampling_seed": 42},
    {"sampling_seed": "42"},
    {"json_schema": "{}", "regex": "a+"},
    {"json_schema": "{}", "regex": ""},
    {"beam_width": 0},
    {"watermark": {"foo": 1}},
    {"choice": ["a", "b"]},
    {"choice": "a"},
    {"custom_params": {"x": 1}},
    {"stream_interval": 2},
]

TOP_LEVEL_ROWS: list[dict[str, Any]] = [
    {"text": 5},
    {"text": ["a", 1]},
    {"input_ids": "x"},
    {"input_ids": [1, "a"]},
    {"input_ids": [[1, 2], "a"]},
    {"input_ids": [1.5]},
    {"stream": "yes"},
    {"rid": 5},
    {"rid": ["a", 2]},
    {"return_logprob": "x"},
    {"return_logprob": [True, "x"]},
    {"logprob_start_len": 1.5},
    {"top_logprobs_num": "2"},
    {"return_prompt_token_ids": None},
    {"return_text_in_logprobs": 1},
    {"no_such_field": 1},
    {"sampling_params": 5},
    {"sampling_params": [{"max_tokens": 1}]},
    {"custom_labels": {"a": 1}},
    {"routing_key": 5},
    {"max_thinking_tokens": -1},
    {"priority": "high"},
    {"lora_path": [None, 3]},
]


@pytest.fixture(scope="module")
def our_verdict(hf_tokenizer: Any) -> Any:
    vocab = len(hf_tokenizer)

    def verdict(body: dict[str, Any]) -> Verdict:
        return verdict_of(body, check_generate_contract, ContractError, lambda sp: sampling_params_from_json(sp, vocab),
                          RequestValueError, UnsupportedParamError)

    return verdict


@pytest.mark.parametrize("sp", SAMPLING_ROWS, ids=[str(r)[:60] for r in SAMPLING_ROWS])
def test_sampling_params_verdicts_match_real(sp: dict[str, Any], real_verdict: Any, our_verdict: Any) -> None:
    body = {"input_ids": [1, 2, 3], "sampling_params": sp}
    assert our_verdict(body) == real_verdict(body)


@pytest.mark.parametrize("extra", TOP_LEVEL_ROWS, ids=[str(r)[:60] for r in TOP_LEVEL_ROWS])
def test_top_level_verdicts_match_real(extra: dict[str, Any], real_verdict: Any, our_verdict: Any) -> None:
    body = {"input_ids": [1, 2, 3], **extra}
    assert our_verdict(body) == real_verdict(body)


def test_table_covers_both_verdicts(real_verdict: Any) -> None:
    """The table is not all-accept or all-refuse: each kind of outcome appears."""
    kinds = {(real_verdict({"input_ids": [1], "sampling_params": sp}) or ("ok",))[0] for sp in SAMPLING_ROWS}
    assert kinds == {"ok", "contract", "value", "internal"}


async def test_http_status_and_body_shapes(sim_engine: Any, real_verdict: Any) -> None:
    """Over HTTP: accepted -> 200; contract -> 400 {"error": text}; value -> 400 {"error": {"message": text}};
    an exception SGLang does not catch -> Starlette's plain-text 500."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        for sp in SAMPLING_ROWS:
            sp = sp if "max_new_tokens" in sp else {**sp, "max_new_tokens": 4}
            body = {"input_ids": [1, 2, 3], "sampling_params": sp}
            want = real_verdict(body)
            status, got = await client.post(sim_engine.url + "/generate", body)
            if want is None:
                assert status == 200, (sp, got)
            elif want[0] == "contract":
                assert (status, got) == (400, {"error": want[1]}), sp
            elif want[0] == "internal":
                assert (status, got) == (500, "Internal Server Error"), sp
            else:
                assert (status, got) == (400, {"error": {"message": want[1]}}), sp
