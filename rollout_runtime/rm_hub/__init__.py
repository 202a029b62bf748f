"""Reward hub: slime's `async_rm` / `batched_async_rm`, the built-in reward types and remote RM.

Resolution order per sample, as in slime: `sample.custom_rm_path`, then
`args.custom_rm_path`, then the built-in type from `sample.metadata["rm_type"]` or
`args.rm_type` (a `boxed_` prefix first reduces the response to its last boxed answer).

Better than slime: rule-based graders run off the event loop (a slow symbolic check
never stalls generation), optionally on Ray (`reward_executor: ray`); the remote RM has
a per-call timeout and bounded retries, does not retry 4xx, and fails with an error
that names the URL and the last response instead of re-raising after ten silent tries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Callable

from rollout_runtime.config import option
from rollout_runtime.http_client import EngineError, EngineRequestError, HttpClient
from rollout_runtime.misc import load_function, maybe_await
from rollout_runtime.rm_hub.executor import run_grader
from rollout_runtime.rm_hub.f1 import f1_score
from rollout_runtime.rm_hub.gpqa import compute_gpqa_reward
from rollout_runtime.rm_hub.deepscaler import get_deepscaler_rule_based_reward
from rollout_runtime.rm_hub.math_dapo_utils import compute_score as compute_score_dapo
from rollout_runtime.rm_hub.math_utils import extract_answer as extract_boxed_answer
from rollout_runtime.rm_hub.math_utils import grade_answer_verl
from rollout_runtime.types import Sample

log = logging.getLogger(__name__)

__all__ = [
    "async_rm", "batched_async_rm", "remote_rm", "RewardError", "BUILTIN_RM_TYPES",
    # slime's rm_hub re-exports its graders under these names
    "get_deepscaler_rule_based_reward", "f1_score", "compute_gpqa_reward", "compute_score_dapo",
    "extract_boxed_answer", "grade_answer_verl",
]


class RewardError(RuntimeError):
    """A reward could not be computed; the message says which sample, which RM and why."""


def _math(response: str, label: Any, metadata: dict[str, Any]) -> int:
    return 1 if grade_answer_verl(response, label) else 0


def _deepscaler(response: str, label: Any, metadata: dict[str, Any]) -> int:
    return get_deepscaler_rule_based_reward(response, label)


def _dapo(response: str, label: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    return compute_score_dapo(response, label)


def _f1(response: str, label: Any, metadata: dict[str, Any]) -> float:
    return f1_score(response, label)[0]


def _gpqa(response: str, label: Any, metadata: dict[str, Any]) -> float:
    return compute_gpqa_reward(response, label, metadata=metadata)


# Synchronous graders, safe to run in a worker thread or a Ray task.
GRADERS: dict[str, Callable[[str, Any, dict[str, Any]], Any]] = {
    "math": _math,
    "deepscaler": _deepscaler,
    "dapo": _dapo,
    "f1": _f1,
    "gpqa": _gpqa,
}
BUILTIN_RM_TYPES = tuple(GRADERS) + ("remote_rm", "random")


def split_rm_type(rm_type: str) -> tuple[str, bool]:
    """('math', True) for 'boxed_math'."""
    rm_type = rm_type.strip()
    if rm_type.startswith("boxed_"):
        return rm_type[len("boxed_"):], True
    return rm_type, False


async def async_rm(args: Any, sample: Sample, **kwargs: Any) -> Any:
    """The reward of one sample."""
    path = sample.custom_rm_path or args.custom_rm_path
    if path:
        return await maybe_await(load_function(path)(args, sample, **kwargs))
    rm_type = ((sample.metadata or {}).get("rm_type") or args.rm_type or "").strip()
    if not rm_type:
        raise RewardError("no reward configured: set rm_type (reward.type) or custom_rm_path (reward.customPath)")
    base, boxed = split_rm_type(rm_type)
    response = sample.response
    if boxed:
        response = extract_boxed_answer(response) or ""
    if base == "remote_rm":
        return await remote_rm(args, sample)
    if base == "random":
        return random.randint(0, 1)
    grader = GRADERS.get(base)
    if grader is None:
        raise RewardError(f"rm_type {rm_type!r} is not implemented; choose one of {', '.join(BUILTIN_RM_TYPES)} "
                          f"(optionally boxed_) or set custom_rm_path")
    return await run_grader(args, grader, response, sample.label, sample.metadata or {})


async def batched_async_rm(args: Any, samples: list[Sample], **kwargs: Any) -> list[Any]:
    """Rewards of several samples; a custom RM is called once with the whole list (slime's batch mode)."""
    path = args.custom_rm_path
    if path:
        rewards = await maybe_await(load_function(path)(args, samples, **kwargs))
        if not isinstance(rewards, (list, tuple)) or len(rewards) != len(samples):
            raise RewardError(f"custom_rm_path {path} in batch mode must return one reward per sample "
                              f"({len(samples)}), got {type(rewards).__name__}")
        return list(rewards)
    return list(await asyncio.gather(*(async_rm(args, s, **kwargs) for s in samples)))


# ------------------------------------------------------------------------ remote RM

_CLIENTS: dict[tuple[int, float], HttpClient] = {}


def _client(args: Any) -> HttpClient:
    """One pooled client per event loop and timeout (asyncio sessions are loop-bound)."""
    timeout = float(option(args, "rm_timeout"))
    key = (id(asyncio.get_running_loop()), timeout)
    client = _CLIENTS.get(key)
    if client is None or client.session.closed:
        client = HttpClient(64, max_retries=0, timeout=timeout)
        _CLIENTS[key] = client
    return client


async def close_clients() -> None:
    """Close the remote-RM clients of the running loop (at the end of a run)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _CLIENTS if k[0] == loop_id]:
        await _CLIENTS.pop(key).close()


async def remote_rm(args: Any, sample: Sample) -> Any:
    """POST {prompt, response, label} to args.rm_url; the JSON body is the reward."""
    url = args.rm_url
    if not url:
        raise RewardError("rm_type remote_rm needs rm_url (reward.url)")
    payload = {"prompt": sample.prompt, "response": sample.response, "label": sample.label}
    retries = int(option(args, "rm_max_retries"))
    timeout = float(option(args, "rm_timeout"))
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return await asyncio.wait_for(_client(args).post(url, payload, max_retries=0), timeout)
        except EngineRequestError as exc:
            raise RewardError(f"remote reward model rejected sample {sample.index}: {exc}") from None
        except (EngineError, asyncio.TimeoutError) as exc:
            last = exc
            if attempt < retries:
                delay = min(0.5 * 2 ** attempt, 10.0) * (1 + random.random() * 0.25)
                log.warning("remote RM %s failed (%s); retry %d/%d in %.1fs", url, exc or "timeout", attempt + 1, retries, delay)
                await asyncio.sleep(delay)
    reason = "timed out" if isinstance(last, asyncio.TimeoutError) or "timed out" in str(last) else str(last)
    raise RewardError(f"remote reward model {url} gave no reward for sample {sample.index} after {retries + 1} attempts "
                      f"(timeout {timeout}s each): {reason}")
