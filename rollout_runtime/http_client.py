"""The pooled HTTP client that talks to SGLang engines and the router.

aiohttp, not httpx: at 512 requests in flight httpx's pool bookkeeping was measured at
~10 ms CPU per request here, aiohttp's connector at a small fraction of that (see
benchmarks/runtime_overhead.py). One session per event loop, sized to the rollout's
concurrency, with keep-alive.

Error policy (better than slime's retry-everything-60-times): connection errors and 5xx
are retried with exponential backoff; 4xx is the caller's fault and is raised at once
with the engine's own message, whichever of SGLang's two error shapes it came in.

A retry never reuses a request id: SGLang answers 400 "Duplicate request ID detected" to a
`rid` it still tracks, and a request we gave up on may still be running there (SGLang notices a
client that went away only every SGLANG_REQUEST_STATE_WAIT_TIMEOUT = 4 s, then aborts it). A
JSON body carrying a `rid` is resent under a new one (`retry_rid`), or the caller supplies the
next attempt's body itself (`before_retry`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)

try:  # orjson is faster; fall back to the standard library
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    _loads = json.loads


class EngineError(RuntimeError):
    """An engine or router call failed for good."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class EngineRequestError(EngineError):
    """HTTP 4xx: the request is wrong (e.g. prompt too long, unknown sampling param); not retried."""


def error_message(body: bytes | str) -> str:
    """The message from SGLang's error bodies: {"error": str}, {"error": {"message"}}, or {"message"}."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:2000]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return text[:2000]


def origin(url: str) -> str:
    """scheme://host:port of a URL (what one engine or router is)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


#: The body of the next attempt, given the body and the failure of the last one.
BeforeRetry = Callable[[Any, EngineError], Awaitable[Any]]


def retry_rid(rid: str) -> str:
    """A fresh request id for a retry of `rid`. Neither is a prefix of the other: SGLang's
    /abort_request aborts every request whose rid starts with the one given."""
    return f"retry-{uuid.uuid4().hex[:12]}-{rid}"


async def _fresh_rid(payload: Any, failure: EngineError) -> Any:
    """Default `before_retry`: the same body under a new `rid`, when it has one."""
    if isinstance(payload, dict) and isinstance(payload.get("rid"), str):
        return {**payload, "rid": retry_rid(payload["rid"])}
    return payload


class HttpClient:
    """A keep-alive aiohttp session with retry rules for engine calls."""

    def __init__(self, max_connections: int, *, max_retries: int = 5, backoff: float = 0.5,
                 timeout: float | None = None) -> None:
        self.max_connections = max_connections
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._failing: set[str] = set()  # origins whose last request failed (warned about once)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, ttl_dns_cache=300,
                                             enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, trust_env=False,
                                                  headers={"Content-Type": "application/json"})
        return self._session

    def _log_retry(self, url: str, failure: Exception, attempt: int, retries: int, delay: float) -> None:
        """One warning per engine while it keeps failing, not one per request and retry.

        With hundreds of requests in flight, an engine that goes away used to print a warning for
        every request's every retry; the rest are at debug level until the engine answers again.
        """
        engine = origin(url)
        if engine in self._failing:
            log.debug("%s (attempt %d/%d), retrying in %.1fs", failure, attempt, retries, delay)
            return
        self._failing.add(engine)
        log.warning("%s; retrying (up to %d times per request; further failures of %s are logged at debug level "
                    "until it answers)", failure, retries, engine)

    def _answered(self, url: str) -> None:
        if self._failing:
            engine = origin(url)
            if engine in self._failing:
                self._failing.discard(engine)
                log.info("%s answers again", engine)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def post(self, url: str, payload: Any, *, headers: dict[str, str] | None = None,
                   max_retries: int | None = None, before_retry: BeforeRetry | None = None) -> Any:
        """POST JSON; a retry sends what `before_retry(last_payload, failure)` returns (default: a new `rid`)."""
        return await self._request("POST", url, payload, headers, self.max_retries if max_retries is None else max_retries,
                                   before_retry or _fresh_rid)

    async def get(self, url: str, *, max_retries: int = 0) -> Any:
        return await self._request("GET", url, None, None, max_retries, _fresh_rid)

    async def _request(self, method: str, url: str, payload: Any, headers: dict[str, str] | None, retries: int,
                       before_retry: BeforeRetry) -> Any:
        attempt = 0
        hdrs = headers or None  # Content-Type is a session default; no per-request header work
        while True:
            data = _dumps(payload) if payload is not None else None
            try:
                async with self.session.request(method, url, data=data, headers=hdrs) as resp:
                    body = await resp.read()
                    if resp.status < 400:
                        self._answered(url)
                        if not body:
                            return None
                        try:
                            return _loads(body)
                        except ValueError:
                            return body.decode(errors="replace")
                    message = error_message(body)
                    if resp.status < 500:
                        raise EngineRequestError(f"{method} {url} -> HTTP {resp.status}: {message}", status=resp.status, url=url)
                    failure: Exception = EngineError(f"{method} {url} -> HTTP {resp.status}: {message}", status=resp.status, url=url)
            except EngineRequestError:
                raise
            except asyncio.TimeoutError:
                failure = EngineError(f"{method} {url} timed out after {self.timeout.total}s", url=url)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                failure = EngineError(f"{method} {url} failed: {type(exc).__name__}: {exc}", url=url)
            if attempt >= retries:
                raise failure
            delay = min(self.backoff * (2 ** attempt), 30.0)
            attempt += 1
            self._log_retry(url, failure, attempt, retries, delay)
            if payload is not None:
                payload = await before_retry(payload, failure)
            await asyncio.sleep(delay)


