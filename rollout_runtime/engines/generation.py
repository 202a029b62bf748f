"""Serving one normalised /generate request: admission, decoding loop, finish conditions.

The order of the checks is SGLang 0.5.23's, because it decides what a client sees:

1. ``_init_req_state``: every rid is registered; a rid already in flight is a 400
   ``Duplicate request ID detected: <rid>`` (even if the first one waits behind a pause);
2. ``generate_request``: wait while paused (``is_pause_cond``), then hold the reader side of the
   weight-update lock until the request is done;
3. ``_validate_one_request``: input >= context length, or input + ``max_new_tokens`` > context
   length, is a 400 with SGLang's text, unless ``--allow-auto-truncate`` (then the input, or
   ``max_new_tokens``, is cut to fit);
4. ``SamplingParams`` normalisation and ``verify`` (:mod:`.params`);
5. the scheduler (``init_req_max_new_tokens`` and ``validate_input_length``): ``max_new_tokens`` is
   cut to ``context - 2 - input`` (``max_req_len = context - 1``), and an input of
   ``max_req_input_len = context - 6`` tokens or more is aborted with status 400.

All of these are ValueErrors: HTTP 400 for a plain request, an in-band error event (HTTP 200) for a
streaming one, exactly as ``http_server.serve_generate_request`` answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .backend import RequestState
from .core import EngineCore
from .output import build_output
from .params import GenerateItem, GenerateRequest, RequestValueError, sampling_params_from_json

OnChunk = Callable[[GenerateItem, dict[str, Any]], Awaitable[None]]
ABORT_RUNNING = {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}


def admit(core: EngineCore, item: GenerateItem) -> RequestState:
    """Steps 3-5 of the module docstring for one item; raises :class:`RequestValueError`."""
    ids = item.input_ids if item.input_ids is not None else core.codec.encode(item.text or "", True)
    if not ids:
        raise RequestValueError("The input is empty after tokenization.")
    ctx = core.context_length
    n = len(ids)
    sampling = item.sampling
    if n >= ctx:
        if not core.allow_auto_truncate:
            raise RequestValueError(f"The input ({n} tokens) is longer than the model's context length ({ctx} tokens).")
        ids, n = ids[:ctx], ctx
    max_new = sampling.get("max_new_tokens") if sampling else None
    if max_new is not None and max_new + n > ctx:
        if not core.allow_auto_truncate:
            raise RequestValueError(
                f"Requested token count exceeds the model's maximum context length of {ctx} tokens. You requested "
                f"a total of {max_new + n} tokens: {n} tokens from the input messages and {max_new} tokens for the "
                "completion. Please reduce the number of tokens in the input messages or the completion to fit "
                "within the limit."
            )
        sampling = {**sampling, "max_new_tokens": max(0, ctx - n)}
    params = sampling_params_from_json(sampling, core.codec.vocab_size)
    # The scheduler: max_req_len = context - 1 (a KV pool that holds a full request assumed).
    max_req_len = ctx - 1
    max_req_input_len = max_req_len - 5
    requested = params.max_new_tokens if params.max_new_tokens is not None else 1 << 30
    params.max_new_tokens = max(0, min(requested, max_req_len - n - 1))
    if params.min_new_tokens > params.max_new_tokens:
        params.min_new_tokens = params.max_new_tokens
    error = None
    if n >= max_req_input_len:
        if core.allow_auto_truncate:
            ids = ids[:max_req_input_len]
        else:
            error = (f"Input length ({n} tokens) exceeds the maximum allowed length ({max_req_input_len} tokens). "
                     "Use a shorter input or enable --allow-auto-truncate.")
    st = RequestState(item, ids, params, core.pause)
    st.scheduler_error = error
    return st


def _stop_tokens(core: EngineCore, st: RequestState) -> frozenset[int]:
    p = st.params
    if p.ignore_eos:
        return frozenset()
    if p.stop_token_ids:
        return core.codec.eos_token_ids | p.stop_token_ids
    return core.codec.eos_token_ids


def _scan_stop_strings(core: EngineCore, st: RequestState, new_ids: list[int]) -> tuple[int, str] | None:
    """First position in ``new_ids`` where a stop string appears in the decoded tail, like SGLang's
    check on the last ``stop_str_max_len + 1`` tokens; None if no stop string appears."""
    p = st.params
    codec = core.codec
    skip = p.skip_special_tokens
    window = max(len(s) for s in p.stop) + 1
    text = codec.decode(st.out_ids[-window:] + new_ids, skip)
    if not any(s in text for s in p.stop):
        return None
    seq = st.out_ids[-window:]
    base = len(st.out_ids)
    for j, tid in enumerate(new_ids):
        seq.append(tid)
        if base + j + 1 < p.min_new_tokens:
            continue
        tail = codec.decode(seq[-window:], skip)
        for s in p.stop:
            if s in tail:
                return j, s
    return None


async def _drive(core: EngineCore, st: RequestState, on_chunk: OnChunk | None) -> None:
    """Consume the backend's chunks until a finish condition, an abort, or the end."""
    p = st.params
    stop_tokens = _stop_tokens(core, st)
    max_new, min_new = p.max_new_tokens or 0, p.min_new_tokens
    out_ids, out_lps = st.out_ids, st.out_lps
    gen = core.backend.generate(st)
    try:
        async for ids, lps in gen:
            core.touch()
            n0 = len(out_ids)
            cut = len(ids)
            finish: dict[str, Any] | None = None
            for k, tid in enumerate(ids):
                pos = n0 + k + 1
                if tid in stop_tokens and pos >= min_new:
                    cut, finish = k + 1, {"type": "stop", "matched": tid}
                    break
                if pos >= max_new:
                    cut, finish = k + 1, {"type": "length", "length": max_new}
                    break
            new_ids = ids if cut == len(ids) else ids[:cut]
            if p.stop and n0 + cut >= min_new:
                hit = _scan_stop_strings(core, st, new_ids)
                if hit is not None:
                    j, matched = hit
                    new_ids = new_ids[: j + 1]
                    finish = {"type": "stop", "matched": matched}
            out_ids.extend(new_ids)
            out_lps.extend(lps[: len(new_ids)] if len(new_ids) < len(lps) else lps)
            if finish is not None:
                st.finish = finish
                return
            if st.abort_effective:
                break
            if on_chunk is not None:
                await on_chunk(st.item, await build_output(core, st, final=False))
        if st.aborted:
            st.finish = dict(ABORT_RUNNING)
        elif st.finish is None:
            # The backend ran out without a finish condition (context full): a length finish.
            st.finish = {"type": "length", "length": len(out_ids)}
    finally:
        await gen.aclose()


