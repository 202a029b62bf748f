"""Request normalisation and sampling-parameter checks of SGLang's native ``/generate`` (0.5.23).

After the contract gate (:mod:`.gate`), real SGLang rejects a request in two more places, both
answered with HTTP 400 ``{"error": {"message": "<text>"}}`` (or, for a streaming request, an
in-band ``data: {"error": ...}`` event after HTTP 200):

* ``GenerateReqInput.normalize_batch_and_arguments`` (io_struct.py): the batch and rid shapes;
* ``SamplingParams.__post_init__`` / ``normalize`` / ``verify`` (sampling/sampling_params.py), per
  item, after the context-length check. :func:`sampling_params_from_json` repeats those three
  steps in the same order with the same messages; ``tests/conformance`` compares it with the real
  class over a table of valid and invalid parameters.

Plain Python (no pydantic): this runs once per request on the 512-in-flight benchmark's hot path.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_NEW_TOKENS = 128
TOP_K_ALL = 1 << 30
_SAMPLING_EPS = 1e-6
MAX_STOP_COUNT = 32
MAX_STOP_REGEX_LEN = 256
MAX_STOP_REGEX_COUNT = 32


class RequestValueError(ValueError):
    """A ValueError while serving a request: body ``{"error": {"message": "<text>"}}``."""


class UnsupportedParamError(TypeError):
    """A parameter the gate admits but SGLang's ``SamplingParams`` cannot take: an uncaught
    TypeError in the real server, so HTTP 500 ``Internal Server Error``."""


@dataclass(slots=True)
class SamplingParams:
    """Normalised sampling parameters of one request (SGLang's defaults and post-processing)."""

    max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS
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
        return self.top_k == 1


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def sampling_params_from_json(sp: dict[str, Any] | None, vocab_size: int) -> SamplingParams:
    """``SamplingParams(**sp)``, ``.normalize()`` and ``.verify(vocab_size)`` as SGLang runs them.

    ``sp`` has passed the contract gate (known keys, JSON types right). Raises
    :class:`RequestValueError` with SGLang's message for the first rule broken.
    """
    p = SamplingParams()
    if not sp:
        return p
    g = sp.get
    # __post_init__: None means "the default" for the non-optional fields.
    p.max_new_tokens = sp["max_new_tokens"] if "max_new_tokens" in sp else DEFAULT_MAX_NEW_TOKENS
    if "choice" in sp:
        # The contract gate knows `choice`; the SamplingParams struct does not: a TypeError, which
        # SGLang does not catch (HTTP 500).
        raise UnsupportedParamError("Unexpected keyword argument 'choice'")
    # Numbers stay as sent (SamplingParams(**kwargs) does not convert them): messages print them so.
    temperature = _or(g("temperature"), 1.0)
    p.top_p = _or(g("top_p"), 1.0)
    p.top_k = _or(g("top_k"), -1) if "top_k" in sp else TOP_K_ALL
    p.min_p = _or(g("min_p"), 0.0)
    p.min_new_tokens = _or(g("min_new_tokens"), 0)
    p.n = _or(g("n"), 1)
    p.ignore_eos = _or(g("ignore_eos"), False)
    p.skip_special_tokens = _or(g("skip_special_tokens"), True)
    p.no_stop_trim = _or(g("no_stop_trim"), False)
    p.sampling_seed = g("sampling_seed")
    p.stream_interval = g("stream_interval")
    stop_ids = g("stop_token_ids")
    if stop_ids:
        p.stop_token_ids = frozenset(int(t) for t in stop_ids)
    if 0 <= temperature < _SAMPLING_EPS:
        temperature, p.top_k = 1.0, 1  # greedy
    if p.top_k == -1:
        p.top_k = TOP_K_ALL
    p.temperature = temperature
    # normalize(): stop strings and stop regexes.
    stop = g("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else list(stop)
        if len(stops) > MAX_STOP_COUNT:
            raise RequestValueError(f"at most {MAX_STOP_COUNT} stop strings are allowed, got {len(stops)}")
        p.stop = [s for s in stops if s]
    stop_regex = g("stop_regex")
    if stop_regex is not None:
        regexes = [stop_regex] if isinstance(stop_regex, str) else list(stop_regex)
        if len(regexes) > MAX_STOP_REGEX_COUNT:
            raise RequestValueError(
                f"at most {MAX_STOP_REGEX_COUNT} stop_regex patterns are allowed, got {len(regexes)}"
            )
        for rx in regexes:
            n_bytes = len(rx.encode("utf-8"))
            if n_bytes > MAX_STOP_REGEX_LEN:
                raise RequestValueError(f"stop_regex is {n_bytes} bytes, over the {MAX_STOP_REGEX_LEN}-byte limit")
    _verify(p, sp, vocab_size)
    return p


def _verify(p: SamplingParams, sp: dict[str, Any], vocab_size: int) -> None:
    """``SamplingParams.verify``: same checks, same order, same messages."""
    g = sp.get
    beam_width = g("beam_width")
    if beam_width is not None and beam_width < 1:
        raise RequestValueError(f"beam_width must be at least 1, got {beam_width}.")
    if not math.isfinite(p.temperature) or p.temperature < 0.0:
        raise RequestValueError(f"temperature must be a non-negative finite number, got {p.temperature}.")
    if not 0.0 < p.top_p <= 1.0:
        raise RequestValueError(f"top_p must be in (0, 1], got {p.top_p}.")
    if not 0.0 <= p.min_p <= 1.0:
        raise RequestValueError(f"min_p must be in [0, 1], got {p.min_p}.")
    if p.top_k < 1 or p.top_k == -1:
        raise RequestValueError(f"top_k must be -1 (disable) or at least 1, got {p.top_k}.")
    frequency_penalty = _or(g("frequency_penalty"), 0.0)
    if not -2.0 <= frequency_penalty <= 2.0:
        raise RequestValueError(f"frequency_penalty must be in [-2, 2], got {frequency_penalty}.")
    presence_penalty = _or(g("presence_penalty"), 0.0)
    if not -2.0 <= presence_penalty <= 2.0:
        raise RequestValueError(f"presence_penalty must be in [-2, 2], got {presence_penalty}.")
    repetition_penalty = _or(g("repetition_penalty"), 1.0)
    if not 0.0 < repetition_penalty <= 2.0:
        raise RequestValueError(f"repetition_penalty must be in (0, 2] (1.0 = no penalty), got {repetition_penalty}.")
    if not 0 <= p.min_new_tokens:
        raise RequestValueError(f"min_new_tokens must be in [0, max_new_tokens], got {p.min_new_tokens}.")
    if p.max_new_tokens is not None:
        if p.max_new_tokens < 0:
            raise RequestValueError(f"max_new_tokens must be at least 0, got {p.max_new_tokens}.")
        if not p.min_new_tokens <= p.max_new_tokens:
            raise RequestValueError(
                f"min_new_tokens must be in [0, max_new_tokens({p.max_new_tokens})], got {p.min_new_tokens}."
            )
    for token_id in g("logit_bias") or {}:
        try:
            tid = int(token_id)
        except ValueError as e:
            raise RequestValueError(str(e)) from None
        if not 0 <= tid < vocab_size:
            raise RequestValueError(f"logit_bias must has keys in [0, {vocab_size - 1}], got {token_id}.")
    if p.sampling_seed is not None and not -(2**63) <= p.sampling_seed <= 2**63 - 1:
        raise RequestValueError(f"sampling_seed must be in [-2**63, 2**63 - 1], got {p.sampling_seed}.")
    # An empty grammar constraint means "unset" (__post_init__).
    if sum(1 for k in ("json_schema", "regex", "ebnf", "structural_tag") if g(k)) > 1:
        raise RequestValueError("Only one of json_schema, regex, ebnf, or structural_tag can be set.")


@dataclass(slots=True)
class GenerateItem:
    """One prompt to generate for, after batch expansion (sampling params not yet checked)."""

    rid: str
    index: int
    text: str | None
    input_ids: list[int] | None
    sampling: dict[str, Any] | None
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False
    return_prompt_token_ids: bool = False


@dataclass(slots=True)
class GenerateRequest:
    """A normalised ``/generate`` body: one or more items and whether the client wants a list back."""

    items: list[GenerateItem]
    is_batch: bool
    stream: bool


_rid_rng = random.Random()  # seeded from os.urandom once; a uuid4 per request costs a syscall


def new_rid() -> str:
    """A random 32-hex-digit request id (the shape of SGLang's ``uuid.uuid4().hex`` default)."""
    return f"{_rid_rng.getrandbits(128):032x}"


def _per_item(value: Any, i: int, default: Any) -> Any:
    if isinstance(value, list):
        return value[i] if i < len(value) else default
    return default if value is None else value


def _parallel_n(sp: Any) -> int:
    first = sp[0] if isinstance(sp, list) and sp else sp
    n = first.get("n") if isinstance(first, dict) else None
    if isinstance(sp, list):
        for one in sp:
            if (one.get("n") if isinstance(one, dict) else None) != n:
                raise RequestValueError(
                    "The parallel_sample_num should be the same for all samples in sample params."
                )
    return n if isinstance(n, int) and n > 1 else 1


def parse_generate(body: dict[str, Any]) -> GenerateRequest:
    """Normalise a gate-checked ``/generate`` body into items (``normalize_batch_and_arguments``)."""
    text = body.get("text")
    input_ids = body.get("input_ids")
    sp = body.get("sampling_params")
    prompts: list[tuple[str | None, list[int] | None]]
    if text is not None:  # text wins when both are given
        is_batch = isinstance(text, list)
        prompts = [(t, None) for t in text] if is_batch else [(text, None)]
    elif input_ids is not None:
        if not input_ids:
            raise RequestValueError("input_ids cannot be empty.")
        is_batch = isinstance(input_ids[0], list)
        prompts = [(None, x) for x in input_ids] if is_batch else [(None, input_ids)]
    else:
        raise RequestValueError("Either text, input_ids or input_embeds should be provided.")
    n = _parallel_n(sp)
    if n > 1:
        is_batch = True

    rid = body.get("rid")
    num = len(prompts)
    if is_batch:
        if rid is None:
            rids = [new_rid() for _ in range(num)]
        elif isinstance(rid, str):
            rids = [f"{rid}_{i}" for i in range(num)]
        else:
            if len(rid) != num:
                raise RequestValueError("The specified rids length mismatch with the batch_size for batch processing.")
            rids = list(rid)
    else:
        single = rid[0] if isinstance(rid, list) and len(rid) == 1 else rid
        if single is not None and not isinstance(single, str):
            raise RequestValueError("The rid should be a string or a list of strings.")
        rids = [single if single is not None else new_rid()]
    if len(rids) > 1 and len(set(rids)) != len(rids):
        dup = [r for r, c in Counter(rids).items() if c > 1]
        raise RequestValueError(f"Duplicate request IDs detected within the request: {dup}")

    return_logprob = body.get("return_logprob", False)
    logprob_start_len = body.get("logprob_start_len", -1)
    top_logprobs_num = body.get("top_logprobs_num", 0)
    rtil = bool(body.get("return_text_in_logprobs") or False)
    rpti = bool(body.get("return_prompt_token_ids") or False)

    items: list[GenerateItem] = []
    for i, (t, ids) in enumerate(prompts):
        item_sp = sp[i] if isinstance(sp, list) else sp
        for _ in range(n):
            items.append(
                GenerateItem(
                    # SGLang regenerates a uuid rid for every parallel sample.
                    rid=new_rid() if n > 1 else rids[i],
                    index=len(items),
                    text=t,
                    input_ids=ids,
                    sampling=item_sp,
                    return_logprob=bool(_per_item(return_logprob, i, False)),
                    logprob_start_len=int(_per_item(logprob_start_len, i, -1)),
                    top_logprobs_num=int(_per_item(top_logprobs_num, i, 0)),
                    return_text_in_logprobs=rtil,
                    return_prompt_token_ids=rpti,
                )
            )
    return GenerateRequest(items=items, is_batch=is_batch, stream=bool(body.get("stream") or False))
