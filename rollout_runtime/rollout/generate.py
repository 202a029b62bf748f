"""Generating samples: the per-`args` GenerateState, and slime's per-sample and per-group calls.

The unit of work is the prompt group; each sample is its own `/generate` call; one semaphore of
`sglang_server_concurrency x engines` is held only while generating (not while scoring).

GenerateState and the calls live together because they need each other: the state submits
groups (`submit_generate_tasks`, slime's method) and every call reads the state (tokenizer,
semaphore, client, whether the rollout was aborted).

Where we differ from slime: `GenerateState` is per `args` object, not a process-wide singleton
built from whichever args came first; sample hooks get the rollout id as an argument.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import Any

from rollout_runtime.config import ConfigError, option
from rollout_runtime.http_client import EngineError, EngineRequestError, HttpClient, get_rollout_num_engines, register_loop_client
from rollout_runtime.misc import accepts_kwarg, load_function, load_tokenizer, maybe_await
from rollout_runtime.processing_utils import load_processor
from rollout_runtime.rm_hub import async_rm, batched_async_rm, close_clients
from rollout_runtime.rollout.context import (ContextLimits, ContextOverflows, configured_limits, context_overflow,
                                             discover_limits)
from rollout_runtime.rollout.sampling_params import build_sampling_params, sampling_seed
from rollout_runtime.rollout.sglang_payload import (generate_payload, get_model_url, image_data, prompt_ids,
                                                    response_tokens, routing_headers, token_budget)
from rollout_runtime.rollout.stats import RolloutStats
from rollout_runtime.staleness.gate import WeightGate
from rollout_runtime.types import Sample, flatten

# id(args) -> its state. Entries are dropped when args is garbage-collected (before its id can be
# reused), and states hold args weakly, so the cache never keeps a config alive. (Pydantic models
# are not hashable, so a WeakKeyDictionary cannot hold them.)
_STATES: dict[int, GenerateState] = {}


class GenerateState:
    """Per-`args` generation state: tokenizer, semaphore, HTTP client, sampling params, pending tasks.

    `GenerateState(args)` returns the same object for the same `args` (slime code calls it
    repeatedly), and a new one for different args.
    """

    def __new__(cls, args: Any) -> GenerateState:
        existing = _lookup_state(args)
        if existing is not None:
            return existing
        self = super().__new__(cls)
        self._init(args)
        _store_state(args, self)
        return self

    def __init__(self, args: Any) -> None:  # state is built once, in __new__
        pass

    def _init(self, args: Any) -> None:
        try:
            ref = weakref.ref(args)
        except TypeError:  # not weak-referenceable: hold it (and this state) for the life of the process
            ref = lambda: args  # noqa: E731
        self._args_ref = ref
        self._tokenizer = None
        self._processor: Any = False  # not loaded yet (None means a text-only model)
        # slime's rule: sglang_server_concurrency per engine, engines from rollout_num_engines or the GPU counts
        self.concurrency = args.sglang_server_concurrency * get_rollout_num_engines(args)
        self._loop_bound: dict[int, tuple[asyncio.Semaphore, HttpClient, asyncio.Lock]] = {}
        self.sampling_params: dict[str, Any] = build_sampling_params(args)
        self.group_sampling_seeds = None
        if args.sglang_enable_deterministic_inference:
            self.group_sampling_seeds = [sampling_seed(args, i) for i in range(args.n_samples_per_prompt)]
        self.stats = RolloutStats()
        self.eval_dataset_cache: dict[tuple, Any] = {}
        # rids of this state's /generate calls in flight, for abort_scope "own"
        self.rid_prefix = f"kr-{uuid.uuid4().hex[:12]}-"
        self.inflight_rids: set[str] = set()
        self._server_limits: ContextLimits | None = None  # learned from the servers, once
        self.context_overflows = ContextOverflows()
        # All samples of a group share a prompt: tokenize it once (bounded; cleared when full).
        self._prompt_ids: dict[str, list[int]] = {}
        # bounded staleness: waits for new enough weights (a no-op without max_staleness)
        self.weight_gate = WeightGate(self)
        self.reset()

    def encode_prompt(self, prompt: str) -> list[int]:
        """`tokenizer.encode(prompt, add_special_tokens=False)`, memoised per prompt text."""
        ids = self._prompt_ids.get(prompt)
        if ids is None:
            tok = self.tokenizer
            backend = getattr(tok, "_tokenizer", None) if getattr(tok, "is_fast", False) else None
            if backend is not None:  # same ids, without the Python wrapper's per-call overhead
                ids = backend.encode(prompt, add_special_tokens=False).ids
            else:
                ids = tok.encode(prompt, add_special_tokens=False)
            if len(self._prompt_ids) >= 65536:
                self._prompt_ids.clear()
            self._prompt_ids[prompt] = ids
        return list(ids)

    @property
    def args(self) -> Any:
        return self._args_ref()

    def _bound(self) -> tuple[asyncio.Semaphore, HttpClient, asyncio.Lock]:
        """Semaphore, HTTP client and discovery lock of the running loop (asyncio primitives are loop-bound)."""
        loop_id = id(asyncio.get_running_loop())
        bound = self._loop_bound.get(loop_id)
        if bound is None:
            args = self.args
            bound = (asyncio.Semaphore(self.concurrency),
                     HttpClient(self.concurrency, max_retries=option(args, "http_max_retries"),
                                backoff=option(args, "http_retry_backoff"),
                                timeout=option(args, "http_request_timeout")),
                     asyncio.Lock())
            self._loop_bound = {loop_id: bound}
            register_loop_client(bound[1])  # slime code's http_utils.post/get share this pool
        return bound

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (call on the loop that used it)."""
        bound = self._loop_bound.pop(id(asyncio.get_running_loop()), None)
        if bound is not None:
            await bound[1].close()
        await self.weight_gate.aclose()

    @property
    def semaphore(self) -> asyncio.Semaphore:
        return self._bound()[0]

    @property
    def client(self) -> HttpClient:
        return self._bound()[1]

    def new_rid(self) -> str:
        """A request id of this state, unique per /generate attempt (SGLang refuses one still in flight)."""
        return f"{self.rid_prefix}{uuid.uuid4().hex}"

    async def context_limits(self, *, evaluation: bool = False) -> ContextLimits:
        """The configured context length, else the one the servers report (asked once; again after a batch
        if they reported none)."""
        configured = configured_limits(self.args, evaluation=evaluation)
        if configured is not None:
            return configured
        if self._server_limits is None:
            async with self._bound()[2]:
                if self._server_limits is None:
                    self._server_limits = await discover_limits(self.client, self.args.router_url)
        return self._server_limits

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if not self.args.hf_checkpoint:
                raise ConfigError("hf_checkpoint (dataset.tokenizer) must be set: the default generate tokenizes prompts")
            self._tokenizer = load_tokenizer(self.args.hf_checkpoint)
        return self._tokenizer

    @property
    def processor(self) -> Any:
        """The checkpoint's multimodal processor, or None for a text-only model (slime's GenerateState.processor)."""
        if self._processor is False:
            self._processor = load_processor(self.args.hf_checkpoint) if self.args.hf_checkpoint else None
        return self._processor

    def reset(self) -> None:
        if self._server_limits is not None and self._server_limits.context_length is None:
            self._server_limits = None  # the servers reported none: ask again (a pool may have had no workers yet)
        self.context_overflows.count = 0
        self.remaining_batch_size = 0
        self.pendings: set[asyncio.Task] = set()
        self.task_groups: dict[asyncio.Task, list[Sample]] = {}
        self.discarded: list[list[Sample]] = []
        self.aborted = False

    def submit_generate_tasks(self, samples: list[list[Sample]], rollout_id: int | None = None) -> None:
        """One task per group (slime's method); `rollout_id` reaches the sample hooks."""
        for group in samples:
            task = asyncio.create_task(generate_and_rm_group(
                self.args, group, sampling_params=self.sampling_params.copy(), evaluation=False, rollout_id=rollout_id))
            self.pendings.add(task)
            self.task_groups[task] = group
        self.remaining_batch_size += len(samples)


