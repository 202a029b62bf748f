"""The context window: how many tokens a request may still ask for, and the 400s that say it asked too much.

SGLang 0.5.23 refuses a request whose input reaches the context length, or whose input plus
`max_new_tokens` exceeds it (400, `TokenizerManager._validate_one_request`), and one whose input
reaches `max_req_input_len` (context − 6 when the KV pool holds a full request; 400 from the
scheduler, `managers/utils.validate_input_length`). Below those limits it cuts `max_new_tokens` to
the room left itself. So every request goes out with `max_new_tokens` capped to the room left,
`context − input tokens` (as slime's multi-turn examples cap each turn), and a request with no
room is not sent.

The context length is `rollout_max_context_len` (eval: `eval_max_context_len`) when set, else what
the servers report: `max_model_len` of `GET /v1/models` (the model's effective context length)
and `max_req_input_len` of `GET /server_info`, read from each worker the router lists (the router
answers both routes itself, without them), the smallest of each. `/server_info`'s
`context_length` is the launch flag, None unless given, so it is not used.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from rollout_runtime.config import option
from rollout_runtime.http_client import EngineError, EngineRequestError, HttpClient
from rollout_runtime.rollout.workers import worker_urls
from rollout_runtime.types import Sample

log = logging.getLogger(__name__)

#: How long discovery waits for one server's answer.
INFO_TIMEOUT_S = 10.0

# The 400s of SGLang 0.5.23 that mean "this request does not fit in the context" (per sample, never fatal).
_INPUT_TOO_LONG = re.compile(r"The input \((\d+) tokens\) is longer than the model's context length \((\d+) tokens\)")
_TOTAL_TOO_LONG = re.compile(r"maximum context length of (\d+) tokens\. You requested a total of \d+ tokens: "
                             r"(\d+) tokens from the input messages")
_INPUT_OVER_MAX = re.compile(r"Input length \((\d+) tokens\) exceeds the maximum allowed length \((\d+) tokens\)")


@dataclass(frozen=True)
class ContextLimits:
    """What a server admits: `context_length` tokens in all, an input shorter than `max_input_len`.
    None: not known (no cap is applied; the server's 400 still marks the sample)."""

    context_length: int | None = None
    max_input_len: int | None = None
    source: str = "unknown"

    def room(self, input_len: int) -> int | None:
        """Tokens a request with `input_len` input tokens may still generate (0: none), or None if unknown."""
        if self.max_input_len is not None and input_len >= self.max_input_len:
            return 0
        if self.context_length is None:
            return None
        return max(0, self.context_length - input_len)


@dataclass(frozen=True)
class Overflow:
    """A context-length 400: the input as the server counted it, and the room it leaves (0: none)."""

    input_tokens: int
    limit: int
    room: int
    message: str


def context_overflow(exc: EngineError) -> Overflow | None:
    """The overflow a 4xx reports, or None when it is some other error (those stay fatal)."""
    if not isinstance(exc, EngineRequestError) or exc.status != 400:
        return None
    text = str(exc)
    if m := _TOTAL_TOO_LONG.search(text):
        limit, used = int(m.group(1)), int(m.group(2))  # input as counted, reserved speculative slots included
        return Overflow(used, limit, max(0, limit - used), text)
    for pattern in (_INPUT_TOO_LONG, _INPUT_OVER_MAX):
        if m := pattern.search(text):
            return Overflow(int(m.group(1)), int(m.group(2)), 0, text)
    return None


def configured_limits(args: Any, *, evaluation: bool) -> ContextLimits | None:
    """`rollout_max_context_len` (eval: `eval_max_context_len`, defaulting to it) when set."""
    value = option(args, "eval_max_context_len") if evaluation else None
    value = value or option(args, "rollout_max_context_len")
    if not value:
        return None
    name = "eval_max_context_len" if evaluation and option(args, "eval_max_context_len") else "rollout_max_context_len"
    return ContextLimits(int(value), None, name)


async def _server_limits(client: HttpClient, url: str) -> tuple[int | None, int | None, bool]:
    """(max_model_len of /v1/models, max_req_input_len of /server_info, whether it answered at all) of
    one server; None where it has none."""

    async def read(path: str) -> Any:
        try:
            return await asyncio.wait_for(client.get(url + path), INFO_TIMEOUT_S)
        except EngineRequestError as exc:  # it answered (a 404: a server without that route)
            log.debug("GET %s%s: %s", url, path, exc)
            return {}
        except (EngineError, asyncio.TimeoutError) as exc:
            log.debug("GET %s%s: %s", url, path, exc)
            return None

    models, info = await asyncio.gather(read("/v1/models"), read("/server_info"))
    cards = models.get("data") if isinstance(models, dict) else None
    card = cards[0] if isinstance(cards, list) and cards and isinstance(cards[0], dict) else {}
    context = card.get("max_model_len")
    max_input = info.get("max_req_input_len") if isinstance(info, dict) else None
    return (int(context) if isinstance(context, int) else None, int(max_input) if isinstance(max_input, int) else None,
            models is not None or info is not None)


async def discover_limits(client: HttpClient, base: str) -> ContextLimits:
    """The limits every server behind `base` admits (the smallest of each); unknown where none reports one."""
    # Quiet: an engine that is gone is reported once, by the generate request that follows.
    urls = await worker_urls(client, base, quiet=True)
    found = await asyncio.gather(*(_server_limits(client, u) for u in urls))
    contexts = [c for c, _, _ in found if c is not None]
    inputs = [m for _, m, _ in found if m is not None]
    limits = ContextLimits(min(contexts) if contexts else None, min(inputs) if inputs else None,
                           f"the servers at {base}")
    if limits.context_length is None and not any(answered for _, _, answered in found):
        log.debug("no server behind %s answered; its context length is read again on the next call", base)
    elif limits.context_length is None:
        log.warning("the servers behind %s report no context length (max_model_len of GET /v1/models on %s); "
                    "max_new_tokens is not capped to the room left. Set rollout_max_context_len "
                    "(--rollout-max-context-len) to cap it", base, ", ".join(urls))
    else:
        log.info("context length %d (longest input %s), from %s", limits.context_length, limits.max_input_len,
                 limits.source)
    return limits


class ContextOverflows:
    """Samples that got no room in the context: marked, counted per batch, the first one logged."""

    def __init__(self) -> None:
        self.count = 0  # this batch's (GenerateState.reset clears it)
        self.logged = False

    def mark(self, sample: Sample, *, input_tokens: int, limit: int | None, message: str) -> Sample:
        """The sample ends TRUNCATED with what it has (maybe no response); `metadata["context_overflow"]` says why."""
        self.count += 1
        if not self.logged:
            self.logged = True
            log.warning("sample %s does not fit in the context: %s. It ends TRUNCATED with the response it has "
                        "(%d tokens); further ones are counted (rollout/context_overflow)",
                        sample.index, message, sample.response_length)
        sample.status = Sample.Status.TRUNCATED
        sample.metadata["context_overflow"] = {"input_tokens": input_tokens, "limit": limit, "message": message}
        return sample
