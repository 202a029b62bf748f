"""Where synchronous graders run: worker threads (default) or Ray tasks.

A symbolic equivalence check can take seconds; run inline it would stall every request
on the event loop. Threads keep the loop responsive; Ray spreads CPU-heavy graders over
a cluster (`reward_executor: ray`, a local Ray instance unless RAY_ADDRESS is set).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable

from rollout_runtime.config import option


async def run_grader(args: Any, fn: Callable[..., Any], *fn_args: Any) -> Any:
    if option(args, "reward_executor") == "ray":
        remote = _ray_remote(fn)
        return await remote.remote(*fn_args)
    return await asyncio.to_thread(fn, *fn_args)


@functools.cache
def _ray_remote(fn: Callable[..., Any]) -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("reward_executor: ray needs Ray: pip install 'kuberollout[ray]'") from None
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)
    return ray.remote(fn)