def _lookup_state(args: Any) -> GenerateState | None:
    state = _STATES.get(id(args))
    return state if state is not None and state.args is args else None


def _store_state(args: Any, state: GenerateState) -> None:
    _STATES[id(args)] = state
    try:
        weakref.finalize(args, _STATES.pop, id(args), None)
    except TypeError:
        pass  # not weak-referenceable: see GenerateState._init


async def close_http(args: Any) -> None:
    """Close the engine and reward HTTP clients bound to the running loop."""
    await GenerateState(args).aclose()
    await close_clients()


# ------------------------------------------------------------------------ per sample


async def generate(args: Any, sample: Sample, sampling_params: dict[str, Any], *, evaluation: bool = False) -> Sample:
    """One `/generate` call for one sample (continuing from `sample.tokens` when it has a partial response).

    `max_new_tokens` is what is left of the response budget (slime), capped to the room left in the
    context; a sample with no room is not sent and ends TRUNCATED (`context.py`).
    """
    state = GenerateState(args)
    assert sample.status in (Sample.Status.PENDING, Sample.Status.ABORTED), f"sample status is {sample.status}"
    images = image_data(sample)
    input_ids = prompt_ids(sample, state.encode_prompt, state.processor if images else None)
    remaining = token_budget(sampling_params, sample)
    if remaining == 0:
        sample.status = Sample.Status.TRUNCATED
        return sample
    if not sample.tokens:
        sample.tokens = input_ids
    limits = await state.context_limits(evaluation=evaluation)
    room = limits.room(len(input_ids))
    if room == 0:
        return state.context_overflows.mark(sample, input_tokens=len(input_ids), limit=limits.context_length,
                                            message=f"{len(input_ids)} input tokens leave no room in the context "
                                                    f"of {limits.context_length} tokens ({limits.source})")
    max_new = remaining if room is None else min(remaining, room)
    # With images SGLang gets the text and expands the image placeholders itself (as slime sends it).
    payload = generate_payload(state.new_rid(), input_ids, sampling_params, max_new,
                               text=(sample.prompt + sample.response) if images else None, image_data=images)
    for attempt in range(2):
        try:
            output = await _post_generate(state, payload, routing_headers(sample))
            break
        except EngineRequestError as exc:
            overflow = context_overflow(exc)
            if overflow is None:
                raise  # any other 4xx is a configuration error that every sample would hit: fail fast
            if attempt or not 0 < overflow.room < max_new:
                return state.context_overflows.mark(sample, input_tokens=overflow.input_tokens, limit=overflow.limit,
                                                    message=overflow.message)
            # The server counts more input than we do (speculative decoding reserves slots): ask for what it allows.
            max_new = overflow.room
            payload = {**payload, "rid": state.new_rid(),
                       "sampling_params": {**payload["sampling_params"], "max_new_tokens": max_new}}
    tokens, log_probs = response_tokens(output)
    sample.append_response_tokens(args, tokens=tokens, log_probs=log_probs, trainable=True,
                                  meta_info=output.get("meta_info") or {}, text=output.get("text", ""))
    return sample


