"""The /generate contract gate of sglang 0.5.23, with its exact error texts.

Real SGLang decodes every /generate body with the generated schema ``sglang/api/v1/api_types.py``
(``GenerateRequest.from_json_value``, called by ``http_server.generate_request``) before serving it:
unknown top-level keys are ignored, unknown ``sampling_params`` keys and wrong JSON types are a 400
``{"error": "<text>"}`` whose text is serde's (``unknown field `max_tokens`, expected one of ...``,
``invalid type: string "0.5", expected f64``). This module re-implements that decoding for the
fields a text model uses, producing the same texts; ``tests/conformance`` runs both gates over the
same bodies and compares the verdicts and the messages. Multimodal, kv-hint and image-config
fields are not type-checked here (our engines ignore them).

Plain Python on purpose: it runs once per request on the 512-in-flight benchmark's hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ContractError(ValueError):
    """Rejected by the contract gate: HTTP 400 ``{"error": "<text>"}``."""


def _unexpected(v: Any) -> str:
    """serde's ``Unexpected`` display."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean `{'true' if v else 'false'}`"
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
    return type(v).__name__


def _invalid(v: Any, expected: str) -> ContractError:
    return ContractError(f"invalid type: {_unexpected(v)}, expected {expected}")


def _unknown_field(key: str, fields: tuple[str, ...]) -> ContractError:
    listed = ", ".join(f"`{f}`" for f in fields)
    return ContractError(f"unknown field `{key}`, expected one of {listed}")


def _int(v: Any, expected: str = "i64") -> None:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _invalid(v, expected)


def _uint(v: Any, expected: str) -> None:
    _int(v, expected)
    if v < 0:
        raise ContractError(f"invalid value: integer `{v}`, expected {expected}")


def _float(v: Any) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise _invalid(v, "f64")


def _bool(v: Any, expected: str = "a boolean") -> None:
    if not isinstance(v, bool):
        raise _invalid(v, expected)


def _str(v: Any, expected: str = "a string") -> None:
    if not isinstance(v, str):
        raise _invalid(v, expected)


