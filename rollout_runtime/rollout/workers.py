"""The servers behind the rollout's URL.

The URL is a router or one engine. sglang-router 0.3.2 proxies `/generate` but serves no
`/abort_request`, and answers `/v1/models` and `/get_server_info` itself (without the context
length), so whatever must reach the servers goes to each worker its `GET /workers` lists.
"""

from __future__ import annotations

import logging

from rollout_runtime.http_client import EngineError, EngineRequestError, HttpClient
from rollout_runtime.weights.servers import listed_workers

log = logging.getLogger(__name__)


async def worker_urls(client: HttpClient, base: str, *, quiet: bool = False) -> list[str]:
    """Workers behind the router (`GET /workers`), or the URL itself when it is a single engine.

    `quiet`: a failure to list is logged at debug level (for callers whose own next request to
    `base` reports an engine that is gone, so the user reads one warning, not two).
    """
    try:
        resp = await client.get(f"{base}/workers")
    except EngineRequestError:  # 404: not a router
        return [base]
    except EngineError as exc:
        (log.debug if quiet else log.warning)("could not list workers at %s: %s", base, exc)
        return [base]
    workers = listed_workers(resp)
    return [base] if workers is None else workers