async def _post_generate(state: GenerateState, payload: dict[str, Any], headers: dict[str, str] | None) -> Any:
    """POST /generate, its rid in `inflight_rids` while it runs (abort_scope "own"); each retry under a new rid."""
    current = payload["rid"]
    state.inflight_rids.add(current)

    async def next_attempt(last: dict[str, Any], failure: EngineError) -> dict[str, Any]:
        nonlocal current
        state.inflight_rids.discard(current)
        current = state.new_rid()
        state.inflight_rids.add(current)
        return {**last, "rid": current}

    try:
        return await state.client.post(get_model_url(state.args), payload, headers=headers, before_retry=next_attempt)
    finally:
        state.inflight_rids.discard(current)


async def generate_and_rm(args: Any, sample: Sample, sampling_params: dict[str, Any], evaluation: bool = False,
                          *, rollout_id: int | None = None) -> Sample | list[Sample]:
    """Generate (under the semaphore), run sample hooks, then score (outside it)."""
    state = GenerateState(args)
    if isinstance(sample, list):
        return sample  # a finished fan-out (several samples from one prompt) recycled with its group: kept as is
    if args.partial_rollout and args.mask_offpolicy_in_partial_rollout and sample.response_length > 0:
        sample.loss_mask = [0] * sample.response_length
    if sample.status in (Sample.Status.COMPLETED, Sample.Status.TRUNCATED):
        assert sample.response is not None
        if not args.group_rm:
            assert sample.reward is not None, f"finished sample {sample.index} has no reward"
        return sample
    async with state.semaphore:
        if state.aborted:
            sample.status = Sample.Status.ABORTED
            return sample
        given = sample
        path = sample.generate_function_path or args.custom_generate_function_path
        if path:
            fn = load_function(path)
            if accepts_kwarg(fn, "evaluation"):
                sample = await fn(args, sample, sampling_params, evaluation=evaluation)
            else:
                sample = await fn(args, sample, sampling_params)
        else:
            sample = await generate(args, sample, sampling_params, evaluation=evaluation)
    if isinstance(sample, list) and args.partial_rollout and any(s.status == Sample.Status.ABORTED for s in sample):
        # An interrupted fan-out cannot be continued sibling by sibling: the sample the function was given goes
        # back with its group, as the function left it (a partial response continues, an untouched one restarts).
        if given.status not in (Sample.Status.PENDING, Sample.Status.ABORTED):
            given.status = Sample.Status.ABORTED
        return given
    sample = await apply_sample_hooks(args, sample, rollout_id=rollout_id, evaluation=evaluation)
    if args.group_rm:
        return sample
    if isinstance(sample, list):
        if any(s.status == Sample.Status.ABORTED for s in sample):
            return sample
        todo = [s for s in sample if s.reward is None]
        if todo:
            for s, r in zip(todo, await batched_async_rm(args, todo)):
                s.reward = r
        return sample
    if sample.status == Sample.Status.ABORTED:
        return sample
    if sample.reward is None:
        sample.reward = await async_rm(args, sample)
    return sample


