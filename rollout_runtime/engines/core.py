"""The state an engine shares between its routes: SGLang's TokenizerManager and scheduler, in small.

One object (:class:`EngineCore`) holds what real SGLang keeps in two processes, keeping the two
views apart where clients can tell them apart:

* the tokenizer side: the rids of every request the server has accepted (``rid_to_state``, which a
  duplicate rid hits even while the first request waits behind a pause), the pause flags, the
  weight-update lock, the served weight version (``/model_info``), the model path, health status;
* the scheduler side: the requests admitted for generation (``active``: running or queued), and
  the scheduler's weight version, which the weight-version spans of requests are computed against.

Abort, pause and flush semantics follow ``tokenizer_manager.abort_request`` /
``pause_generation`` / ``continue_generation`` and ``scheduler.abort_request`` /
``pause_generation`` / ``flush_cache`` of sglang 0.5.23 (see the methods).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from .backend import Backend, RequestState
from .locks import Pause, PauseMode, RWLock
from .params import RequestValueError
from .wire import FLUSH_TIMEOUT_TEXT

#: ``tokenizer_manager.pause_generation`` re-sends abort_all every second until no request is left.
ABORT_DRAIN_POLL_S = 1.0


class EngineCore:
    """Shared state of one engine (see module docstring)."""

    def __init__(
        self,
        backend: Backend,
        *,
        weight_version: str,
        served_model_name: str,
        context_length: int,
        allow_auto_truncate: bool = False,
        load_format: str = "auto",
        record_requests: int = 256,
    ) -> None:
        self.backend = backend
        self.codec = backend.codec
        self.context_length = context_length
        self.allow_auto_truncate = allow_auto_truncate
        # tokenizer side
        self.rids: set[str] = set()
        self.pause = Pause()
        self.update_lock = RWLock()
        self.served_version = weight_version
        self.initial_weight_version = weight_version  # the --weight-version flag (/server_info)
        self.model_path = backend.model_path
        self.served_model_name = served_model_name
        self.load_format = load_format
        self.healthy = True  # ServerStatus.Up; a failed health check sets UnHealthy until the next passes
        self.stopping = False
        self.last_receive = time.time()  # tokenizer_manager.last_receive_tstamp
        # scheduler side
        self.active: set[RequestState] = set()
        self.scheduler_version = weight_version
        # bookkeeping
        self.recorded: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(0, record_requests))
        self.started_at = time.time()
        self.num_requests_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.num_aborted_total = 0

    # ----------------------------------------------------------------- tokenizer side

    def register_rids(self, rids: list[str]) -> None:
        """``_init_req_state``: a rid already in flight is refused before anything else happens."""
        known = self.rids
        for rid in rids:
            if rid in known:
                raise RequestValueError(f"Duplicate request ID detected: {rid}")
        if len(rids) == 1:
            known.add(rids[0])
        else:
            known.update(rids)

    def release_rids(self, rids: list[str]) -> None:
        if len(rids) == 1:
            self.rids.discard(rids[0])
        else:
            self.rids.difference_update(rids)

    def touch(self) -> None:
        """Output arrived from the scheduler (what /health waits for)."""
        self.last_receive = time.time()

    def is_ready(self) -> bool:
        """``TokenizerManager.is_ready``: not paused, and healthy."""
        return not self.pause.is_paused and self.healthy and not self.stopping

    def abort(self, rid: str = "", abort_all: bool = False) -> int:
        """``abort_request``: abort_all, or a rid this server tracks (then every request whose rid
        starts with it, as the scheduler matches); an empty or unknown rid is ignored. Requests
        still waiting behind a pause are not in the scheduler and are not aborted."""
        if not abort_all:
            if not rid or rid not in self.rids:
                return 0
        n = 0
        for st in list(self.active):
            if abort_all or st.rid.startswith(rid):
                if not st.aborted:
                    st.abort()
                    n += 1
        return n

    async def pause_generation(self, mode: PauseMode) -> None:
        """``pause_generation``: new requests wait; ``abort`` aborts what runs and waits until every
        request has left (re-sending the abort each second); ``retract`` moves running requests
        back to the waiting queue; ``in_place`` freezes them with their KV cache."""
        self.pause.pause(mode)
        if mode == "abort":
            while True:
                self.abort(abort_all=True)
                if not self.update_lock.is_locked():
                    return
                await asyncio.sleep(ABORT_DRAIN_POLL_S)
        if mode == "retract":
            for st in self.active:
                st.retract()

    def continue_generation(self) -> None:
        self.pause.resume()

    def set_version(self, new_version: str | None, *, served: bool = True) -> None:
        """A new weight version: the scheduler records an event on every live request that has
        output tokens (``record_weight_version_change``); ``served`` also updates what
        /model_info reports (the tokenizer's copy)."""
        if new_version is not None and new_version != self.scheduler_version:
            old = self.scheduler_version
            self.scheduler_version = new_version
            for st in self.active:
                if st.output_tokens and st.finish is None:
                    if st.events is None:
                        st.events = []
                    st.events.append((old, st.output_tokens))
        if served and new_version is not None:
            self.served_version = new_version

    # ----------------------------------------------------------------- scheduler side

    def load_counts(self) -> tuple[int, int]:
        """(running, waiting) requests in the scheduler."""
        running = sum(1 for s in self.active if s.running)
        return running, len(self.active) - running

    def is_fully_idle(self) -> bool:
        """``scheduler.flush_cache``'s test: nothing running, nothing waiting (waiting requests do
        not count while the scheduler is paused: a ``retract`` pause allows a flush)."""
        running, waiting = self.load_counts()
        return running == 0 and (waiting == 0 or self.pause.scheduler_paused)

    async def flush_cache(self, timeout_s: float = 0.0) -> tuple[bool, str]:
        """``FlushWrapper.handle``: flush now if idle; with a timeout, wait for idle until it."""
        if timeout_s <= 0.0 or self.is_fully_idle():
            return self.is_fully_idle(), ""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if self.is_fully_idle():
                return True, ""
        return False, FLUSH_TIMEOUT_TEXT