def _seq(v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise _invalid(v, "a sequence")
    return v


def _map(v: Any, expected: str = "a map") -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _invalid(v, expected)
    return v


def _or_list(element: Callable[[Any], None], scalar: Callable[[Any, str], None], name: str,
             optional: bool = False) -> Callable[[Any], None]:
    """A schema ``XOrList``: one value, or a list of them (``Optional`` elements may be null)."""
    expected = f"a value or an array of values for {name}"

    def check(v: Any) -> None:
        if isinstance(v, list):
            for e in v:
                if not (optional and e is None):
                    element(e)
        else:
            scalar(v, expected)

    return check


def _string_list(v: Any) -> None:
    for e in _seq(v):
        _str(e)


def _int_list(v: Any) -> None:
    # Fast path first (prompts are thousands of ids): every element exactly int (bools are not).
    if type(v) is list and set(map(type, v)) <= _INT_ONLY:
        return
    for e in _seq(v):
        _int(e)


_INT_ONLY = frozenset({int})
_string_or_list = _or_list(_str, _str, "StringOrList")
_int_or_list = _or_list(_int, _int, "Int64OrList")
_bool_or_list = _or_list(_bool, _bool, "BoolOrList")
_optional_string_or_list = _or_list(_str, _str, "OptionalStringOrList", optional=True)
_optional_int_or_list = _or_list(_int, _int, "OptionalInt64OrList", optional=True)


def _token_ids_or_list(v: Any) -> None:
    if not isinstance(v, list):
        raise _invalid(v, "a value or an array of values for TokenIdsOrList")
    # [] and [scalar, ...] are one flat list; anything else is a batch.
    if not v or (isinstance(v[0], (int, float)) and not isinstance(v[0], bool)):
        _int_list(v)
    else:
        for e in v:
            _int_list(e)


def _str_map(v: Any) -> None:
    for e in _map(v).values():
        _str(e)


def _float_map(v: Any) -> None:
    for e in _map(v).values():
        _float(e)


def _any(v: Any) -> None:
    return None


_WATERMARK_FIELDS: dict[str, Callable[[Any], None]] = {"enabled": _bool, "key": _str, "context_window": _int}


def _watermark(v: Any) -> None:
    for key, x in _map(v, "struct WatermarkRequestConfig").items():
        check = _WATERMARK_FIELDS.get(key)
        if check is None:
            raise _unknown_field(key, tuple(_WATERMARK_FIELDS))
        if x is not None:
            check(x)


# ``api_types._FIELDS_SamplingParams``, in the schema's order (the unknown-field text lists them).
SAMPLING_FIELDS: dict[str, Callable[[Any], None]] = {
    "max_new_tokens": _int,
    "stop": _string_or_list,
    "stop_token_ids": _int_list,
    "stop_regex": _string_or_list,
    "temperature": _float,
    "top_p": _float,
    "top_k": _int,
    "min_p": _float,
    "frequency_penalty": _float,
    "presence_penalty": _float,
    "repetition_penalty": _float,
    "min_new_tokens": _int,
    "n": _int,
    "json_schema": _str,
    "regex": _str,
    "ebnf": _str,
    "structural_tag": _str,
    "ignore_eos": _bool,
    "skip_special_tokens": _bool,
    "spaces_between_special_tokens": _bool,
    "no_stop_trim": _bool,
    "stream_interval": _int,
    "logit_bias": _float_map,
    "sampling_seed": _int,
    "custom_params": _any,
    "beam_width": _int,
    "watermark": _watermark,
    "choice": _string_list,
}
SAMPLING_PARAM_KEYS: frozenset[str] = frozenset(SAMPLING_FIELDS)
_SAMPLING_FIELD_NAMES = tuple(SAMPLING_FIELDS)


def check_sampling_params(sp: Any) -> None:
    """Decode one ``sampling_params`` object like ``api_types.decode_SamplingParams``."""
    if not isinstance(sp, dict):
        raise _invalid(sp, "struct SamplingParams")
    for key, value in sp.items():
        check = SAMPLING_FIELDS.get(key)
        if check is None:
            raise _unknown_field(key, _SAMPLING_FIELD_NAMES)
        if value is not None:
            check(value)


def _sampling_params_or_list(v: Any) -> None:
    if isinstance(v, list):
        for e in v:
            check_sampling_params(e)
    elif isinstance(v, dict):
        check_sampling_params(v)
    else:
        raise _invalid(v, "a value or an array of values for SamplingParamsOrList")


# Top-level GenerateRequest fields (unknown ones are ignored). None skips the check, except for
# the two non-optional fields below, which the schema decodes even when null.
_GENERATE_FIELDS: dict[str, Callable[[Any], None]] = {
    "rid": _string_or_list,
    "text": _string_or_list,
    "input_ids": _token_ids_or_list,
    "stream": _bool,
    "sampling_params": _sampling_params_or_list,
    "return_logprob": _bool_or_list,
    "logprob_start_len": _int_or_list,
    "top_logprobs_num": _int_or_list,
    "token_ids_logprob": _token_ids_or_list,
    "return_hidden_states": _bool_or_list,
    "return_text_in_logprobs": _bool,
    "bootstrap_host": _optional_string_or_list,
    "bootstrap_port": _optional_int_or_list,
    "bootstrap_room": _optional_int_or_list,
    "bootstrap_pair_key": _optional_string_or_list,
    "decode_tp_size": _optional_int_or_list,
    "routed_dp_rank": _int,
    "disagg_prefill_dp_rank": _int,
    "extra_key": _string_or_list,
    "priority": _int,
    "cache_salt": _string_or_list,
    "require_reasoning": _bool,
    "lora_path": _optional_string_or_list,
    "routing_key": _str,
    "max_thinking_tokens": lambda v: _uint(v, "u64"),
    "session_id": _str,
    "custom_logit_processor": _optional_string_or_list,
    "custom_labels": _str_map,
    "return_sampling_mask": _bool_or_list,
}
_NON_OPTIONAL: dict[str, Callable[[Any], None]] = {
    "return_prompt_token_ids": _bool,
    "routed_experts_start_len": _int,
}


def check_generate_contract(body: Any) -> None:
    """Raise :class:`ContractError` with SGLang's text if the real gate would refuse ``body``."""
    if not isinstance(body, dict):
        raise _invalid(body, "struct GenerateRequest")
    for key, value in body.items():
        check = _GENERATE_FIELDS.get(key)
        if check is not None:
            if value is not None:
                check(value)
            continue
        strict = _NON_OPTIONAL.get(key)
        if strict is not None:
            strict(value)
