"""Which servers a URL stands for, and which weight version a server serves.

A URL is either one SGLang server or an sglang-router: the router answers `GET /workers` with
`{"workers": [{"url": ...}, ...]}` (sglang-router 0.3.2), a server answers it with 404. Weight
updates go to the servers themselves: the router has no weight or pause routes of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from rollout_runtime.contract import parse_weight_version
from rollout_runtime.weights.calls import CallFailed, call
from rollout_runtime.weights.target import MODEL_INFO_PATH, WORKERS_PATH

INFO_TIMEOUT_S = 10.0


def listed_workers(listing: Any) -> list[str] | None:
    """The worker URLs of a router's `GET /workers` answer; None when it is not a router's answer."""
    if isinstance(listing, dict) and isinstance(listing.get("workers"), list):
        return [w["url"].rstrip("/") for w in listing["workers"] if isinstance(w, dict) and w.get("url")]
    if isinstance(listing, dict) and isinstance(listing.get("urls"), list):  # sglang_router <= 0.2.1 /list_workers
        return [str(u).rstrip("/") for u in listing["urls"]]
    return None


async def resolve_servers(session: aiohttp.ClientSession, urls: Sequence[str], *, retries: int = 2) -> list[str]:
    """Every server behind `urls` (routers expanded into their workers), each once, in order."""
    out: list[str] = []
    for url in urls:
        base = url.rstrip("/")
        try:
            listing = await call(session, "GET", base + WORKERS_PATH, timeout=INFO_TIMEOUT_S, retries=retries,
                                 idempotent=True)
        except CallFailed as exc:
            if exc.status != 404:
                raise
            listing = None
        workers = listed_workers(listing)
        if workers is not None and not workers:
            raise CallFailed(f"the router at {base} lists no workers")
        for server in workers if workers is not None else [base]:
            if server not in out:
                out.append(server)
    return out


async def served_version(session: aiohttp.ClientSession, url: str, *, retries: int = 2,
                         timeout: float = INFO_TIMEOUT_S) -> tuple[int | None, str | None]:
    """(policy version, raw `weight_version`) a server reports in `GET /model_info`."""
    info = await call(session, "GET", url.rstrip("/") + MODEL_INFO_PATH, timeout=timeout, retries=retries,
                      idempotent=True)
    raw = info.get("weight_version") if isinstance(info, dict) else None
    return parse_weight_version(raw), None if raw is None else str(raw)
