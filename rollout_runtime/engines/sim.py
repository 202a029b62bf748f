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
* **The server around it** is real SGLang's in small (:mod:`rollout_runtime.engines.protocol`): a
  ``context_length`` (default 4096) enforced with SGLang's 400s, pauses that stop the simulated
  clock (``retract``/``in_place``), and ``/update_weights_from_disk`` that takes
  ``weight_load_seconds`` (the path must exist) and changes the weight version.

Modules: :mod:`.sim_config` (settings), :mod:`.sim_plan` (what a request says),
:mod:`.sim_sched` (when its tokens appear); this one has the backend, engines, clusters and CLI.

``rollout-runtime sim-engine --workers N`` starts N engines plus a router-style front
(:mod:`rollout_runtime.engines.front`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, Self

from .backend import Backend, Chunk, RequestState
from .front import RoundRobinFront
from .protocol import EngineHandle, EngineServer
from .sim_config import SimEngineConfig
from .sim_plan import ResponsePlanner
from .sim_sched import Slots, hold, sleep_until
from .threads import ServerThread, run_until_signal

__all__ = [
    "SimBackend",
    "SimCluster",
    "SimEngine",
    "SimEngineConfig",
    "start_sim_cluster_thread",
    "start_sim_engine_thread",
]

log = logging.getLogger(__name__)


class SimBackend(Backend):
    """Token generator of the simulated engine (see module docstring)."""

    def __init__(self, config: SimEngineConfig) -> None:
        self.config = config
        self.planner = ResponsePlanner(config)
        self.codec = self.planner.codec
        self.model_path = config.tokenizer or "kuberollout/sim"
        self.served_model_name = config.model_name
        self.context_length = config.context_length
        self._slots = Slots(config.max_running_requests) if config.max_running_requests else None

    async def generate(self, state: RequestState) -> AsyncIterator[Chunk]:
        slots = self._slots
        if slots is not None and not await slots.acquire(state):
            return
        try:
            pause = state.pause
            if pause.mode is not None:  # a paused scheduler admits nothing new
                await hold(state)
            if state.abort_effective:
                return
            state.running = True
            ids, lps = self.planner.plan(state)
            n = len(ids)
            lat, ttft = self.config.token_latency, self.config.ttft
            if lat <= 0.0 and ttft <= 0.0:
                yield ids, lps
                return
            # Token i (0-based) is ready at t0 + (i + 1) * lat on the pause-aware clock, which stops
            # while the scheduler is paused.
            t0 = pause.clock() + ttft
            per = max(1, int(self.config.tick_s / lat)) if lat > 0 else n
            emitted = 0
            while emitted < n:
                if pause.mode is not None:
                    await hold(state)
                    if state.abort_effective:
                        return
                    continue
                target = min(n, emitted + per)
                await sleep_until(state, t0 + target * lat)
                now = pause.clock()
                if now + 1e-9 < t0:
                    done = 0
                elif lat <= 0:
                    done = n
                else:
                    done = min(n, int((now - t0) / lat + 1e-6))
                    if not state.aborted and pause.mode is None:
                        done = max(done, target)
                if done > emitted:
                    yield ids[emitted:done], lps[emitted:done]
                    emitted = done
                if state.abort_effective:
                    return
        finally:
            if slots is not None:
                slots.release()

    async def load_weights(self, model_path: str, load_format: str | None) -> tuple[bool, str]:
        """Pretend to load: the path must exist (as for a real server), then ``weight_load_seconds``."""
        if not os.path.exists(model_path):
            return False, f"Failed to get weights iterator: Cannot find any model weights with `{model_path}`."
        await asyncio.sleep(self.config.weight_load_seconds)
        return True, "Succeeded to update model weights."

    async def input_logprobs(self, state: RequestState, start: int) -> list[float | None]:
        return self.planner.input_logprobs(state, start)

    def model_info(self) -> dict[str, Any]:
        return {"model_type": "kuberollout-sim", "architectures": ["SimulatedForCausalLM"]}

    def server_args(self) -> dict[str, Any]:
        c = self.config
        return {
            "engine": "kuberollout-sim",
            "random_seed": c.seed,
            "max_running_requests": c.max_running_requests,
            "context_length": c.context_length,
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
            allow_auto_truncate=self.config.allow_auto_truncate,
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
    ap.add_argument("--context-length", type=int, default=SimEngineConfig.model_fields["context_length"].default,
                    help="Prompt plus response tokens per request (SGLang's flag); longer requests get a 400.")
    ap.add_argument("--allow-auto-truncate", action="store_true", help="Cut what does not fit instead of a 400.")
    ap.add_argument("--weight-load-seconds", type=float,
                    default=SimEngineConfig.model_fields["weight_load_seconds"].default,
                    help="How long /update_weights_from_disk takes.")
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
        context_length=args.context_length,
        allow_auto_truncate=args.allow_auto_truncate,
        weight_load_seconds=args.weight_load_seconds,
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
