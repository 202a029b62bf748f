"""The interface between the SGLang-protocol server and a token generator.

A backend only produces tokens: ``generate(state)`` is an async iterator of *chunks*
``(token_ids, logprobs)``. Everything SGLang-specific (admission, stop conditions, finish reasons,
text, streaming, aborts, pauses, weight versions, loads) lives in the protocol server, so the
simulated and the real (dev) engine cannot drift apart.

Chunks rather than single tokens: a zero-latency simulator yields its whole response in one chunk,
which keeps per-request overhead small at hundreds of requests in flight; a real model yields one
token per decode step. The server may stop consuming at any point (stop string, abort, client gone)
and then closes the iterator, so backends must release resources in ``finally``.

What a backend must honour, besides ``state.params``:

* ``state.running``: True while the request is in the running batch (False while queued, or
  after a ``retract`` pause moved it back to the waiting queue); ``/v1/loads`` counts from it.
* the scheduler pause (``state.pause.mode``): no token is produced while it is set; with
  ``retract`` the request leaves the running batch (and, for a real model, its KV cache).
* aborts: ``state.abort_effective`` says when to stop. A queued request stops at once; a running
  one at its next step, which under an ``in_place`` pause only comes after ``/continue_generation``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any

from .locks import Pause
from .params import GenerateItem, SamplingParams
from .spans import Event
from .textcodec import TextCodec

Chunk = tuple[list[int], list[float]]


class RequestState:
    """One request inside the scheduler: inputs, output so far, position (queued/running), abort."""

    __slots__ = (
        "_abort_callbacks",
        "_waker",
        "abort_queued",
        "aborted",
        "created",
        "events",
        "finish",
        "input_ids",
        "item",
        "out_ids",
        "out_lps",
        "params",
        "pause",
        "produced",
        "retractions",
        "rid",
        "running",
        "scheduler_error",
        "sent_first",
    )

    def __init__(self, item: GenerateItem, input_ids: list[int], params: SamplingParams, pause: Pause) -> None:
        self.rid = item.rid
        self.item = item
        self.input_ids = input_ids
        self.params = params
        self.pause = pause
        self.created = time.perf_counter()
        self.aborted = False
        self.abort_queued = False  # aborted while not in the running batch ("Abort in waiting queue")
        self.running = False
        self.retractions = 0
        self.out_ids: list[int] = []
        self.out_lps: list[float] = []
        # Output tokens the model has computed, counted by the scheduler when it computes them: a
        # backend whose handler takes its tokens later (the dev engine's model thread) counts here,
        # so that a weight-version change between the two attributes them to the version that
        # computed them, as SGLang's scheduler does with req.output_ids. 0: count out_ids.
        self.produced = 0
        self.finish: dict[str, Any] | None = None
        self.events: list[Event] | None = None  # weight-version changes seen with output tokens
        self.scheduler_error: str | None = None  # a scheduler-side 400 abort (input too long)
        self.sent_first = False
        self._waker: Any = None
        self._abort_callbacks: list[Callable[[], None]] | None = None

    @property
    def output_tokens(self) -> int:
        """Output tokens so far, as the scheduler counts them (see ``produced``)."""
        return max(self.produced, len(self.out_ids))

    def abort(self) -> None:
        """Ask the generation to stop (idempotent); see :attr:`abort_effective` for when it does."""
        if self.aborted:
            return
        self.aborted = True
        self.abort_queued = not self.running
        self.wake()
        if self._abort_callbacks:
            for cb in self._abort_callbacks:
                cb()

    @property
    def abort_effective(self) -> bool:
        """Whether the generation must stop now: a queued request at once, a running one unless an
        ``in_place`` pause holds the running batch (its abort lands at the next decode step)."""
        return self.aborted and (self.abort_queued or not self.running or self.pause.mode != "in_place")

    def wake(self) -> None:
        w = self._waker
        if w is not None and not w.done():
            w.set_result(None)

    def on_abort(self, cb: Callable[[], None]) -> None:
        """Register a callback run (synchronously, in the event loop) when the request is aborted."""
        if self._abort_callbacks is None:
            self._abort_callbacks = []
        self._abort_callbacks.append(cb)

    def retract(self) -> None:
        """A ``retract`` pause moved this running request back to the waiting queue."""
        if self.running:
            self.running = False
            self.retractions += 1


class Backend(ABC):
    """A token generator behind the protocol server."""

    codec: TextCodec
    #: The server's pause flags, set by the server before ``start``.
    pause: Pause
    model_path: str = "unknown"
    served_model_name: str = "unknown"
    context_length: int = 4096

    async def start(self) -> None:
        """Called once when the server starts (load weights, start schedulers)."""

    async def stop(self) -> None:
        """Called once when the server stops."""

    @abstractmethod
    def generate(self, state: RequestState) -> AsyncIterator[Chunk]:
        """Yield ``(token_ids, logprobs)`` chunks for ``state`` until done or aborted (see the
        module docstring for what must be honoured)."""

    async def input_logprobs(self, state: RequestState, start: int) -> list[float | None]:
        """Log-probabilities of prompt tokens ``start..`` (first position of the prompt is None)."""
        return [None] * max(0, len(state.input_ids) - start)

    async def load_weights(self, model_path: str, load_format: str | None) -> tuple[bool, str]:
        """Replace the weights in place (``/update_weights_from_disk``): (success, message).

        On failure the old weights keep serving. Called only when no decode step can run (the
        update lock is held, or the server is paused)."""
        return False, "This engine cannot load weights."

    def model_info(self) -> dict[str, Any]:
        """Extra keys for /model_info (model_type, architectures, ...)."""
        return {}

    def server_args(self) -> dict[str, Any]:
        """Extra flat keys for /server_info."""
        return {}
