"""The interface between the SGLang-protocol server and a token generator.

A backend only produces tokens: ``generate(state)`` is an async iterator of *chunks*
``(token_ids, logprobs)``. Everything SGLang-specific (stop conditions, finish reasons, text,
streaming, aborts, loads) lives in the protocol server, so the simulated and the real (dev) engine
cannot drift apart.

Chunks rather than single tokens: a zero-latency simulator yields its whole response in one chunk,
which keeps per-request overhead small at hundreds of requests in flight; a real model yields one
token per decode step. The server may stop consuming at any point (stop string, abort, client gone)
and then closes the iterator, so backends must release resources in ``finally``.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any

from .params import GenerateItem, SamplingParams
from .textcodec import TextCodec

Chunk = tuple[list[int], list[float]]


class RequestState:
    """One in-flight generation: its inputs, progress, and abort signal."""

    __slots__ = (
        "_abort_callbacks",
        "_waker",
        "abort_message",
        "aborted",
        "created",
        "input_ids",
        "item",
        "params",
        "rid",
        "running",
    )

    def __init__(self, item: GenerateItem, input_ids: list[int]) -> None:
        self.rid = item.rid
        self.item = item
        self.input_ids = input_ids
        self.params: SamplingParams = item.params
        self.created = time.perf_counter()
        self.aborted = False
        self.abort_message = "Aborted"
        # False while queued in the backend (counted as "waiting" in /v1/loads).
        self.running = False
        self._waker: asyncio.Future[None] | None = None
        self._abort_callbacks: list[Callable[[], None]] | None = None

    def abort(self, message: str = "Aborted") -> None:
        """Ask the generation to stop before its next token. Idempotent."""
        if self.aborted:
            return
        self.aborted = True
        if not self.running:
            message = "Abort in waiting queue"
        self.abort_message = message
        w = self._waker
        if w is not None and not w.done():
            w.set_result(None)
        if self._abort_callbacks:
            for cb in self._abort_callbacks:
                cb()

    def on_abort(self, cb: Callable[[], None]) -> None:
        """Register a callback run (synchronously, in the event loop) when the request is aborted."""
        if self._abort_callbacks is None:
            self._abort_callbacks = []
        self._abort_callbacks.append(cb)

    async def sleep_until(self, when: float) -> None:
        """Sleep until loop time ``when``, returning early if the request is aborted."""
        if self.aborted:
            return
        loop = asyncio.get_running_loop()
        delay = when - loop.time()
        if delay <= 0:
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waker = fut
        handle = loop.call_at(when, _resolve, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waker = None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Backend(ABC):
    """A token generator behind the protocol server."""

    codec: TextCodec
    model_path: str = "unknown"
    served_model_name: str = "unknown"
    context_length: int = 4096

    async def start(self) -> None:
        """Called once when the server starts (load weights, start schedulers)."""

    async def stop(self) -> None:
        """Called once when the server stops."""

    @abstractmethod
    def generate(self, state: RequestState) -> AsyncIterator[Chunk]:
        """Yield ``(token_ids, logprobs)`` chunks for ``state`` until done or aborted.

        Must honour ``state.params`` (sampling, ``max_new_tokens``, ``min_new_tokens``,
        ``ignore_eos``) and check ``state.aborted`` between tokens. It must set
        ``state.running = True`` once the request leaves any queue.
        """

    async def input_logprobs(self, state: RequestState, start: int) -> list[float | None]:
        """Log-probabilities of prompt tokens ``start..`` (first position of the prompt is None)."""
        return [None] * max(0, len(state.input_ids) - start)

    def num_waiting(self) -> int:
        """Requests queued inside the backend (if it has a queue)."""
        return 0

    def model_info(self) -> dict[str, Any]:
        """Extra keys for /model_info (model_type, architectures, ...)."""
        return {}

    def server_args(self) -> dict[str, Any]:
        """Extra flat keys for /server_info."""
        return {}
