"""The rollout loop against SGLang: slime's `sglang_rollout` semantics, names and signatures.

The unit of work is the prompt group; each sample is its own `/generate` call; one
semaphore of `sglang_server_concurrency x engines` is held only while generating (not
while scoring). Groups are submitted whenever accepted + in-flight groups fall below the
batch; when the batch is full, work stops, every worker the router lists is told to
abort, and in-flight calls return with finish_reason abort. With `partial_rollout` the
unfinished groups go back to the buffer whole and continue later from `sample.tokens`.

Where we differ from slime (documented in the README):
- `GenerateState` is per `args` object, not a process-wide singleton built from whichever
  args came first.
- `over_sampling_batch_size` may be smaller than the batch (granular refills).
- Without partial rollout, the end of a rollout cancels discarded groups instead of
  waiting on their reward calls.
- With partial rollout, completed groups beyond the batch go back to the buffer instead
  of being dropped.
- HTTP 4xx from the engine is raised with the engine's message, not retried 60 times.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from rollout_runtime.async_utils import run
from rollout_runtime.config import ConfigError
from rollout_runtime.filter_hub.base_types import MetricGatherer, call_dynamic_filter, should_drop_dynamic_filter_output
from rollout_runtime.http_client import EngineError, EngineRequestError, HttpClient
from rollout_runtime.misc import accepts_kwarg, load_function, load_tokenizer, maybe_await
from rollout_runtime.rm_hub import async_rm, batched_async_rm
from rollout_runtime.base_types import RolloutFnEvalOutput, RolloutFnTrainOutput
from rollout_runtime.types import Sample

__all__ = [
    "GenerateState", "generate", "generate_and_rm", "generate_and_rm_group", "generate_rollout_async",
    "generate_rollout", "eval_rollout", "abort", "get_model_url", "RolloutStats",
]

log = logging.getLogger(__name__)


@dataclass
class RolloutStats:
    """What one rollout did, in samples, for progress, metrics and the committed counts."""

    completed: int = 0
    aborted: int = 0
    filtered: int = 0
    wasted_tokens: int = 0
    response_tokens: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


# id(args) -> its state. Entries are dropped when args is garbage-collected (before its id can be
# reused), and states hold args weakly, so the cache never keeps a config alive. (Pydantic models
# are not hashable, so a WeakKeyDictionary cannot hold them.)
_STATES: dict[int, "GenerateState"] = {}


class GenerateState:
    """Per-`args` generation state: tokenizer, semaphore, HTTP client, sampling params, pending tasks.

    `GenerateState(args)` returns the same object for the same `args` (slime code calls it
    repeatedly), and a new one for different args.
    """

    def __new__(cls, args: Any) -> "GenerateState":
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
        concurrency = args.sglang_server_concurrency * (getattr(args, "rollout_num_engines", None) or 1)
        self.concurrency = concurrency
        self._loop_bound: dict[int, tuple[asyncio.Semaphore, HttpClient]] = {}
        self.sampling_params: dict[str, Any] = dict(
            temperature=args.rollout_temperature,
            top_p=args.rollout_top_p,
            top_k=args.rollout_top_k,
            max_new_tokens=args.rollout_max_response_len,
            stop=args.rollout_stop,
            stop_token_ids=args.rollout_stop_token_ids,
            skip_special_tokens=args.rollout_skip_special_tokens,
            no_stop_trim=True,
            spaces_between_special_tokens=False,
        )
        self.group_sampling_seeds = None
        if getattr(args, "sglang_enable_deterministic_inference", False):
            self.group_sampling_seeds = [args.rollout_seed + i for i in range(args.n_samples_per_prompt)]
        self.stats = RolloutStats()
        self.eval_datasets: dict[tuple, Any] = {}
        # rids of this state's /generate calls in flight, for abort_scope "own"
        self.rid_prefix = f"kr-{uuid.uuid4().hex[:12]}-"
        self.inflight_rids: set[str] = set()
        # All samples of a group share a prompt: tokenize it once (bounded; cleared when full).
        self._prompt_ids: dict[str, list[int]] = {}
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

    def _bound(self) -> tuple[asyncio.Semaphore, HttpClient]:
        """Semaphore and HTTP client of the running loop (asyncio primitives are loop-bound)."""
        loop_id = id(asyncio.get_running_loop())
        bound = self._loop_bound.get(loop_id)
        if bound is None:
            args = self.args
            bound = (asyncio.Semaphore(self.concurrency),
                     HttpClient(self.concurrency, max_retries=getattr(args, "http_max_retries", 5),
                                backoff=getattr(args, "http_retry_backoff", 0.5),
                                timeout=getattr(args, "http_request_timeout", None)))
            self._loop_bound = {loop_id: bound}
        return bound

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (call on the loop that used it)."""
        bound = self._loop_bound.pop(id(asyncio.get_running_loop()), None)
        if bound is not None:
            await bound[1].close()

    @property
    def semaphore(self) -> asyncio.Semaphore:
        return self._bound()[0]

    @property
    def client(self) -> HttpClient:
        return self._bound()[1]

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if not self.args.hf_checkpoint:
                raise ConfigError("hf_checkpoint (dataset.tokenizer) must be set: the default generate tokenizes prompts")
            self._tokenizer = load_tokenizer(self.args.hf_checkpoint)
        return self._tokenizer

    def reset(self) -> None:
        self.remaining_batch_size = 0
        self.pendings: set[asyncio.Task] = set()
        self.task_groups: dict[asyncio.Task, list[Sample]] = {}
        self.discarded: list[list[Sample]] = []
        self.aborted = False

    def submit_generate_tasks(self, samples: list[list[Sample]]) -> None:
        for group in samples:
            task = asyncio.create_task(
                generate_and_rm_group(self.args, group, sampling_params=self.sampling_params.copy(), evaluation=False))
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