async def run(core: EngineCore, st: RequestState, on_chunk: OnChunk | None, *, count: bool) -> dict[str, Any]:
    """Generate for one admitted request and return its final response object."""
    core.active.add(st)
    if count:
        core.num_requests_total += 1
        core.prompt_tokens_total += len(st.input_ids)
    try:
        if st.scheduler_error is not None:
            st.finish = {"type": "abort", "message": st.scheduler_error, "status_code": 400, "err_type": "BadRequestError"}
        elif st.params.max_new_tokens == 0:
            st.finish = {"type": "length", "length": 0}
        else:
            await _drive(core, st, on_chunk)
    finally:
        core.active.discard(st)
        if st.finish is None:  # cancelled (client gone) or failed: let the backend go
            st.abort()
        core.touch()
    if count:
        core.generation_tokens_total += len(st.out_ids)
        if st.aborted:
            core.num_aborted_total += 1
    if st.scheduler_error is not None and on_chunk is None:
        raise RequestValueError(st.scheduler_error)
    out = await build_output(core, st, final=True)
    if on_chunk is not None:  # streaming: each item's last chunk goes out as soon as it is done
        await on_chunk(st.item, out)
    return out


async def serve(core: EngineCore, req: GenerateRequest, on_chunk: OnChunk | None = None, *,
                count: bool = True) -> list[dict[str, Any]]:
    """The whole pipeline for one /generate request (module docstring); one output per item."""
    rids = [it.rid for it in req.items]
    core.register_rids(rids)
    lock = core.update_lock
    try:
        if core.pause.is_paused:
            await core.pause.wait_unpaused()
        # The reader side of the update lock for the request's whole life (inlined: hot path).
        if lock.writer_active or lock.waiting_writers:
            await lock.acquire_read()
        else:
            lock.readers += 1
        try:
            states = [admit(core, it) for it in req.items]
            if len(states) == 1:
                return [await run(core, states[0], on_chunk, count=count)]
            tasks = [asyncio.ensure_future(run(core, st, on_chunk, count=count)) for st in states]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:
                    t.cancel()
                raise
        finally:
            lock.release_read()
    finally:
        core.release_rids(rids)
