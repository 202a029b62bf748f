"""Request parsing and validation for SGLang's native ``/generate`` (sglang 0.5.23 semantics).

Real SGLang validates a request twice, and clients see both error shapes:

* the generated JSON "contract gate" rejects unknown ``sampling_params`` keys and wrong JSON types with
  HTTP 400 ``{"error": "<serde-style text>"}`` (unknown *top-level* keys are ignored);
* ``SamplingParams.verify`` rejects bad values (``top_p`` out of range, ...) with HTTP 400
  ``{"error": {"message": "<text>"}}``.

We reproduce both so that client code written against our engines handles real servers. Plain
Python (no pydantic) because this runs once per request on the hot path of the 512-in-flight benchmark.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_NEW_TOKENS = 128
TOP_K_ALL = 1 << 30


class ContractError(ValueError):
    """Rejected by the contract gate: body ``{"error": "<text>"}``."""


class RequestValueError(ValueError):
    """Rejected by value validation: body ``{"error": {"message": "<text>"}}``."""


# Every key the 0.5.23 contract gate allows in sampling_params, with the JSON types it decodes.
# "f64" accepts ints too (serde_json does); None is always accepted (Option<T>).
_SAMPLING_FIELDS: dict[str, str] = {
    "max_new_tokens": "int",
    "stop": "str_or_str_list",
    "stop_token_ids": "int_list",
    "stop_regex": "str_or_str_list",
    "temperature": "f64",
    "top_p": "f64",
    "top_k": "int",
    "min_p": "f64",
    "frequency_penalty": "f64",
    "presence_penalty": "f64",
    "repetition_penalty": "f64",
    "min_new_tokens": "int",
    "n": "int",
    "json_schema": "str",
    "regex": "str",
    "ebnf": "str",
    "structural_tag": "any",
    "ignore_eos": "bool",
    "skip_special_tokens": "bool",
    "spaces_between_special_tokens": "bool",
    "no_stop_trim": "bool",
    "stream_interval": "int",
    "logit_bias": "str_float_map",
    "sampling_seed": "int",
    "custom_params": "object",
    "beam_width": "int",
    "watermark": "object",
    "choice": "str_list",
}
SAMPLING_PARAM_KEYS: frozenset[str] = frozenset(_SAMPLING_FIELDS)

_EXPECTED_TEXT = {
    "int": "i64",
    "f64": "f64",
    "bool": "a boolean",
    "str": "a string",
    "str_list": "a sequence of strings",
    "int_list": "a sequence of integers",
    "str_or_str_list": "a string or a sequence of strings",
    "str_float_map": "a map from token id strings to f64",
    "object": "a map",
    "any": "any value",
}


def _json_kind(v: Any) -> str:
    """serde's wording for the JSON type of ``v``."""
    if isinstance(v, bool):
        return f"boolean `{str(v).lower()}`"
    if isinstance(v, int):
        return f"integer `{v}`"
    if isinstance(v, float):
        return f"floating point `{v}`"
    if isinstance(v, str):
        return f'string "{v}"'
    if isinstance(v, list):
        return "sequence"
    if isinstance(v, dict):
        return "map"
    return "null"


def _type_ok(kind: str, v: Any) -> bool:
    if v is None or kind == "any":
        return True
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "f64":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind == "str_list":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    if kind == "int_list":
        return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    if kind == "str_or_str_list":
        return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
    if kind == "str_float_map":
        return isinstance(v, dict) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values()
        )
    if kind == "object":
        return isinstance(v, dict)
    return False


def check_sampling_contract(sp: Any) -> None:
    """Apply the contract gate to one ``sampling_params`` object; raise :class:`ContractError`."""
    if not isinstance(sp, dict):
        raise ContractError(f"invalid type: {_json_kind(sp)}, expected struct SamplingParams")
    for key, value in sp.items():
        kind = _SAMPLING_FIELDS.get(key)
        if kind is None:
            expected = ", ".join(f"`{k}`" for k in _SAMPLING_FIELDS)
            raise ContractError(f"unknown field `{key}`, expected one of {expected}")
        if not _type_ok(kind, value):
            raise ContractError(
                f"invalid type: {_json_kind(value)}, expected {_EXPECTED_TEXT[kind]} "
                f"(at `sampling_params.{key}`)"
            )


