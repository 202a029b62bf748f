"""A small asyncio Kubernetes REST client for the operator's writes.

Why not the `kubernetes` package: it is synchronous (a thread per call), and it turns every
response into generated model objects. Reconciling a thousand RolloutJobs on two cores is
mostly JSON in and out, so this client keeps bodies as plain dicts and shares kopf's
credentials (`kopf.login_with_service_account` / `login_with_kubeconfig`) and one aiohttp
connection pool. kopf itself keeps doing the watching.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from rollout_runtime.contract import API_VERSION, JOB_KIND, JOB_PLURAL, POOL_KIND, POOL_PLURAL

log = logging.getLogger(__name__)

# apiVersion/kind -> (API prefix, plural). Only the kinds the operator touches.
_PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    (API_VERSION, JOB_KIND): JOB_PLURAL,
    (API_VERSION, POOL_KIND): POOL_PLURAL,
}


class ApiError(Exception):
    """A non-2xx answer from the API server; raised as one of the subclasses below when one fits.

    Call sites catch the case they handle (`except NotFound`), never compare status codes.
    """

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        self.method = method
        self.path = path
        message = body.get("message") if isinstance(body, dict) else str(body)
        self.reason = body.get("reason") if isinstance(body, dict) else None
        super().__init__(f"{method} {path}: {status} {self.reason or ''}: {message}")

    @property
    def message(self) -> str:
        return self.body.get("message", "") if isinstance(self.body, dict) else str(self.body)

    def _causes(self) -> list[dict[str, Any]]:
        details = self.body.get("details") if isinstance(self.body, dict) else None
        causes = (details.get("causes") or []) if isinstance(details, dict) else []
        return [c for c in causes if isinstance(c, dict)]

    @property
    def causes(self) -> tuple[tuple[str, str], ...]:
        """(field, message) of each `details.causes[]` entry (a 422 names the invalid fields there)."""
        return tuple((str(c.get("field") or ""), str(c.get("message") or c.get("reason") or ""))
                     for c in self._causes())

    @property
    def namespace_terminating(self) -> bool:
        """A 403 because the namespace is being deleted: about the namespace, not the object written."""
        return any(c.get("reason") == "NamespaceTerminating" for c in self._causes())


class BadRequest(ApiError):
    """400: the request is malformed (e.g. a field of the wrong type)."""


class Unauthorized(ApiError):
    """401: the credentials were not accepted."""


class Forbidden(ApiError):
    """403: RBAC, an admission policy or a ResourceQuota refused the request."""


class NotFound(ApiError):
    """404: no such object (or no such resource type)."""


class Conflict(ApiError):
    """409: the object changed since the resourceVersion the request was based on."""


class AlreadyExists(Conflict):
    """409 on create: an object with this name exists already."""


class Gone(ApiError):
    """410: the requested resourceVersion is too old."""


class Invalid(ApiError):
    """422 (UnprocessableEntity): the object fails validation."""


class TooManyRequests(ApiError):
    """429: throttled (after the client's own retries)."""


class ServerError(ApiError):
    """5xx (after the client's own retries)."""


#: The API server refuses a child as written (invalid fields, a ResourceQuota, an admission policy):
#: the same request would be refused again, so reconcilers report it in status instead of retrying.
CHILD_REFUSED: tuple[type[ApiError], ...] = (BadRequest, Invalid, Forbidden)

_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                         409: Conflict, 410: Gone, 422: Invalid, 429: TooManyRequests}


def api_error(status: int, body: Any, method: str, path: str) -> ApiError:
    """The ApiError subclass for an answer (a 409 to a create, or with reason AlreadyExists, is AlreadyExists)."""
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    if cls is Conflict and (method == "POST" or (isinstance(body, dict) and body.get("reason") == "AlreadyExists")):
        cls = AlreadyExists
    return cls(status, body, method, path)


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    """REST path of a collection or object."""
    plural = _PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = prefix + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
    if name:
        path += f"/{quote(name)}"
    if subresource:
        path += f"/{subresource}"
    return path