def get_model_url(args: Any, model_name: str | None = None, endpoint: str = "/generate") -> str:
    routers = getattr(args, "sglang_model_routers", None) or {}
    if model_name and model_name in routers:
        ip, port = routers[model_name]
        return f"http://{ip}:{port}{endpoint}"
    return f"{args.router_url}{endpoint}"


# ------------------------------------------------------------------------ per sample


def _prompt_ids(state: GenerateState, sample: Sample) -> list[int]:
    if sample.tokens:
        return list(sample.tokens)
    prompt = sample.prompt
    if isinstance(prompt, list):
        raise ConfigError(f"sample {sample.index}: the prompt is a list of chat messages; set apply_chat_template "
                          f"(dataset.applyChatTemplate) so it is rendered to text, or use a custom generate function")
    return state.encode_prompt(prompt)


async def generate(args: Any, sample: Sample, sampling_params: dict[str, Any]) -> Sample:
    """One `/generate` call for one sample (continuing from `sample.tokens` when it has a partial response)."""
    state = GenerateState(args)
    assert sample.status in (Sample.Status.PENDING, Sample.Status.ABORTED), f"sample status is {sample.status}"
    prompt_ids = _prompt_ids(state, sample)
    max_new = sampling_params.get("max_new_tokens")
    if max_new is None:
        raise ConfigError("rollout_max_response_len (rollout.maxResponseLength) must be set: it is max_new_tokens")
    remaining = max_new - sample.response_length
    assert remaining >= 0, f"sample {sample.index} already has {sample.response_length} > max_new_tokens={max_new}"
    if remaining == 0:
        sample.status = Sample.Status.TRUNCATED
        return sample
    params = {k: v for k, v in sampling_params.items() if v is not None}
    params["max_new_tokens"] = remaining
    rid = f"{state.rid_prefix}{uuid.uuid4().hex}"
    payload = {"rid": rid, "input_ids": prompt_ids, "sampling_params": params, "return_logprob": True}
    if not sample.tokens:
        sample.tokens = prompt_ids
    headers = None
    if sample.session_id and getattr(args, "router_policy", None) == "consistent_hashing":
        headers = {"X-SMG-Routing-Key": sample.session_id}
    state.inflight_rids.add(rid)
    try:
        output = await state.client.post(get_model_url(args), payload, headers=headers)
    finally:
        state.inflight_rids.discard(rid)
    meta = output.get("meta_info") or {}
    pairs = meta.get("output_token_logprobs")
    if pairs:
        tokens = [p[1] for p in pairs]
        log_probs = [p[0] for p in pairs]
    else:
        tokens = list(output.get("output_ids") or [])
        log_probs = [0.0] * len(tokens) if tokens else []
    sample.append_response_tokens(args, tokens=tokens, log_probs=log_probs, trainable=True, meta_info=meta,
                                  text=output.get("text", ""))
    return sample