@dataclass(slots=True)
class SamplingParams:
    """Normalised sampling parameters of one request (SGLang defaults)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = TOP_K_ALL
    min_p: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    no_stop_trim: bool = False
    sampling_seed: int | None = None
    n: int = 1
    stream_interval: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-6 or self.top_k == 1

    @classmethod
    def from_json(cls, sp: dict[str, Any] | None) -> SamplingParams:
        """Build from an already contract-checked dict, then verify values like SGLang."""
        p = cls()
        if not sp:
            return p
        g = sp.get
        if g("max_new_tokens") is not None:
            p.max_new_tokens = sp["max_new_tokens"]
        if g("min_new_tokens") is not None:
            p.min_new_tokens = sp["min_new_tokens"]
        if g("temperature") is not None:
            p.temperature = float(sp["temperature"])
        if g("top_p") is not None:
            p.top_p = float(sp["top_p"])
        if g("top_k") is not None:
            p.top_k = TOP_K_ALL if sp["top_k"] == -1 else sp["top_k"]
        if g("min_p") is not None:
            p.min_p = float(sp["min_p"])
        stop = g("stop")
        if stop is not None:
            p.stop = [stop] if isinstance(stop, str) else list(stop)
            p.stop = [s for s in p.stop if s]
        if g("stop_token_ids"):
            p.stop_token_ids = frozenset(sp["stop_token_ids"])
        for flag in ("ignore_eos", "skip_special_tokens", "no_stop_trim"):
            if g(flag) is not None:
                setattr(p, flag, sp[flag])
        if g("sampling_seed") is not None:
            p.sampling_seed = sp["sampling_seed"]
        if g("n") is not None:
            p.n = sp["n"]
        if g("stream_interval") is not None:
            p.stream_interval = sp["stream_interval"]
        if p.temperature < 1e-6:
            # SGLang turns temperature 0 into greedy decoding (top_k = 1).
            p.top_k = 1
        p.verify(sp)
        return p

    def verify(self, raw: dict[str, Any]) -> None:
        """Value checks from sglang's ``SamplingParams.verify`` (messages paraphrased)."""
        if self.temperature < 0.0:
            raise RequestValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise RequestValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise RequestValueError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.top_k < 1:
            raise RequestValueError(f"top_k must be -1 (disable), or at least 1, got {self.top_k}.")
        for key in ("frequency_penalty", "presence_penalty"):
            v = raw.get(key)
            if v is not None and not -2.0 <= v <= 2.0:
                raise RequestValueError(f"{key} must be in [-2, 2], got {v}.")
        rp = raw.get("repetition_penalty")
        if rp is not None and not 0.0 < rp <= 2.0:
            raise RequestValueError(f"repetition_penalty must be in (0, 2], got {rp}.")
        if self.max_new_tokens < 0:
            raise RequestValueError(f"max_new_tokens must be at least 0, got {self.max_new_tokens}.")
        if self.min_new_tokens < 0:
            raise RequestValueError(f"min_new_tokens must be at least 0, got {self.min_new_tokens}.")
        if self.min_new_tokens > self.max_new_tokens:
            raise RequestValueError(
                f"min_new_tokens must be in [0, max_new_tokens({self.max_new_tokens})], got {self.min_new_tokens}."
            )
        if len(self.stop) > 32:
            raise RequestValueError(f"stop must have at most 32 entries, got {len(self.stop)}.")
        if self.n < 1:
            raise RequestValueError(f"n must be at least 1, got {self.n}.")
        grammars = [k for k in ("json_schema", "regex", "ebnf", "structural_tag") if raw.get(k) is not None]
        if len(grammars) > 1:
            raise RequestValueError("Only one of regex, json_schema, ebnf or structural_tag can be set.")


@dataclass(slots=True)
class GenerateItem:
    """One prompt to generate for, after batch expansion."""

    rid: str
    index: int
    text: str | None
    input_ids: list[int] | None
    params: SamplingParams
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False
    return_prompt_token_ids: bool = False


@dataclass(slots=True)
class GenerateRequest:
    """A parsed ``/generate`` body: one or more items and whether the client wants a list back."""

    items: list[GenerateItem]
    is_batch: bool
    stream: bool


def _is_int_list(v: Any) -> bool:
    # ``type(x) is int`` (not isinstance) also rejects JSON booleans, and is twice as fast.
    return isinstance(v, list) and all(type(x) is int for x in v)


_rid_rng = random.Random()  # seeded from os.urandom once; a uuid4 per request costs a syscall