def manifest_path(manifest: dict[str, Any], with_name: bool = True) -> str:
    meta = manifest["metadata"]
    return resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"),
                         meta["name"] if with_name else None)


@dataclass
class RequestStats:
    """Per verb/code counters, read by the metrics collector."""

    counts: dict[tuple[str, int], int]

    def add(self, verb: str, code: int) -> None:
        self.counts[(verb, code)] = self.counts.get((verb, code), 0) + 1


Login = Callable[[], kopf.ConnectionInfo | None]


def default_login() -> kopf.ConnectionInfo:
    """In-cluster ServiceAccount first, then KUBECONFIG / ~/.kube/config (kopf's own parsers)."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no ServiceAccount token and no kubeconfig: cannot reach the API server")
    return info


class KubeClient:
    """JSON-over-HTTPS to the API server, with retries on throttling and transient errors."""

    def __init__(self, login: Login = default_login, *, max_connections: int = 64, timeout: float = 60.0) -> None:
        self._login = login
        self._max_connections = max_connections
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._info: kopf.ConnectionInfo | None = None
        self._lock = asyncio.Lock()
        self.stats = RequestStats({})

    async def _ensure(self, relogin: bool = False) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is not None and not relogin:
                return self._session
            info = self._login()
            if info is None:
                raise kopf.LoginError("login returned no credentials")
            if self._session is not None:
                await self._session.close()
            context: ssl.SSLContext | bool
            if info.server.startswith("https"):
                context = info.as_ssl_context()
                if info.insecure:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
            else:
                context = False
            headers = {"Accept": "application/json", "User-Agent": "kuberollout-operator"}
            headers.update(info.as_http_headers())
            self._info = info
            self._session = aiohttp.ClientSession(
                base_url=info.server.rstrip("/"),
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=context, limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        """One API call; retries 429/5xx/connection errors a few times, re-logs in once on 401."""
        payload = json.dumps(body) if body is not None else None
        delays = [0.2, 0.5, 1.0, 2.0, 4.0]
        relogged = False
        for attempt in range(len(delays) + 1):
            session = await self._ensure()
            try:
                async with session.request(method, path, data=payload, params=params,
                                           headers={"Content-Type": content_type}) as resp:
                    text = await resp.text()
                    self.stats.add(method, resp.status)
                    data: Any = json.loads(text) if text and text.lstrip().startswith(("{", "[")) else text
                    if resp.status < 400:
                        return data
                    if resp.status == 401 and not relogged:
                        relogged = True
                        await self._ensure(relogin=True)
                        continue
                    if resp.status in (429, 500, 502, 503, 504) and attempt < len(delays):
                        retry_after = resp.headers.get("Retry-After")
                        await asyncio.sleep(max(delays[attempt], float(retry_after) if retry_after else 0.0))
                        continue
                    raise api_error(resp.status, data, method, path)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                self.stats.add(method, 0)
                if attempt >= len(delays):
                    raise
                log.debug("%s %s: %s; retrying", method, path, exc)
                await asyncio.sleep(delays[attempt])
        raise AssertionError("unreachable")

    # -- verbs ------------------------------------------------------------------------------

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def exists(self, path: str) -> bool:
        """Whether the object at `path` is there now (read from the API server, not a cache)."""
        try:
            await self.request("GET", path)
        except NotFound:
            return False
        return True

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", manifest_path(manifest, with_name=False), manifest)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    async def strategic_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A strategic merge patch (lists such as pod conditions merge by key instead of being replaced)."""
        return await self.request("PATCH", path, patch, content_type="application/strategic-merge-patch+json")

    async def delete(self, path: str, propagation: str = "Background") -> Any:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        try:
            return await self.request("DELETE", path, body)
        except NotFound:
            return None