async def generate_and_rm(args: Any, sample: Sample, sampling_params: dict[str, Any], evaluation: bool = False) -> Sample | list[Sample]:
    """Generate (under the semaphore), run sample hooks, then score (outside it)."""
    state = GenerateState(args)
    if getattr(args, "partial_rollout", False) and getattr(args, "mask_offpolicy_in_partial_rollout", False) \
            and sample.response_length > 0:
        sample.loss_mask = [0] * sample.response_length
    if sample.status in (Sample.Status.COMPLETED, Sample.Status.TRUNCATED):
        assert sample.response is not None
        if not getattr(args, "group_rm", False):
            assert sample.reward is not None, f"finished sample {sample.index} has no reward"
        return sample
    async with state.semaphore:
        if state.aborted:
            sample.status = Sample.Status.ABORTED
            return sample
        path = sample.generate_function_path or getattr(args, "custom_generate_function_path", None)
        if path:
            fn = load_function(path)
            if accepts_kwarg(fn, "evaluation"):
                sample = await fn(args, sample, sampling_params, evaluation=evaluation)
            else:
                sample = await fn(args, sample, sampling_params)
        else:
            sample = await generate(args, sample, sampling_params)
    sample = await _apply_sample_hooks(args, sample, evaluation)
    if getattr(args, "group_rm", False):
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


async def _apply_sample_hooks(args: Any, sample: Sample | list[Sample], evaluation: bool) -> Sample | list[Sample]:
    hooks = getattr(args, "rollout_sample_hook_path", None) or []
    if not hooks:
        return sample
    rollout_id = getattr(args, "_current_rollout_id", None)

    async def one(s: Sample) -> Sample:
        for path in hooks:
            out = await maybe_await(load_function(path)(args, s, rollout_id=rollout_id, evaluation=evaluation))
            s = out if out is not None else s
        return s

    if isinstance(sample, list):
        return [await one(s) for s in sample]
    return await one(sample)


async def generate_and_rm_group(args: Any, group: list[Sample], sampling_params: dict[str, Any],
                                evaluation: bool = False) -> list[Sample]:
    """All samples of one prompt group, concurrently; group RM after, if configured."""
    state = GenerateState(args)
    if state.aborted:
        return group
    tasks = []
    for idx, sample in enumerate(group):
        if sample.session_id is None:
            sample.session_id = uuid.uuid4().hex
        params = sampling_params.copy()
        if state.group_sampling_seeds is not None:
            params["sampling_seed"] = state.group_sampling_seeds[idx]
        tasks.append(generate_and_rm(args, sample, params, evaluation=evaluation))
    group = list(await asyncio.gather(*tasks))
    if getattr(args, "group_rm", False) and not state.aborted:
        flat = [s for x in group for s in (x if isinstance(x, list) else [x])]
        if not any(s.status == Sample.Status.ABORTED for s in flat):
            for s, r in zip(flat, await batched_async_rm(args, flat)):
                s.reward = r
    return group


# ------------------------------------------------------------------------ abort


async def _worker_urls(state: GenerateState) -> list[str]:
    """Workers behind the router (`GET /workers`), or the URL itself when it is a single engine."""
    base = state.args.router_url
    try:
        resp = await state.client.get(f"{base}/workers")
    except EngineRequestError:  # 404: not a router
        return [base]
    except EngineError as exc:
        log.warning("could not list workers at %s: %s", base, exc)
        return [base]
    if isinstance(resp, dict) and isinstance(resp.get("workers"), list):
        return [w["url"].rstrip("/") for w in resp["workers"] if isinstance(w, dict) and w.get("url")]
    if isinstance(resp, dict) and isinstance(resp.get("urls"), list):  # sglang_router <= 0.2.1 /list_workers shape
        return [u.rstrip("/") for u in resp["urls"]]
    return [base]


def _count_requests(loads: Any) -> int:
    """Requests still running or queued, from any of the /v1/loads shapes slime accepts."""
    entries = loads.get("loads") if isinstance(loads, dict) and isinstance(loads.get("loads"), list) else [loads]
    total = 0
    for e in entries:
        if not isinstance(e, dict):
            continue
        for key in ("num_reqs", "num_total_reqs", "total_reqs"):
            if key in e:
                total += int(e[key] or 0)
                break
        else:
            running = e.get("num_running_reqs", e.get("total_running_reqs", 0)) or 0
            waiting = e.get("num_waiting_reqs", e.get("total_waiting_reqs", 0)) or 0
            total += int(running) + int(waiting)
    return total