def new_rid() -> str:
    """A random 32-hex-digit request id (the shape of SGLang's ``new_rid()`` default)."""
    return f"{_rid_rng.getrandbits(128):032x}"


def _per_item(value: Any, i: int, default: Any) -> Any:
    if isinstance(value, list):
        return value[i] if i < len(value) else default
    return default if value is None else value


def parse_generate(body: Any) -> GenerateRequest:
    """Turn a ``/generate`` JSON body into items; raise ContractError / RequestValueError."""
    if not isinstance(body, dict):
        raise ContractError(f"invalid type: {_json_kind(body)}, expected struct GenerateRequest")
    text = body.get("text")
    input_ids = body.get("input_ids")
    sp = body.get("sampling_params")
    if isinstance(sp, list):
        for one in sp:
            check_sampling_contract(one)
    elif sp is not None:
        check_sampling_contract(sp)
    for key, kind in (("stream", bool), ("return_text_in_logprobs", bool), ("return_prompt_token_ids", bool)):
        v = body.get(key)
        if v is not None and not isinstance(v, kind):
            raise ContractError(f"invalid type: {_json_kind(v)}, expected a boolean (at `{key}`)")

    prompts: list[tuple[str | None, list[int] | None]]
    is_batch: bool
    if text is not None:
        # SGLang: text wins when both are given.
        if isinstance(text, str):
            prompts, is_batch = [(text, None)], False
        elif isinstance(text, list) and all(isinstance(t, str) for t in text):
            prompts, is_batch = [(t, None) for t in text], True
        else:
            raise ContractError(f"invalid type: {_json_kind(text)}, expected a string or a sequence of strings (at `text`)")
    elif input_ids is not None:
        if _is_int_list(input_ids):
            prompts, is_batch = [(None, input_ids)], False
        elif isinstance(input_ids, list) and input_ids and all(_is_int_list(x) for x in input_ids):
            prompts, is_batch = [(None, x) for x in input_ids], True
        else:
            raise ContractError(
                f"invalid type: {_json_kind(input_ids)}, expected a sequence of integers or of sequences (at `input_ids`)"
            )
    else:
        raise RequestValueError("Either text, input_ids or input_embeds should be provided.")
    if not is_batch and not prompts[0][0] and not prompts[0][1]:
        raise RequestValueError("The input is empty: text or input_ids must be non-empty.")

    rid = body.get("rid")
    if rid is not None and not isinstance(rid, (str, list)):
        raise ContractError(f"invalid type: {_json_kind(rid)}, expected a string or a sequence of strings (at `rid`)")
    if isinstance(rid, list):
        if not is_batch and len(rid) == 1:
            rid = rid[0]
        elif len(rid) != len(prompts):
            raise RequestValueError("The specified rids length mismatch with the batch_size for batch processing.")
        elif len(set(rid)) != len(rid):
            raise RequestValueError("Duplicate rids in a batch request.")

    return_logprob = body.get("return_logprob", False)
    logprob_start_len = body.get("logprob_start_len", -1)
    top_logprobs_num = body.get("top_logprobs_num", 0)
    rtil = bool(body.get("return_text_in_logprobs") or False)
    rpti = bool(body.get("return_prompt_token_ids") or False)

    items: list[GenerateItem] = []
    for i, (t, ids) in enumerate(prompts):
        params = SamplingParams.from_json(sp[i] if isinstance(sp, list) else sp)
        if params.n > 1:
            is_batch = True
        for j in range(params.n):
            if params.n > 1:
                # SGLang regenerates a uuid rid for every parallel sample.
                item_rid = new_rid()
            elif isinstance(rid, list):
                item_rid = rid[i]
            elif isinstance(rid, str):
                item_rid = f"{rid}_{i}" if is_batch else rid
            else:
                item_rid = new_rid()
            items.append(
                GenerateItem(
                    rid=item_rid,
                    index=len(items),
                    text=t,
                    input_ids=ids,
                    params=params,
                    return_logprob=bool(_per_item(return_logprob, i, False)),
                    logprob_start_len=int(_per_item(logprob_start_len, i, -1)),
                    top_logprobs_num=int(_per_item(top_logprobs_num, i, 0)),
                    return_text_in_logprobs=rtil,
                    return_prompt_token_ids=rpti,
                )
            )
    return GenerateRequest(items=items, is_batch=is_batch, stream=bool(body.get("stream") or False))