# ------------------------------------------------------------------ slime's module-level http_utils API
# slime-written generate functions call `await post(url, payload)` from `slime.utils.http_utils`. They get the
# rollout's own pooled client for the running loop (registered by GenerateState), so their requests share its
# connection pool and retry rules; without one, a client sized by `init_http_client(args)` is made.

_LOOP_CLIENTS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HttpClient]" = weakref.WeakKeyDictionary()
_DEFAULTS: dict[str, Any] = {"max_connections": 512, "max_retries": 5, "backoff": 0.5, "timeout": None}


def get_rollout_num_engines(args: Any) -> int:
    """Engines behind the router: rollout_num_engines, else rollout_num_gpus // rollout_num_gpus_per_engine.

    slime returns 0 when no GPU count is given (it launches the engines itself); the runtime talks to a
    router whose pool it did not size, so it counts one engine then.
    """
    if getattr(args, "rollout_num_engines", None):
        return int(args.rollout_num_engines)
    gpus = getattr(args, "rollout_num_gpus", None) or 0
    if gpus <= 0:
        return 1
    return max(1, gpus // (getattr(args, "rollout_num_gpus_per_engine", None) or 1))


def init_http_client(args: Any) -> None:
    """Size the module-level client as slime does: sglang_server_concurrency x engines connections."""
    _DEFAULTS.update(max_connections=args.sglang_server_concurrency * get_rollout_num_engines(args),
                     max_retries=getattr(args, "http_max_retries", 5), backoff=getattr(args, "http_retry_backoff", 0.5),
                     timeout=getattr(args, "http_request_timeout", None))


def register_loop_client(client: HttpClient) -> None:
    """Make `client` the one `post`/`get` use on the running loop (the rollout's pooled client)."""
    _LOOP_CLIENTS[asyncio.get_running_loop()] = client


def loop_client() -> HttpClient:
    loop = asyncio.get_running_loop()
    client = _LOOP_CLIENTS.get(loop)
    if client is None or (client._session is not None and client._session.closed):
        d = _DEFAULTS
        client = HttpClient(d["max_connections"], max_retries=d["max_retries"], backoff=d["backoff"], timeout=d["timeout"])
        _LOOP_CLIENTS[loop] = client
    return client


async def post(url: str, payload: Any = None, max_retries: int | None = None,
               headers: dict[str, str] | None = None) -> Any:
    """POST JSON, return the parsed JSON (or text). Connection errors and 5xx are retried (`max_retries`
    times, default http_max_retries) with backoff, a body with a `rid` under a fresh one each time; a
    4xx is raised at once with the server's message (slime retries every error 60 times, 1 s apart,
    with the same rid, which SGLang refuses while the first is in flight)."""
    return await loop_client().post(url, payload if payload is not None else {}, headers=headers,
                                    max_retries=max_retries)


async def get(url: str) -> Any:
    """GET, return the parsed JSON; no retry (as slime's)."""
    return await loop_client().get(url)