async def _abort_until_idle(state: GenerateState, url: str) -> None:
    args = state.args
    deadline = time.monotonic() + getattr(args, "abort_wait_timeout", 60.0)
    # Aborted requests usually drain within a decode step: poll soon, then back off to
    # abort_poll_interval, so a rollout does not end with a fixed idle wait (slime waits 3 s).
    delay = 0.005
    while True:
        try:
            await state.client.post(f"{url}/abort_request", {"abort_all": True}, max_retries=0)
        except EngineError as exc:
            log.warning("abort_request to %s failed: %s", url, exc)
        try:
            loads = await state.client.get(f"{url}/v1/loads?include=core")
        except EngineError:
            return  # no load endpoint: the abort was sent, nothing to poll
        if _count_requests(loads) == 0:
            return
        if time.monotonic() > deadline:
            log.warning("%s still reports %d requests %.0fs after abort; continuing", url, _count_requests(loads),
                        getattr(args, "abort_wait_timeout", 60.0))
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, getattr(args, "abort_poll_interval", 0.5))


async def _abort_own(state: GenerateState, urls: list[str]) -> None:
    """Abort only this state's requests: each in-flight rid, sent to every worker (an unknown rid is a
    no-op there). Exact rids, because SGLang's tokenizer manager ignores rids it does not track, so a
    prefix would not reach the scheduler. No /v1/loads poll: other tenants' requests keep the engine
    busy; draining our own tasks is the wait."""
    sem = asyncio.Semaphore(64)

    async def one(url: str, rid: str) -> None:
        async with sem:
            try:
                await state.client.post(f"{url}/abort_request", {"rid": rid}, max_retries=0)
            except EngineError as exc:
                log.warning("abort_request %s to %s failed: %s", rid, url, exc)

    await asyncio.gather(*(one(u, rid) for rid in list(state.inflight_rids) for u in urls))


async def abort(args: Any, rollout_id: int) -> list[list[Sample]]:
    """Stop generation: abort every worker, then drain pending groups.

    With partial rollout, drained groups are returned for the buffer (whole, with mixed
    statuses). Without it, pending groups are cancelled: their outputs would be thrown
    away, so there is no point waiting on their reward calls.
    """
    state = GenerateState(args)
    assert not state.aborted
    state.aborted = True
    partial = getattr(args, "partial_rollout", False)
    if not partial:
        for task in state.pendings:
            task.cancel()
    urls = await _worker_urls(state)
    if getattr(args, "abort_scope", "all") == "own":
        await _abort_own(state, urls)
    else:
        await asyncio.gather(*(_abort_until_idle(state, u) for u in urls))
    recycled: list[list[Sample]] = []
    if state.pendings:
        done, _ = await asyncio.wait(state.pendings)
        for task in done:
            if task.cancelled():
                state.discarded.append(state.task_groups.get(task, []))
                continue
            exc = task.exception()
            if exc is not None:
                raise exc
            if partial:
                recycled.append(task.result())
            else:
                state.discarded.append(task.result())
    state.pendings = set()
    return recycled


# ------------------------------------------------------------------------ the loop


def _first_index(group: list[Any]) -> int:
    first = group[0]
    while isinstance(first, list):
        first = first[0]
    return first.index if first.index is not None else 0


def _flat(group: list[Any]) -> list[Sample]:
    return [s for x in group for s in (x if isinstance(x, list) else [x])]


