"""Settings of the simulated engine (one pydantic model; every field has a ``sim-engine`` CLI flag)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SimEngineConfig(BaseModel):
    """Behaviour of a simulated engine. All fields have CLI flags (``--token-latency`` etc.)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Base seed; per-request randomness is derived from it.")
    token_latency: float = Field(0.0, ge=0, description="Seconds per generated token.")
    ttft: float = Field(0.0, ge=0, description="Extra seconds before the first token (prefill).")
    tick_s: float = Field(0.02, gt=0, description="Max simulated time between releases of tokens.")
    length_dist: Literal["fixed", "uniform", "lognormal"] = "lognormal"
    length_median: int = Field(64, ge=1, description="fixed: the length; lognormal: the median.")
    length_sigma: float = Field(0.8, ge=0, description="lognormal sigma (0.8 gives a long tail).")
    length_min: int = Field(1, ge=1, description="Lower bound (uniform range start, and clip).")
    length_max: int = Field(4096, ge=1, description="Upper bound (uniform range end, and clip).")
    vocab_size: int = Field(32000, gt=259, description="Synthetic vocabulary size (no tokenizer).")
    eos_token_id: int = Field(2, ge=0, description="Synthetic EOS id (no tokenizer).")
    tokenizer: str | None = Field(None, description="Local HF tokenizer path for real ids and text.")
    answer_mode: Literal["auto", "arithmetic", "regex", "none"] = "auto"
    answer_regex: str | None = Field(None, description="Regex (group 1) extracting the answer from the prompt.")
    answer_accuracy: float = Field(0.5, ge=0, le=1, description="Mean probability of a right answer.")
    answer_concentration: float = Field(
        1.0, gt=0, description="Beta concentration of per-prompt accuracy (small: polarised prompts)."
    )
    answer_template: str = Field(" The answer is \\boxed{{{answer}}}.", description="str.format with {answer}.")
    logprob_mean: float = Field(0.8, gt=0, description="Mean of -logprob for sampled tokens.")
    max_running_requests: int | None = Field(None, ge=1, description="Queue requests beyond this many.")
    context_length: int = Field(4096, ge=8, description="Tokens of prompt plus response a request may use (SGLang's "
                                                        "--context-length): longer requests get SGLang's 400.")
    allow_auto_truncate: bool = Field(False, description="SGLang's --allow-auto-truncate: cut what does not fit "
                                                         "instead of answering 400.")
    weight_load_seconds: float = Field(0.05, ge=0, description="How long /update_weights_from_disk takes.")
    model_name: str = "kuberollout-sim"
    weight_version: str = "default"
    record_requests: int = Field(256, ge=0, description="How many /generate payloads to keep.")

    @model_validator(mode="after")
    def _check(self) -> SimEngineConfig:
        if self.length_min > self.length_max:
            raise ValueError("length_min must be <= length_max")
        if self.answer_mode == "regex" and not self.answer_regex:
            raise ValueError("answer_mode 'regex' needs answer_regex")
        if self.answer_regex:
            re.compile(self.answer_regex)
        return self
