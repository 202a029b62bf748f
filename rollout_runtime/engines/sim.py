"""The simulated SGLang engine: the real protocol, no model.

For CI, load tests and benchmarks (the way kwok stands in for kubelets). Responses are random but
reproducible, with controllable timing and lengths:

* **Randomness** is derived per request from the engine ``seed`` and either the request's
  ``sampling_seed`` or its content (prompt ids + sampling params) plus how many times this engine has
  seen that content, so the n samples of one prompt differ, yet a rerun gets the same multiset of
  responses per prompt whatever the arrival order. Greedy requests (temperature 0) ignore the count:
  identical requests get identical responses.
* **Timing**: ``ttft`` then ``token_latency`` seconds per token; tokens are released in ticks (at
  most ``tick_s`` of simulated time each) so hundreds of slow requests do not mean a timer per token.
  An abort wakes the request at once and returns the tokens "generated" so far. With zero latency the
  whole response is produced in one step.
* **Lengths**: ``fixed``, ``uniform`` or ``lognormal`` (median/sigma: long tails for step-time
  benchmarks), clipped to ``max_new_tokens`` (-> ``length``) else ending with EOS (-> ``stop``).
* **Answers**: the response ends with ``answer_template`` (default ``... \\boxed{ANSWER}``) where
  ANSWER is right with a per-prompt probability drawn from Beta(accuracy * c, (1 - accuracy) * c): a
  small concentration ``c`` gives many all-right and all-wrong groups plus some mixed ones, which is
  what dynamic-sampling filters act on. The right answer comes from an arithmetic question in the
  prompt (``What is 12+34?``) or from ``answer_regex`` applied to the prompt text.
* **Text**: with ``tokenizer`` (a local HF tokenizer path) ids are real and decode to text; without
  one, a synthetic vocabulary maps every id to a short string.

``rollout-runtime sim-engine --workers N`` starts N engines plus a router-style front
(:mod:`rollout_runtime.engines.front`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import logging
import math
import random
import re
from collections.abc import AsyncIterator
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .answers import arithmetic_answer, regex_answer
from .backend import Backend, Chunk, RequestState
from .front import RoundRobinFront
from .protocol import EngineHandle, EngineServer, ServerThread, run_until_signal
from .textcodec import HFCodec, SyntheticCodec, TextCodec

log = logging.getLogger(__name__)

_FILLER_RE = re.compile(r"^[ A-Za-z.,']+$")


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
    context_length: int = Field(32768, ge=2)
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


class _Slots:
    """FIFO admission with a fixed number of running slots; waiting requests can be aborted."""

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, state: RequestState) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        state.on_abort(lambda: fut.cancel() if not fut.done() else None)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled
            if state.aborted:
                return False
            raise
        return True

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1

    def num_waiting(self) -> int:
        return sum(1 for f in self.waiters if not f.done())


class SimBackend(Backend):
    """Token generator of the simulated engine (see module docstring)."""

    def __init__(self, config: SimEngineConfig) -> None:
        self.config = config
        codec: TextCodec
        if config.tokenizer:
            hf = HFCodec(config.tokenizer)
            codec = hf
            filler = [
                i
                for i in range(hf.vocab_size)
                if i not in hf.special_ids and _FILLER_RE.match(hf.token_text(i) or "") is not None
            ]
            self.eos_id = min(hf.eos_token_ids) if hf.eos_token_ids else 0
        else:
            syn = SyntheticCodec(config.vocab_size, config.eos_token_id)
            codec = syn
            filler = syn.filler_ids()
            self.eos_id = config.eos_token_id
        self.codec = codec
        self.filler_ids = filler or [i for i in range(codec.vocab_size) if i not in codec.special_ids]
        self.model_path = config.tokenizer or "kuberollout/sim"
        self.served_model_name = config.model_name
        self.context_length = config.context_length
        self._answer_rx = re.compile(config.answer_regex) if config.answer_regex else None
        self._seen: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._answer_cache: collections.OrderedDict[int, tuple[str | None, float]] = collections.OrderedDict()
        self._slots = _Slots(config.max_running_requests) if config.max_running_requests else None
        pool_rng = random.Random(config.seed)
        self._lp_pool = [-pool_rng.expovariate(1.0 / config.logprob_mean) for _ in range(8191)]
        self._lp_pool_greedy = [-pool_rng.expovariate(8.0) for _ in range(8191)]

    # ------------------------------------------------------------------ randomness

    def _request_rng(self, state: RequestState) -> random.Random:
        p = state.params
        # Only ints and floats are hashed: their hashes, unlike str's, do not change between processes.
        key = hash((tuple(state.input_ids), p.temperature, p.top_p, p.top_k, p.max_new_tokens))
        if p.sampling_seed is not None:
            return random.Random(hash((self.config.seed, key, p.sampling_seed, 1)))
        if p.greedy:
            return random.Random(hash((self.config.seed, key, 2)))
        count = self._seen.get(key, 0)
        self._seen[key] = count + 1
        self._seen.move_to_end(key)
        if len(self._seen) > 200_000:
            self._seen.popitem(last=False)
        return random.Random(hash((self.config.seed, key, count)))

    def _sample_length(self, rng: random.Random) -> int:
        c = self.config
        if c.length_dist == "fixed":
            n = c.length_median
        elif c.length_dist == "uniform":
            n = rng.randint(c.length_min, c.length_max)
        else:
            n = round(c.length_median * math.exp(rng.gauss(0.0, c.length_sigma)))
        return max(c.length_min, min(c.length_max, n))

    def _answer_for(self, state: RequestState) -> tuple[str | None, float]:
        """(right answer or None, this prompt's probability of answering right)."""
        c = self.config
        if c.answer_mode == "none":
            return None, 0.0
        key = hash(tuple(state.input_ids))
        cached = self._answer_cache.get(key)
        if cached is not None:
            return cached
        text = state.item.text if state.item.text is not None else self.codec.decode(state.input_ids, True)
        answer: str | None = None
        if c.answer_mode in ("auto", "regex") and self._answer_rx is not None:
            answer = regex_answer(text, self._answer_rx)
        if answer is None and c.answer_mode in ("auto", "arithmetic"):
            answer = arithmetic_answer(text)
        prob = 0.0
        if answer is not None:
            # Per-prompt difficulty: seeded by the prompt text, so every sample of a group shares it.
            h = int.from_bytes(hashlib.blake2b(f"{c.seed}:{answer}:{text[-256:]}".encode(), digest_size=8).digest(), "big")
            prng = random.Random(h)
            acc, conc = c.answer_accuracy, c.answer_concentration
            if acc <= 0.0 or acc >= 1.0:
                prob = acc
            else:
                prob = prng.betavariate(acc * conc, (1.0 - acc) * conc)
        self._answer_cache[key] = (answer, prob)
        if len(self._answer_cache) > 100_000:
            self._answer_cache.popitem(last=False)
        return answer, prob

    @staticmethod
    def _wrong_answer(answer: str, rng: random.Random) -> str:
        try:
            value = int(answer)
        except ValueError:
            return answer[::-1] + "x" if answer else "0"
        offset = rng.choice([-10, -2, -1, 1, 2, 10, 11, -11])
        return str(value + offset)

    def plan(self, state: RequestState) -> tuple[list[int], list[float]]:
        """The full token sequence (and logprobs) this request would produce without limits."""
        p = state.params
        rng = self._request_rng(state)
        length = max(self._sample_length(rng), p.min_new_tokens + 1)
        tail: list[int] = []
        answer, prob = self._answer_for(state)
        if answer is not None:
            shown = answer if (p.greedy and prob >= 0.5) or (not p.greedy and rng.random() < prob) else None
            if shown is None:
                shown = self._wrong_answer(answer, rng)
            tail = self.codec.encode(self.config.answer_template.format(answer=shown))
        if p.ignore_eos:
            total = p.max_new_tokens
            n_filler = max(0, total - len(tail))
            ids = rng.choices(self.filler_ids, k=n_filler) + tail
            ids = ids[:total]
        else:
            n_filler = max(0, length - 1 - len(tail))
            ids = rng.choices(self.filler_ids, k=n_filler) + tail + [self.eos_id]
            if len(ids) > p.max_new_tokens:
                ids = ids[: p.max_new_tokens]
        return ids, self._logprobs(rng, len(ids), p.greedy, state.item.return_logprob)

    def _logprobs(self, rng: random.Random, n: int, greedy: bool, wanted: bool) -> list[float]:
        """Plausible sampled-token logprobs: a random window of a precomputed exponential pool
        (drawing n fresh samples per request would dominate the zero-latency per-request cost)."""
        if not wanted:
            return [0.0] * n
        pool = self._lp_pool_greedy if greedy else self._lp_pool
        size = len(pool)
        start = rng.randrange(size)
        if start + n <= size:
            return pool[start : start + n]
        out = pool[start:]
        while len(out) < n:
            out.extend(pool[: n - len(out)])
        return out

    # ------------------------------------------------------------------ Backend

    async def generate(self, state: RequestState) -> AsyncIterator[Chunk]:
        slots = self._slots
        if slots is not None and not await slots.acquire(state):
            return
        try:
            state.running = True
            if state.aborted:
                return
            ids, lps = self.plan(state)
            n = len(ids)
            lat, ttft = self.config.token_latency, self.config.ttft
            if lat <= 0.0 and ttft <= 0.0:
                yield ids, lps
                return
            loop = asyncio.get_running_loop()
            t0 = loop.time() + ttft  # token i (0-based) is ready at t0 + (i + 1) * lat
            per = max(1, int(self.config.tick_s / lat)) if lat > 0 else n
            emitted = 0
            while emitted < n:
                target = min(n, emitted + per)
                await state.sleep_until(t0 + target * lat)
                now = loop.time()
                if now + 1e-9 < t0:
                    done = 0
                elif lat <= 0:
                    done = n
                else:
                    done = min(n, int((now - t0) / lat + 1e-6))
                    if not state.aborted:
                        done = max(done, target)
                if done > emitted:
                    yield ids[emitted:done], lps[emitted:done]
                    emitted = done
                if state.aborted:
                    return
        finally:
            if slots is not None:
                slots.release()

    async def input_logprobs(self, state: RequestState, start: int) -> list[float | None]:
        rng = random.Random(hash((self.config.seed, tuple(state.input_ids), 3)))
        out: list[float | None] = []
        for pos in range(start, len(state.input_ids)):
            out.append(None if pos == 0 else -rng.expovariate(1.0 / 2.5))
        return out

    def num_waiting(self) -> int:
        return self._slots.num_waiting() if self._slots else 0

    def model_info(self) -> dict[str, Any]:
        return {"model_type": "kuberollout-sim", "architectures": ["SimulatedForCausalLM"]}

    def server_args(self) -> dict[str, Any]:
        c = self.config
        return {
            "engine": "kuberollout-sim",
            "random_seed": c.seed,
            "max_running_requests": c.max_running_requests,
            "sim_config": c.model_dump(),
        }


# ---------------------------------------------------------------------- engines and clusters


def _merge(config: SimEngineConfig | None, overrides: dict[str, Any]) -> SimEngineConfig:
    base = config or SimEngineConfig()
    if not overrides:
        return base
    return SimEngineConfig.model_validate({**base.model_dump(), **overrides})


class SimEngine(EngineHandle):
    """A simulated SGLang engine on a real port.

    ``async with SimEngine(SimEngineConfig(token_latency=0.01), port=0) as eng: eng.url``.
    ``eng.recorded_requests`` lists the last ``record_requests`` /generate payloads (parsed JSON,
    oldest first); ``eng.clear_recorded()`` empties it.
    """

    def __init__(
        self, config: SimEngineConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, **overrides: Any
    ) -> None:
        self.config = _merge(config, overrides)
        self.backend = SimBackend(self.config)
        self.server = EngineServer(
            self.backend,
            host=host,
            port=port,
            weight_version=self.config.weight_version,
            served_model_name=self.config.model_name,
            record_requests=self.config.record_requests,
        )


class SimCluster:
    """N simulated engines behind a round-robin router-style front.

    ``async with SimCluster(2, config) as c: c.router_url, c.worker_urls, c.engines``. Worker i uses
    ``seed + i``. ``faithful_router`` makes the front drop/reject fields like sglang_router does.
    """

    def __init__(
        self,
        n_workers: int = 2,
        config: SimEngineConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        worker_ports: list[int] | None = None,
        faithful_router: bool = True,
        **overrides: Any,
    ) -> None:
        if n_workers < 1:
            raise ValueError("n_workers must be >= 1")
        self.config = _merge(config, overrides)
        ports = worker_ports or [0] * n_workers
        self.engines = [
            SimEngine(self.config.model_copy(update={"seed": self.config.seed + i}), host=host, port=ports[i])
            for i in range(n_workers)
        ]
        self.host = host
        self.port = port
        self.faithful_router = faithful_router
        self.front: RoundRobinFront | None = None

    @property
    def router_url(self) -> str:
        assert self.front is not None, "cluster not started"
        return self.front.url

    url = router_url

    @property
    def worker_urls(self) -> list[str]:
        return [e.url for e in self.engines]

    @property
    def recorded_requests(self) -> list[dict[str, Any]]:
        """Payloads received by all workers (each worker's list in order, workers concatenated)."""
        return [p for e in self.engines for p in e.recorded_requests]

    def clear_recorded(self) -> None:
        for e in self.engines:
            e.clear_recorded()

    async def start(self) -> Self:
        for e in self.engines:
            await e.start()
        self.front = RoundRobinFront(
            self.worker_urls, host=self.host, port=self.port, model_id=self.config.model_name, faithful=self.faithful_router
        )
        await self.front.start()
        return self

    async def stop(self) -> None:
        if self.front is not None:
            await self.front.stop()
        for e in self.engines:
            await e.stop()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def start_sim_engine_thread(
    config: SimEngineConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, **overrides: Any
) -> ServerThread:
    """Run a :class:`SimEngine` in a background thread (for sync code): ``h.url``, ``h.value``
    (the SimEngine, e.g. ``h.value.recorded_requests``), ``h.stop()``."""

    async def make() -> SimEngine:
        return await SimEngine(config, host=host, port=port, **overrides).start()

    return ServerThread(make)


def start_sim_cluster_thread(
    n_workers: int = 2, config: SimEngineConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, **overrides: Any
) -> ServerThread:
    """Run a :class:`SimCluster` in a background thread: ``h.url`` is the router URL, ``h.value``
    the cluster (``worker_urls``, ``engines``)."""

    async def make() -> SimCluster:
        return await SimCluster(n_workers, config, host=host, port=port, **overrides).start()

    return ServerThread(make)


# ---------------------------------------------------------------------- CLI


def build_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="rollout-runtime sim-engine",
        description="Simulated SGLang engine(s): the native HTTP protocol with a random token generator.",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=30000, help="Engine port, or the router front's with --workers > 1.")
    ap.add_argument("--workers", type=int, default=1, help="N > 1: N engines plus a round-robin router front on --port.")
    ap.add_argument("--worker-base-port", type=int, default=0, help="First worker port (0: pick free ports).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--token-latency", type=float, default=0.0, help="Seconds per generated token.")
    ap.add_argument("--ttft", type=float, default=0.0, help="Seconds before the first token.")
    ap.add_argument("--length-dist", choices=["fixed", "uniform", "lognormal"], default="lognormal")
    ap.add_argument("--length-median", type=int, default=64)
    ap.add_argument("--length-sigma", type=float, default=0.8)
    ap.add_argument("--length-min", type=int, default=1)
    ap.add_argument("--length-max", type=int, default=4096)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--eos-token-id", type=int, default=2)
    ap.add_argument("--tokenizer", default=None, help="Local HF tokenizer path (real ids/text).")
    ap.add_argument("--answer-mode", choices=["auto", "arithmetic", "regex", "none"], default="auto")
    ap.add_argument("--answer-regex", default=None)
    ap.add_argument("--answer-accuracy", type=float, default=0.5)
    ap.add_argument("--answer-concentration", type=float, default=1.0)
    ap.add_argument("--answer-template", default=SimEngineConfig.model_fields["answer_template"].default)
    ap.add_argument("--max-running-requests", type=int, default=None)
    ap.add_argument("--model-name", default="kuberollout-sim")
    ap.add_argument("--weight-version", default="default")
    ap.add_argument("--log-level", default="info")
    return ap


