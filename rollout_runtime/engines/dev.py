"""The dev engine: SGLang's native HTTP protocol served by a real ``transformers`` causal LM on CPU.

For the quickstart and for testing custom generate/reward code end to end with a real model (e.g.
``examples/tiny-model``). The protocol (stop conditions, trimming, streaming, aborts, loads) is the
shared :class:`~rollout_runtime.engines.protocol.EngineServer`; this module only produces tokens.

Scheduling: iteration-level ("continuous") batching. A scheduler task admits up to
``max_batch_size`` requests (the rest wait, and show as waiting in ``/v1/loads``); at every step it
advances each running request by one token and hands the token to that request's HTTP handler, so
requests join and leave between tokens and an abort takes effect before the next token. Each
request keeps its own KV cache; the model runs in a single worker thread so the event loop stays
responsive. The per-request forward calls are not fused into one padded batch: simpler, exactly
equal to an unbatched forward pass (so logprobs match ``transformers`` bit for bit in practice), and
fast enough for the small models this engine is for.

Logprobs: ``output_token_logprobs`` are ``log_softmax`` of the model's *raw* logits (before
temperature, top-k/top-p/min-p), evaluated at the sampled token, which is what SGLang returns by
default (its "original logprob" behaviour). ``input_token_logprobs`` (``logprob_start_len >= 0``)
come from one extra forward pass over the prompt.

Sampling: temperature (0 = greedy), top_k, top_p, min_p, ``sampling_seed`` (per-request
``torch.Generator``; otherwise seeded from ``--seed`` and a request counter), ``min_new_tokens``
(EOS and stop token ids masked until reached). Penalties, ``logit_bias`` and constrained decoding are
not implemented. torch is imported lazily: the rest of the package works without it.

Pauses and weights, as SGLang's scheduler: an ``in_place`` pause stops decoding and keeps each
request's KV cache; a ``retract`` pause moves running requests back to the queue and drops their
KV cache, so after ``/continue_generation`` the prompt and the tokens so far are prefilled again,
under whatever weights are loaded then. ``/update_weights_from_disk`` really loads a directory of
safetensors (same architecture, e.g. ``save_pretrained`` after a training step) into the model;
every tensor is checked (name and shape) before any is copied, so a bad checkpoint is a 400 naming
the tensor and the old weights keep serving.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import inspect
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .backend import Backend, Chunk, RequestState
from .dev_weights import load_weights_into
from .protocol import EngineHandle, EngineServer
from .threads import ServerThread, run_until_signal
from .textcodec import HFCodec

log = logging.getLogger(__name__)


class DevEngineConfig(BaseModel):
    """Settings of a dev engine (CLI flags of ``rollout-runtime dev-engine``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Local path of a transformers causal LM (with its tokenizer).")
    max_batch_size: int = Field(8, ge=1, description="Requests decoded concurrently; the rest wait.")
    seed: int = 0
    weight_version: str = "default"
    threads: int = Field(1, ge=1, description="torch intra-op threads.")
    served_model_name: str | None = None
    context_length: int | None = Field(None, description="Default: the model's max_position_embeddings.")
    allow_auto_truncate: bool = Field(False, description="SGLang's --allow-auto-truncate: cut what does not fit "
                                                         "instead of answering 400.")
    record_requests: int = Field(256, ge=0)
    min_step_interval: float = Field(
        0.0, ge=0, description="Minimum seconds per decode step: emulates slower hardware (tests use it)."
    )


class _DevRequest:
    """Scheduler-side state of one request."""

    __slots__ = ("buffer", "cache", "closed", "done", "event", "generated", "generator", "last_token", "length",
                 "out", "state")

    def __init__(self, state: RequestState, generator: Any) -> None:
        self.state = state
        self.event = asyncio.Event()
        self.buffer: list[tuple[int, float]] = []
        self.cache: Any = None  # the KV cache; None means the next step prefills prompt + output so far
        self.last_token: int | None = None
        self.generator = generator
        self.generated = 0
        self.out: list[int] = []  # tokens generated so far (re-prefilled after a retract)
        self.done = False  # the backend will produce no more tokens
        self.closed = False  # the consumer is gone (finished, aborted, disconnected)
        self.length = len(state.input_ids)


class DevBackend(Backend):
    """A transformers model generating tokens for the protocol server (see module docstring)."""

    def __init__(self, config: DevEngineConfig) -> None:
        self.config = config
        self.model_path = str(config.model)
        self.served_model_name = config.served_model_name or Path(config.model).name or "dev-model"
        self.codec = HFCodec(self.model_path)
        self.model: Any = None
        self.torch: Any = None
        self._cache_kw = "past_key_values"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dev-engine-model")
        self._pending: collections.deque[_DevRequest] = collections.deque()
        self._running: list[_DevRequest] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._counter = 0
        self.context_length = config.context_length or 4096
        self._model_type: str | None = None
        self._architectures: list[str] | None = None

    # ------------------------------------------------------------------ lifecycle

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(self.config.threads)
        try:
            model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            model = AutoModelForCausalLM.from_pretrained(self.model_path, torch_dtype=torch.float32)
        model.eval()
        self.torch = torch
        self.model = model
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        cfg = model.config
        if self.config.context_length is None:
            self.context_length = int(getattr(cfg, "max_position_embeddings", 4096) or 4096)
        self._model_type = getattr(cfg, "model_type", None)
        self._architectures = list(getattr(cfg, "architectures", None) or [type(model).__name__])
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is not None:
            self.codec.add_eos_ids([eos] if isinstance(eos, int) else list(eos))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._schedule(), name="dev-engine-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ scheduler

    async def _schedule(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        pause = self.pause
        while True:
            running = []
            for r in self._running:
                if r.closed or r.done:
                    continue
                if r.state.abort_effective:  # a running request's abort lands at its next step
                    r.done = True
                    r.event.set()
                    continue
                running.append(r)
            self._running = running
            if pause.mode is not None:
                if pause.mode == "retract" and self._running:
                    # Back to the waiting queue, KV cache dropped: recomputed (under the weights then
                    # loaded) when generation continues.
                    for r in reversed(self._running):
                        r.cache = None
                        self._pending.appendleft(r)
                    self._running = []
                await pause.wait_resumed()
                continue
            while self._pending and len(self._running) < self.config.max_batch_size:
                req = self._pending.popleft()
                if req.closed or req.state.aborted:
                    continue
                req.state.running = True
                self._running.append(req)
            if not self._running:
                self._wakeup.clear()
                if not self._pending:
                    await self._wakeup.wait()
                continue
            batch = list(self._running)
            t_step = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self._step, batch)
            except Exception:
                log.exception("dev engine step failed")
                for req in batch:
                    req.done = True
                    req.event.set()
                continue
            for req, (tid, lp) in zip(batch, results):
                req.buffer.append((tid, lp))
                req.out.append(tid)
                req.generated += 1
                req.length += 1
                req.state.produced = len(req.state.out_ids) + len(req.buffer)  # computed by these weights
                if req.generated >= req.state.params.max_new_tokens or req.length >= self.context_length:
                    req.done = True
                req.event.set()
            if self.config.min_step_interval > 0:
                await asyncio.sleep(max(0.0, t_step + self.config.min_step_interval - loop.time()))

    def _step(self, batch: list[_DevRequest]) -> list[tuple[int, float]]:
        """One token for each request (runs in the model thread)."""
        torch = self.torch
        out: list[tuple[int, float]] = []
        with torch.inference_mode():
            for req in batch:
                if req.cache is None:
                    ids = torch.tensor([req.state.input_ids + req.out], dtype=torch.long)
                    o = self.model(input_ids=ids, use_cache=True)
                else:
                    ids = torch.tensor([[req.last_token]], dtype=torch.long)
                    o = self.model(input_ids=ids, use_cache=True, **{self._cache_kw: req.cache})
                req.cache = getattr(o, "cache", None) or getattr(o, "past_key_values", None)
                logits = o.logits[0, -1, :].float()
                tid, lp = self._sample(req, logits)
                req.last_token = tid
                out.append((tid, lp))
        return out

    def _sample(self, req: _DevRequest, logits: Any) -> tuple[int, float]:
        torch = self.torch
        p = req.state.params
        logprobs = torch.log_softmax(logits, dim=-1)
        work = logits.clone()
        if req.generated < p.min_new_tokens:
            banned = [i for i in (self.codec.eos_token_ids | p.stop_token_ids) if 0 <= i < work.shape[-1]]
            if banned:
                work[banned] = float("-inf")
        if p.greedy:
            tid = int(torch.argmax(work).item())
            return tid, float(logprobs[tid].item())
        work = work / p.temperature
        vocab = work.shape[-1]
        if p.top_k < vocab:
            kth = torch.topk(work, p.top_k).values[-1]
            work = work.masked_fill(work < kth, float("-inf"))
        probs = torch.softmax(work, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, sorted_idx = torch.sort(probs, descending=True)
            cum = torch.cumsum(sorted_probs, dim=-1)
            remove = (cum - sorted_probs) > p.top_p  # keep the smallest prefix reaching top_p
            sorted_probs = sorted_probs.masked_fill(remove, 0.0)
            probs = torch.zeros_like(probs).scatter(0, sorted_idx, sorted_probs)
        if p.min_p > 0.0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
        tid = int(torch.multinomial(probs / probs.sum(), 1, generator=req.generator).item())
        return tid, float(logprobs[tid].item())

    # ------------------------------------------------------------------ Backend

    def _generator_for(self, state: RequestState) -> Any:
        seed = state.params.sampling_seed
        if seed is None:
            self._counter += 1
            seed = (self.config.seed * 1_000_003 + self._counter) & 0x7FFF_FFFF_FFFF_FFFF
        return self.torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)

    async def generate(self, state: RequestState) -> AsyncIterator[Chunk]:
        assert self._wakeup is not None, "backend not started"
        req = _DevRequest(state, self._generator_for(state))
        state.on_abort(req.event.set)
        self._pending.append(req)
        self._wakeup.set()
        try:
            while True:
                await req.event.wait()
                req.event.clear()
                if req.buffer:
                    buf, req.buffer = req.buffer, []
                    yield [t for t, _ in buf], [lp for _, lp in buf]
                if req.done or state.abort_effective:
                    return
        finally:
            req.closed = True

    async def input_logprobs(self, state: RequestState, start: int) -> list[float | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._prompt_logprobs, list(state.input_ids), start)

    def _prompt_logprobs(self, ids: list[int], start: int) -> list[float | None]:
        torch = self.torch
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0].float()
            lps = torch.log_softmax(logits, dim=-1)
        out: list[float | None] = []
        for pos in range(start, len(ids)):
            out.append(None if pos == 0 else float(lps[pos - 1, ids[pos]].item()))
        return out

    async def load_weights(self, model_path: str, load_format: str | None) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, load_weights_into, self.model, model_path,
                                          load_format or "auto")

    def model_info(self) -> dict[str, Any]:
        return {"model_type": self._model_type, "architectures": self._architectures}

    def server_args(self) -> dict[str, Any]:
        return {
            "engine": "kuberollout-dev",
            "random_seed": self.config.seed,
            "max_running_requests": self.config.max_batch_size,
            "context_length": self.config.context_length,
            "device": "cpu",
            "dtype": "float32",
            "torch_threads": self.config.threads,
        }


