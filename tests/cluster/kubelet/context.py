"""What every pod runner shares: the API client, the node's identity, paths, events, credentials."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.cluster.kubelet.api import ApiError, KubeAPI
from tests.cluster.kubelet.netblock import NetBlock
from tests.cluster.kubelet.status import now_rfc3339

log = logging.getLogger(__name__)

SITECUSTOMIZE_DIR = Path(__file__).resolve().with_name("childpath")
TOKEN_SECONDS = 3607  # what the kubelet asks for a projected ServiceAccount token
# Variables of the kubelet's own environment that a container must not inherit: the admin
# kubeconfig, a host's in-cluster settings, proxies (a pod does not get the developer's proxy),
# and pytest's bookkeeping.
DROPPED_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "http_proxy", "https_proxy",
               "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", "PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER")


@dataclass
class KubeletContext:
    api: KubeAPI
    node_name: str
    net: NetBlock
    workdir: Path
    dns_file: Path
    capacity: Mapping[str, str]
    python: str = sys.executable
    scripts_dir: str = os.path.dirname(sys.executable)
    crash_backoff: float = 10.0
    probe_session: aiohttp.ClientSession | None = None
    _recent_events: dict[tuple[str, ...], float] = field(default_factory=dict)

    @property
    def node_ip(self) -> str:
        return self.net.node_ip

    def session(self) -> aiohttp.ClientSession:
        if self.probe_session is None:
            # No pooling: each probe is a fresh connection, as the kubelet's prober does.
            self.probe_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                                       trust_env=False)
        return self.probe_session

    def pod_dir(self, pod: Mapping[str, Any]) -> Path:
        meta = pod["metadata"]
        return self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"

    def base_env(self, namespace: str, pod_name: str) -> dict[str, str]:
        """The "image" environment a container starts from, before the pod's own env."""
        env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
        env["PATH"] = os.pathsep.join([self.scripts_dir, env.get("PATH", "/usr/bin:/bin")])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITECUSTOMIZE_DIR), env.get("PYTHONPATH", "")) if p)
        env["HOSTNAME"] = pod_name
        env["KUBEROLLOUT_PROCESS_DNS"] = str(self.dns_file)
        env["KUBEROLLOUT_PROCESS_NAMESPACE"] = namespace
        return env

    # -- events -------------------------------------------------------------------------------

    def event(self, pod: Mapping[str, Any], kind: str, reason: str, message: str, container: str = "") -> None:
        """Record a core/v1 Event for the pod (fire and forget; repeats within 30 s are dropped)."""
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"], reason, message)
        now = time.monotonic()
        if now - self._recent_events.get(key, -1e9) < 30:
            return
        if len(self._recent_events) > 1000:
            self._recent_events = {k: t for k, t in self._recent_events.items() if now - t < 30}
        self._recent_events[key] = now
        log.info("event %s/%s %s %s: %s", meta["namespace"], meta["name"], kind, reason, message)
        ts = now_rfc3339()
        involved = {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"], "name": meta["name"],
                    "uid": meta.get("uid", "")}
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        body = {"metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": involved, "reason": reason, "message": message[:1024], "type": kind,
                "source": {"component": "kubelet", "host": self.node_name}, "firstTimestamp": ts,
                "lastTimestamp": ts, "count": 1, "reportingComponent": "kubelet",
                "reportingInstance": self.node_name}
        asyncio.get_running_loop().create_task(self._post_event(meta["namespace"], body))

    async def _post_event(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            await self.api.post(f"/api/v1/namespaces/{namespace}/events", body)
        except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.debug("event not recorded: %s", exc)

    # -- ServiceAccount credentials -------------------------------------------------------------

    async def write_credentials(self, pod: Mapping[str, Any], directory: Path) -> float:
        """Write the pod's projected ServiceAccount token, CA and namespace (what the kubelet mounts
        at /var/run/secrets/kubernetes.io/serviceaccount) and a kubeconfig that uses them.

        The token is a TokenRequest bound to this pod object, so it stops working when the pod is
        deleted, exactly like a real projected token. Returns the token's lifetime in seconds.
        """
        meta, spec = pod["metadata"], pod["spec"]
        sa = spec.get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": TOKEN_SECONDS,
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                                            "uid": meta["uid"]}}}
        resp = await self.api.post(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body)
        sa_dir = directory / "serviceaccount"
        sa_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(sa_dir / "token", resp["status"]["token"])
        _atomic_write(sa_dir / "namespace", meta["namespace"])
        if self.api.ca_file:
            _atomic_write(sa_dir / "ca.crt", Path(self.api.ca_file).read_text())
        cluster: dict[str, Any] = {"server": self.api.server}
        if self.api.ca_file:
            cluster["certificate-authority"] = str(sa_dir / "ca.crt")
        doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
               "clusters": [{"name": "cluster", "cluster": cluster}],
               "users": [{"name": sa, "user": {"tokenFile": str(sa_dir / "token")}}],
               "contexts": [{"name": "pod", "context": {"cluster": "cluster", "user": sa,
                                                        "namespace": meta["namespace"]}}],
               "current-context": "pod"}
        _atomic_write(directory / "kubeconfig", yaml.safe_dump(doc, sort_keys=False))
        return float(TOKEN_SECONDS)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)