def config_from_args(args: argparse.Namespace) -> SimEngineConfig:
    return SimEngineConfig(
        seed=args.seed,
        token_latency=args.token_latency,
        ttft=args.ttft,
        length_dist=args.length_dist,
        length_median=args.length_median,
        length_sigma=args.length_sigma,
        length_min=args.length_min,
        length_max=args.length_max,
        vocab_size=args.vocab_size,
        eos_token_id=args.eos_token_id,
        tokenizer=args.tokenizer,
        answer_mode=args.answer_mode,
        answer_regex=args.answer_regex,
        answer_accuracy=args.answer_accuracy,
        answer_concentration=args.answer_concentration,
        answer_template=args.answer_template,
        max_running_requests=args.max_running_requests,
        model_name=args.model_name,
        weight_version=args.weight_version,
    )


def main(argv: list[str] | None = None) -> int:
    """``rollout-runtime sim-engine``: serve until SIGINT/SIGTERM."""
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)

    async def start() -> SimEngine | SimCluster:
        if args.workers <= 1:
            engine = await SimEngine(config, host=args.host, port=args.port).start()
            print(f"sim engine ready at {engine.url}", flush=True)
            return engine
        ports = [args.worker_base_port + i for i in range(args.workers)] if args.worker_base_port else None
        cluster = await SimCluster(args.workers, config, host=args.host, port=args.port, worker_ports=ports).start()
        print(f"sim router ready at {cluster.router_url}; workers: {' '.join(cluster.worker_urls)}", flush=True)
        return cluster

    async def stop(value: SimEngine | SimCluster) -> None:
        await value.stop()

    asyncio.run(run_until_signal(start, stop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
