"""Fixtures of the conformance suite: the real sglang 0.5.23 pieces, and engines to hold them against."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.conformance import real_sglang
from tests.conformance.verdicts import Verdict, verdict_of
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="session")
def real_api() -> ModuleType:
    """``sglang/api/v1/api_types.py``: the /generate contract gate and response schema."""
    return real_sglang.load_api_types()


@pytest.fixture(scope="session")
def real_sampling() -> ModuleType:
    """``sglang/srt/sampling/sampling_params.py``: ``SamplingParams`` and its ``verify``."""
    return real_sglang.load_sampling_params()


@pytest.fixture(scope="session")
def hf_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_MODEL))


@pytest.fixture(scope="session")
def real_verdict(real_api: ModuleType, real_sampling: ModuleType, hf_tokenizer: Any) -> Any:
    """What real SGLang says about a /generate body before generating: None (accepted), or
    ("contract", text) for the 400 ``{"error": text}``, ("value", text) for the 400
    ``{"error": {"message": text}}`` of ``SamplingParams.normalize`` / ``verify``, or ("internal",
    text) for an exception the server does not catch (HTTP 500)."""

    vocab = len(hf_tokenizer)

    def sampling(sp: dict[str, Any]) -> None:
        params = real_sampling.SamplingParams(**sp)
        params.normalize(hf_tokenizer)
        params.verify(vocab)

    def verdict(body: dict[str, Any]) -> Verdict:
        return verdict_of(body, real_api.GenerateRequest.from_json_value, real_api.JsonContractError, sampling,
                          ValueError, TypeError)

    return verdict


@pytest.fixture(scope="module")
def sim_engine() -> Iterator[Any]:
    """A simulated engine with a small context (64 tokens) so context rules are cheap to hit."""
    from rollout_runtime.engines.sim import SimEngineConfig, start_sim_engine_thread

    cfg = SimEngineConfig(tokenizer=str(TINY_MODEL), context_length=64, token_latency=0.01, length_dist="fixed",
                          length_median=20, answer_mode="none", record_requests=16)
    handle = start_sim_engine_thread(cfg)
    try:
        yield handle.value
    finally:
        handle.stop()
