"""The response objects of /generate, shaped as ``tokenizer_manager`` builds them in sglang 0.5.23.

Three shapes a client sees:

* a streaming chunk of an unfinished request (``_handle_batch_output``): cumulative ``text`` and
  ``output_ids``, ``finish_reason: null``, the served ``weight_version``;
* a finished request (``_handle_batch_output`` + ``_wait_one_response``): adds ``e2e_latency``,
  ``response_sent_to_client_ts`` and the ``weight_versions`` spans, whose last version becomes
  ``weight_version`` (``weight_versions.add_weight_versions_to_meta_info``);
* a request aborted while not in the running batch (``_handle_abort_req``): finish reason
  ``{"type": "abort", "message": "Abort in waiting queue"}`` and a smaller ``meta_info``, without
  ``prompt_tokens``, ``cached_tokens``, ``reasoning_tokens`` or ``num_retractions``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .spans import add_to_meta_info, compute_spans

if TYPE_CHECKING:
    from .backend import RequestState
    from .core import EngineCore

QUEUED_ABORT = {"type": "abort", "message": "Abort in waiting queue"}


def _text(core: EngineCore, st: RequestState, final: bool) -> str:
    p = st.params
    skip = p.skip_special_tokens
    out_ids = st.out_ids
    finish = st.finish if final else None
    if finish is not None and finish["type"] == "stop" and not p.no_stop_trim:
        matched = finish.get("matched")
        if isinstance(matched, str):
            text = core.codec.decode(out_ids, skip)
            idx = text.find(matched)
            return text[:idx] if idx >= 0 else text
        return core.codec.decode(out_ids[:-1], skip)
    return core.codec.decode(out_ids, skip)


def _output_logprobs(core: EngineCore, st: RequestState, meta: dict[str, Any]) -> None:
    if st.item.return_text_in_logprobs:
        tt = core.codec.token_text
        meta["output_token_logprobs"] = [[lp, t, tt(t)] for lp, t in zip(st.out_lps, st.out_ids)]
    else:
        meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(st.out_lps, st.out_ids)]
    meta["output_token_logprobs_length"] = len(st.out_ids)


async def _input_logprobs(core: EngineCore, st: RequestState, meta: dict[str, Any], final: bool) -> None:
    item = st.item
    start = item.logprob_start_len
    if start >= 0 and final and not st.abort_queued:
        ilps = await core.backend.input_logprobs(st, start)
        ids = st.input_ids[start:]
        if item.return_text_in_logprobs:
            tt = core.codec.token_text
            meta["input_token_logprobs"] = [[lp, t, tt(t)] for lp, t in zip(ilps, ids)]
        else:
            meta["input_token_logprobs"] = [[lp, t, None] for lp, t in zip(ilps, ids)]
    else:
        meta["input_token_logprobs"] = []
    if item.top_logprobs_num > 0:
        meta["output_top_logprobs"] = [None] * len(st.out_ids)
        meta["input_top_logprobs"] = []


def _finalise(core: EngineCore, st: RequestState, meta: dict[str, Any]) -> None:
    n = len(st.out_ids)
    if st.events is None:  # no version change while it ran: one span (the common case, made cheap)
        version = core.scheduler_version
        meta["weight_versions"] = [{"version": version, "start": 0, "end": n}]
        meta["weight_version"] = version
    else:
        add_to_meta_info(meta, compute_spans(st.events, core.scheduler_version, n), n)
    meta["e2e_latency"] = time.perf_counter() - st.created
    meta["response_sent_to_client_ts"] = time.time()


async def build_output(core: EngineCore, st: RequestState, *, final: bool) -> dict[str, Any]:
    """The response object of ``st``: a streaming chunk (``final=False``) or the finished one."""
    if final and st.abort_queued:
        return await _queued_abort_output(core, st)
    meta: dict[str, Any] = {
        "id": st.rid,
        "finish_reason": st.finish if final else None,
        "prompt_tokens": 1 if st.scheduler_error else len(st.input_ids),
        "weight_version": core.served_version,
        "num_retractions": st.retractions,
    }
    if st.item.return_logprob and not st.scheduler_error:
        _output_logprobs(core, st, meta)
        await _input_logprobs(core, st, meta, final)
    meta["reasoning_tokens"] = 0
    meta["completion_tokens"] = len(st.out_ids)
    meta["cached_tokens"] = 0
    if final:
        _finalise(core, st, meta)
    elif not st.sent_first:
        st.sent_first = True
        meta["response_sent_to_client_ts"] = time.time()
    out: dict[str, Any] = {
        "text": _text(core, st, final),
        "output_ids": st.out_ids if final else list(st.out_ids),  # a finished state is not touched again
        "meta_info": meta,
    }
    if st.item.return_prompt_token_ids:
        out["prompt_token_ids"] = st.input_ids
    return out


async def _queued_abort_output(core: EngineCore, st: RequestState) -> dict[str, Any]:
    meta: dict[str, Any] = {"id": st.rid, "finish_reason": dict(QUEUED_ABORT), "weight_version": core.served_version}
    if st.item.return_logprob:
        _output_logprobs(core, st, meta)
        await _input_logprobs(core, st, meta, final=True)
    meta["completion_tokens"] = len(st.out_ids)
    _finalise(core, st, meta)
    out: dict[str, Any] = {"text": core.codec.decode(st.out_ids, st.params.skip_special_tokens),
                           "output_ids": list(st.out_ids), "meta_info": meta}
    if st.item.return_prompt_token_ids:
        out["prompt_token_ids"] = st.input_ids
    return out