async def generate_rollout_async(args: Any, rollout_id: int,
                                 data_source: Callable[[int], list[list[Sample]]]) -> tuple[list[list[Sample]], list[list[Sample]]]:
    """Fill one batch of `rollout_batch_size` accepted groups.

    Returns (completed, aborted): the accepted groups sorted by index, and the groups to
    put back in the buffer (non-empty only with partial rollout).
    """
    state = GenerateState(args)
    state.reset()
    state.stats = stats = RolloutStats()
    args._current_rollout_id = rollout_id
    started = time.perf_counter()
    dynamic_filter = load_function(args.dynamic_sampling_filter_path) if args.dynamic_sampling_filter_path else None
    over_filter = load_function(args.over_sampling_filter_path) if getattr(args, "over_sampling_filter_path", None) else None
    target = args.rollout_batch_size
    refill = getattr(args, "over_sampling_batch_size", None) or args.rollout_batch_size
    if over_filter is not None:
        # Collect more accepted groups than the batch, then let the filter choose the batch.
        target = getattr(args, "over_sampling_filter_input_size", None) or max(target, refill)
    metrics = MetricGatherer()
    data: list[list[Sample]] = []
    surplus: list[list[Sample]] = []
    try:
        continuous = getattr(args, "continuous_refill", False)
        while len(data) < target:
            while True:
                in_flight = state.remaining_batch_size - len(data)
                if state.remaining_batch_size < target:
                    n = refill  # slime's rule: accepted + in-flight must cover the batch
                elif continuous and in_flight < refill:
                    n = refill - in_flight  # keep engines busy; leftovers are recycled at the end
                else:
                    break
                groups = data_source(n)
                for group in groups:
                    for s in _flat(group):
                        s.metadata.setdefault("start_rollout_id", rollout_id)
                state.submit_generate_tasks(groups)
            done, state.pendings = await asyncio.wait(state.pendings, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                group = task.result()
                if len(group) != args.n_samples_per_prompt:
                    raise RuntimeError(f"a group came back with {len(group)} samples, expected {args.n_samples_per_prompt}")
                if len(data) >= target:
                    surplus.append(group)
                    continue
                out = call_dynamic_filter(dynamic_filter, args, group)
                if should_drop_dynamic_filter_output(out, remaining_batch_size=state.remaining_batch_size, target_data_size=target):
                    metrics.on_dynamic_filter_drop(out.reason)
                    state.remaining_batch_size -= 1
                    stats.filtered += len(_flat(group))
                    stats.wasted_tokens += sum(s.response_length for s in _flat(group))
                    continue
                data.append(group)
        recycled = await abort(args, rollout_id)
    except BaseException:
        for task in state.pendings:
            task.cancel()
        raise
    if over_filter is not None:
        chosen = over_filter(args, data)
        if len(chosen) != args.rollout_batch_size:
            raise RuntimeError(f"over-sampling filter {args.over_sampling_filter_path} returned {len(chosen)} groups, "
                               f"expected rollout_batch_size={args.rollout_batch_size}")
        chosen_ids = {id(g) for g in chosen}
        rejected = [g for g in data if id(g) not in chosen_ids]
        stats.filtered += sum(len(_flat(g)) for g in rejected)
        stats.wasted_tokens += sum(s.response_length for g in rejected for s in _flat(g))
        data = chosen
    if getattr(args, "partial_rollout", False):
        aborted_groups = surplus + recycled  # back to the buffer; their tokens are kept
        stats.aborted = sum(len(_flat(g)) for g in aborted_groups)
    else:
        aborted_groups = []
        thrown_away = surplus + state.discarded
        stats.aborted = sum(len(_flat(g)) for g in thrown_away)
        stats.wasted_tokens += sum(s.response_length for g in thrown_away for s in _flat(g))
    data.sort(key=_first_index)
    aborted_groups.sort(key=_first_index)
    stats.completed = sum(len(_flat(g)) for g in data)
    stats.response_tokens = sum(s.response_length for g in data for s in _flat(g))
    stats.seconds = time.perf_counter() - started
    stats.metrics = dict(metrics.collect())
    rewards = [s.get_reward_value(args) for g in data for s in _flat(g)]
    numeric = [float(r) for r in rewards if isinstance(r, (int, float))]
    if numeric:
        stats.metrics["rollout/mean_reward"] = sum(numeric) / len(numeric)
    state.reset()
    if getattr(args, "rollout_sample_filter_path", None):
        load_function(args.rollout_sample_filter_path)(args, data)
    return data, aborted_groups


def generate_rollout(args: Any, rollout_id: int, data_buffer: Any, evaluation: bool = False) -> Any:
    """slime's synchronous rollout function: a batch of groups, or eval results with evaluation=True."""
    if evaluation:
        return run(eval_rollout(args, rollout_id))
    completed, aborted = run(generate_rollout_async(args, rollout_id, data_buffer.get_samples))
    if aborted:
        data_buffer.add_samples(aborted)
    if getattr(args, "rollout_all_samples_process_path", None):
        load_function(args.rollout_all_samples_process_path)(args, completed + aborted, data_buffer)
    return completed


async def close_http(args: Any) -> None:
    """Close the engine and reward HTTP clients bound to the running loop."""
    from rollout_runtime.rm_hub import close_clients

    await GenerateState(args).aclose()
    await close_clients()


def last_rollout_stats(args: Any) -> RolloutStats:
    return GenerateState(args).stats


# ------------------------------------------------------------------------ eval


def _eval_sampling_params(args: Any) -> dict[str, Any]:
    pick = lambda a, b: a if a is not None else b  # noqa: E731
    params = dict(
        temperature=pick(args.eval_temperature, args.rollout_temperature),
        top_p=pick(args.eval_top_p, args.rollout_top_p),
        top_k=pick(args.eval_top_k, args.rollout_top_k),
        max_new_tokens=pick(args.eval_max_response_len, args.rollout_max_response_len),
        stop=args.rollout_stop,
        stop_token_ids=args.rollout_stop_token_ids,
        skip_special_tokens=args.rollout_skip_special_tokens,
        no_stop_trim=True,
        spaces_between_special_tokens=False,
    )
    if getattr(args, "eval_min_new_tokens", None) is not None:
        params["min_new_tokens"] = args.eval_min_new_tokens
    return params


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def eval_metrics(rewards: list[Any], truncated: list[bool], n: int) -> dict[str, float]:
    numeric = [float(r) for r in rewards if isinstance(r, (int, float, bool))]
    out: dict[str, float] = {}
    if numeric:
        out["mean_reward"] = sum(numeric) / len(numeric)
    if truncated:
        out["truncated_ratio"] = sum(truncated) / len(truncated)
    if n > 1 and numeric and len(numeric) == len(rewards) and len(rewards) % n == 0:
        correct = [sum(1 for r in numeric[i:i + n] if r > 0) for i in range(0, len(numeric), n)]
        k = 1
        while k <= n:
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(correct)
            k *= 2
        if (k // 2) != n:
            out[f"pass@{n}"] = sum(pass_at_k(n, c, n) for c in correct) / len(correct)
    return out


async def eval_rollout(args: Any, rollout_id: int) -> dict[str, dict[str, Any]]:
    """Evaluate every eval dataset concurrently; {name: {rewards, truncated, samples, metrics}}."""
    if getattr(args, "group_rm", False):
        raise ConfigError("group_rm is not supported in eval (as in slime): unset reward.groupRM or eval")
    datasets = [(d.name, d.path) for d in args.eval_datasets]
    if not datasets:
        raise ConfigError("eval needs eval_prompt_data (eval.datasets)")
    results = await asyncio.gather(*(_eval_one(args, rollout_id, name, path) for name, path in datasets))
    return dict(results)


async def _eval_one(args: Any, rollout_id: int, name: str, path: str) -> tuple[str, dict[str, Any]]:
    from rollout_runtime.dataset import Dataset

    state = GenerateState(args)
    key = (name, path, args.eval_input_key or args.input_key, args.eval_label_key or args.label_key)
    dataset = state.eval_datasets.get(key)
    if dataset is None:
        dataset = Dataset(path, state.tokenizer if args.hf_checkpoint else None, args.eval_max_prompt_len,
                          prompt_key=args.eval_input_key or args.input_key,
                          label_key=args.eval_label_key or args.label_key,
                          tool_key=args.eval_tool_key or args.tool_key, metadata_key=args.metadata_key,
                          apply_chat_template=args.apply_chat_template,
                          apply_chat_template_kwargs=args.apply_chat_template_kwargs)
        state.eval_datasets[key] = dataset
    params = _eval_sampling_params(args)
    n = args.n_samples_per_eval_prompt
    tasks = []
    index = 0
    for prompt in dataset.samples:
        for j in range(n):
            sample = copy.deepcopy(prompt)
            sample.index = index
            index += 1
            p = params.copy()
            if getattr(args, "sglang_enable_deterministic_inference", False):
                p["sampling_seed"] = args.rollout_seed + j
            tasks.append(asyncio.create_task(generate_and_rm(args, sample, p, evaluation=True)))
    try:
        outputs = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    samples = sorted(_flat(list(outputs)), key=lambda s: s.index)
    reward_key = getattr(args, "eval_reward_key", None) or getattr(args, "reward_key", None)
    rewards = [s.reward[reward_key] if reward_key and isinstance(s.reward, dict) else s.reward for s in samples]
    truncated = [s.status == Sample.Status.TRUNCATED for s in samples]
    return name, {"rewards": rewards, "truncated": truncated, "samples": samples,
                  "metrics": eval_metrics(rewards, truncated, n)}


def call_rollout_fn(fn: Callable[..., Any], args: Any, rollout_id: int, data_source: Any, evaluation: bool = False) -> Any:
    """Call a slime-style rollout function and unwrap RolloutFn*Output into list / dict."""
    out = fn(args, rollout_id, data_source, evaluation=evaluation)
    if isinstance(out, RolloutFnTrainOutput):
        return out.samples
    if isinstance(out, RolloutFnEvalOutput):
        return out.data
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list) and not evaluation:
        return out[0].samples if isinstance(out[0], RolloutFnTrainOutput) else out[0]
    return out