class DevEngine(EngineHandle):
    """A dev engine on a real port: ``async with DevEngine(DevEngineConfig(model=path)) as eng: eng.url``.

    Loading imports torch and transformers (a few seconds the first time).
    """

    def __init__(self, config: DevEngineConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.backend = DevBackend(config)
        self.server = EngineServer(
            self.backend,
            host=host,
            port=port,
            weight_version=config.weight_version,
            served_model_name=self.backend.served_model_name,
            allow_auto_truncate=config.allow_auto_truncate,
            record_requests=config.record_requests,
        )


def start_dev_engine_thread(config: DevEngineConfig, *, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
    """Run a :class:`DevEngine` in a background thread: ``h.url``, ``h.value``, ``h.stop()``."""

    async def make() -> DevEngine:
        return await DevEngine(config, host=host, port=port).start()

    return ServerThread(make)


def build_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="rollout-runtime dev-engine",
        description="SGLang-protocol server for a small transformers causal LM on CPU.",
    )
    ap.add_argument("--model", required=True, help="Local model directory (e.g. examples/tiny-model).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=30000)
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weight-version", default="default")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("KUBEROLLOUT_TORCH_THREADS", "1")))
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--context-length", type=int, default=None)
    ap.add_argument("--allow-auto-truncate", action="store_true", help="Cut what does not fit instead of a 400.")
    ap.add_argument("--min-step-interval", type=float, default=0.0, help="Emulate slower hardware (seconds/step).")
    ap.add_argument("--log-level", default="info")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``rollout-runtime dev-engine``: serve until SIGINT/SIGTERM."""
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DevEngineConfig(
        model=args.model,
        max_batch_size=args.max_batch_size,
        seed=args.seed,
        weight_version=args.weight_version,
        threads=args.threads,
        served_model_name=args.served_model_name,
        context_length=args.context_length,
        allow_auto_truncate=args.allow_auto_truncate,
        min_step_interval=args.min_step_interval,
    )

    async def start() -> DevEngine:
        engine = await DevEngine(config, host=args.host, port=args.port).start()
        print(f"dev engine ready at {engine.url} (model {config.model})", flush=True)
        return engine

    async def stop(engine: DevEngine) -> None:
        await engine.stop()

    asyncio.run(run_until_signal(start, stop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