async def apply_sample_hooks(args: Any, sample: Sample | list[Sample], *, rollout_id: int | None,
                             evaluation: bool) -> Sample | list[Sample]:
    """Each `rollout_sample_hook_path` hook on every sample, as `hook(args, sample, rollout_id=, evaluation=)`.

    A hook may be sync or async and returns a Sample, or None to keep the one it was given.
    """
    hooks = args.rollout_sample_hook_path or []
    if not hooks:
        return sample

    async def one(s: Sample) -> Sample:
        for path in hooks:
            out = await maybe_await(load_function(path)(args, s, rollout_id=rollout_id, evaluation=evaluation))
            s = out if out is not None else s
        return s

    if isinstance(sample, list):
        return [await one(s) for s in sample]
    return await one(sample)


async def generate_and_rm_group(args: Any, group: list[Sample], sampling_params: dict[str, Any],
                                evaluation: bool = False, *, rollout_id: int | None = None) -> list[Sample]:
    """All samples of one prompt group, concurrently; group RM after, if configured."""
    state = GenerateState(args)
    if state.aborted:
        return group
    tasks = []
    for idx, sample in enumerate(group):
        if isinstance(sample, Sample) and sample.session_id is None:
            sample.session_id = uuid.uuid4().hex
        params = sampling_params.copy()
        if state.group_sampling_seeds is not None:
            params["sampling_seed"] = state.group_sampling_seeds[idx]
        tasks.append(generate_and_rm(args, sample, params, evaluation=evaluation, rollout_id=rollout_id))
    group = list(await asyncio.gather(*tasks))
    if args.group_rm and not state.aborted:
        flat = flatten(group)
        if not any(s.status == Sample.Status.ABORTED for s in flat):
            for s, r in zip(flat, await batched_async_rm(args, flat)):
                s.reward = r
    return group
