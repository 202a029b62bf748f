"""Where the runtime learns the served weight version (bounded staleness reads it; nothing here writes).

- In a cluster, from the SGLangPool's `status.weightVersion`: the version every Ready server serves,
  kept by the operator (a server not yet on it is held out of the router by its readiness gate).
  The runtime's ServiceAccount may `get` that one pool and nothing else. While the pool's servers
  differ (an update rolling in) the field is unset: the pool then serves at least what it served
  before (spec.weights.version never decreases), so the last reading stands.
- Otherwise (a laptop, an external endpoint), from the servers themselves: the lowest
  `weight_version` in `GET /model_info` of every server behind the URL (a router's `GET /workers`
  lists them). SGLang's initial "default" is version 0. A server that does not answer is skipped
  (it serves nothing); one that serves a version that is not ours makes the reading unknown.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedReading:
    """One reading: the served policy version (None: unknown), and what it was read from, for messages."""

    version: int | None
    detail: str


class VersionSource(Protocol):
    #: Seconds between readings while waiting, unless `weight_poll_interval` says otherwise.
    poll_interval: float

    async def read(self) -> ServedReading:
        """The served version now."""
        ...

    async def aclose(self) -> None:
        ...


class EngineVersions:
    """The lowest `weight_version` of the servers behind a router or engine URL."""

    poll_interval = 0.05  # a few small GETs on the engines: cheap, and a synchronous loop waits on every step

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: Any = None

    async def read(self) -> ServedReading:
        from rollout_runtime.weights.calls import CallFailed, new_session
        from rollout_runtime.weights.servers import resolve_servers

        if self._session is None or self._session.closed:
            self._session = new_session()
        try:
            servers = await resolve_servers(self._session, [self.url], retries=1)
        except CallFailed as exc:
            return ServedReading(None, f"no server list from {self.url}: {exc}")
        answers = await asyncio.gather(*(self._one(s) for s in servers))
        seen = [(s, v, raw) for s, (v, raw) in zip(servers, answers) if raw is not None]
        detail = ", ".join(f"{s} serves {raw}" for s, _, raw in seen) or f"no server behind {self.url} answered"
        if not seen or any(v is None for _, v, _ in seen):
            return ServedReading(None, detail)
        return ServedReading(min(v for _, v, _ in seen if v is not None), detail)

    async def _one(self, server: str) -> tuple[int | None, str | None]:
        from rollout_runtime.weights.calls import CallFailed
        from rollout_runtime.weights.servers import served_version

        try:
            version, raw = await served_version(self._session, server, retries=0, timeout=self.timeout)
        except CallFailed as exc:
            log.debug("no weight version from %s: %s", server, exc)
            return None, None
        return version, raw if raw is not None else "no weight_version"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class PoolVersion:
    """An SGLangPool's `status.weightVersion`, read with the runtime's own credentials (get on that pool)."""

    poll_interval = 0.5  # a GET on the API server per reading: gentler

    def __init__(self, name: str, namespace: str) -> None:
        self.name = name
        self.namespace = namespace
        self._last: int | None = None

    async def read(self) -> ServedReading:
        from rollout_runtime import kube

        pool = await asyncio.to_thread(kube.read_sglangpool, self.name, self.namespace)
        status = pool.get("status") or {}
        version = status.get("weightVersion")
        where = f"SGLangPool {self.namespace}/{self.name}"
        if isinstance(version, int):
            self._last = version
            return ServedReading(version, f"{where} status.weightVersion {version}")
        if self._last is not None:
            return ServedReading(self._last, f"{where}: servers on different versions (an update is rolling in); "
                                             f"at least {self._last}")
        return ServedReading(None, f"{where} reports no status.weightVersion yet")

    async def aclose(self) -> None:
        return None


def version_source(args: Any) -> VersionSource:
    """The pool's status when the runtime runs for a pool (`sglang_pool`), else the servers behind the URL."""
    pool = getattr(args, "sglang_pool", None)
    if pool:
        from rollout_runtime import kube

        return PoolVersion(pool, kube.current_namespace(getattr(args, "state_namespace", None)))
    return EngineVersions(args.router_url)
