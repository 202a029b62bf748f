"""A small asyncio Kubernetes client for the process kubelet: JSON requests and list+watch.

The kubelet runs in its own event loop next to the processes it supervises, so its API calls must
not block; the `kubernetes` package is synchronous and kubernetes_asyncio is not a dependency of
this project. What the kubelet needs is small: GET/POST/PATCH/DELETE with JSON and a reflector
(list, then watch from the list's resourceVersion, re-list on 410 Gone or a dropped stream), which
is what client-go's informers do too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

log = logging.getLogger(__name__)

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class ApiError(RuntimeError):
    """A non-2xx answer; keeps the status so callers can tell 404/409/410 apart."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)[:500]
        super().__init__(f"{method} {path} -> {status}: {message}")
        self.status = status
        self.body = body


def _kubeconfig_entry(path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(server, cluster entry, user entry) of a kubeconfig's current context."""
    doc = yaml.safe_load(path.read_text()) or {}
    ctx_name = doc.get("current-context")
    ctx = next(c["context"] for c in doc.get("contexts", []) if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in doc.get("clusters", []) if c["name"] == ctx["cluster"])
    user = next((u["user"] for u in doc.get("users", []) if u["name"] == ctx.get("user")), {})
    return cluster["server"], cluster, user


def _resolve(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


class KubeAPI:
    """JSON over HTTPS to one apiserver, authenticated from a kubeconfig (cert or token)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.server, cluster, user = _kubeconfig_entry(kubeconfig)
        base = kubeconfig.parent
        self.ca_file = _resolve(base, cluster["certificate-authority"]) if "certificate-authority" in cluster else None
        ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if "client-certificate" in user:
            ctx.load_cert_chain(_resolve(base, user["client-certificate"]), _resolve(base, user["client-key"]))
        self._headers = {"Authorization": f"Bearer {user['token']}"} if "token" in user else {}
        self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env=False: a developer's https_proxy must never capture loopback API calls.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32), headers=self._headers, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None,
                      content_type: str = "application/json", timeout: float = 30.0) -> Any:
        """One call; returns the parsed JSON body, raises ApiError on a non-2xx status."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, self.server + path, data=data, params=_params(params),
                                        headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            try:
                parsed: Any = json.loads(raw) if raw else {}
            except ValueError:
                parsed = raw.decode(errors="replace")
            if resp.status >= 300:
                raise ApiError(method, path, resp.status, parsed)
            return parsed

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any, content_type: str = SMP) -> Any:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.request("DELETE", path, body=body)

    async def watch(self, path: str, params: Mapping[str, Any]) -> Any:
        """Yield watch events ({"type", "object"}) until the server ends the stream."""
        query = {**params, "watch": "1", "allowWatchBookmarks": "true"}
        async with self.session.get(self.server + path, params=_params(query),
                                    timeout=aiohttp.ClientTimeout(total=None, sock_read=600)) as resp:
            if resp.status >= 300:
                raise ApiError("WATCH", path, resp.status, (await resp.read()).decode(errors="replace"))
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)


def _params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None}


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta["name"]


Handler = Callable[[str, dict[str, Any]], None]


class Reflector:
    """List + watch one collection and report ADDED/MODIFIED/DELETED to a handler, forever.

    After a re-list (start, 410 Gone, a dropped stream) the handler sees the difference to what it
    saw before: objects that vanished meanwhile are reported DELETED, so no deletion is missed.
    """

    def __init__(self, api: KubeAPI, path: str, handler: Handler, params: Mapping[str, Any] | None = None,
                 name: str = "") -> None:
        self.api = api
        self.path = path
        self.params = dict(params or {})
        self.handler = handler
        self.name = name or path
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                rv = await self._relist()
                self.synced.set()
                backoff = 0.2
                await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status != 410:
                    log.warning("%s: %s", self.name, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                log.info("%s: watch interrupted (%r); re-listing", self.name, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _relist(self) -> str:
        listing = await self.api.get(self.path, **self.params)
        fresh = {object_key(o): o for o in listing.get("items") or []}
        for key in list(self.store):
            if key not in fresh:
                self._emit("DELETED", self.store.pop(key))
        for key, obj in fresh.items():
            old = self.store.get(key)
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self.store[key] = obj
                self._emit("ADDED" if old is None else "MODIFIED", obj)
        return listing["metadata"]["resourceVersion"]

    async def _watch(self, rv: str) -> None:
        async for event in self.api.watch(self.path, {**self.params, "resourceVersion": rv, "timeoutSeconds": 300}):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise ApiError("WATCH", self.path, int(obj.get("code") or 500), obj)
            if kind == "BOOKMARK":
                continue
            key = object_key(obj)
            if kind == "DELETED":
                self.store.pop(key, None)
            else:
                self.store[key] = obj
            self._emit(kind, obj)

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            self.handler(kind, obj)
        except Exception:  # noqa: BLE001 - one bad object must not stop the informer
            log.exception("%s: handler failed on %s %s", self.name, kind, object_key(obj))
