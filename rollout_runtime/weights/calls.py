"""One HTTP call to a server's control endpoint, with a timeout of its own and bounded retries.

Why not `HttpClient`: a weight update needs a different timeout per step (a pause returns in
milliseconds, a load may take minutes) and must tell "never reached the server" apart from "sent,
then lost". A lost `/update_weights_from_disk` is not resent blindly (the first may still be
loading); the caller asks the server which version it serves instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp

from rollout_runtime.http_client import error_message

log = logging.getLogger(__name__)

#: Transient answers worth another try (the server or a proxy is overloaded or restarting).
RETRY_STATUSES = frozenset({502, 503, 504})
BACKOFF_S = 0.5
MAX_BACKOFF_S = 4.0


class CallFailed(Exception):
    """A call failed for good. `sent`: the request may have reached the server; `status`: its HTTP answer."""

    def __init__(self, message: str, *, status: int | None = None, sent: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.sent = sent


def new_session(connections: int = 0) -> aiohttp.ClientSession:
    """A session for control calls: no proxies from the environment, no connection cap by default."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), trust_env=False)


async def call(session: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any] | None = None, *,
               timeout: float, retries: int, idempotent: bool) -> Any:
    """`method url` with a JSON body; the parsed JSON answer (or None for an empty one).

    Retried up to `retries` times: a connection that was never made, always; a timeout, a dropped
    connection or a 502/503/504, only when `idempotent`. Any other 4xx/5xx raises at once with the
    server's own message.
    """
    attempt = 0
    while True:
        try:
            return await _once(session, method, url, body, timeout)
        except CallFailed as exc:
            transient = not exc.sent or (idempotent and (exc.status is None or exc.status in RETRY_STATUSES))
            if not transient or attempt >= retries:
                raise
            delay = min(BACKOFF_S * 2 ** attempt, MAX_BACKOFF_S)
            attempt += 1
            log.info("%s (try %d/%d), retrying in %.1fs", exc, attempt, retries, delay)
            await asyncio.sleep(delay)


async def _once(session: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any] | None,
                timeout: float) -> Any:
    data = json.dumps(body) if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else None
    try:
        async with session.request(method, url, data=data, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise CallFailed(f"{method} {url} -> HTTP {resp.status}: {error_message(raw)}", status=resp.status)
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                return raw.decode(errors="replace")
    except aiohttp.ClientConnectorError as exc:
        raise CallFailed(f"{method} {url}: cannot connect: {exc.os_error or exc}", sent=False) from exc
    except TimeoutError as exc:
        raise CallFailed(f"{method} {url}: no answer within {timeout:g}s") from exc
    except aiohttp.ClientError as exc:
        raise CallFailed(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
