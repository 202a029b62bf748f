"""Cluster DNS and Service routing for process pods (CoreDNS's and kube-proxy's jobs).

Endpoints are computed from pods, as the EndpointSlice controller would: a Service's endpoints are
the pods in its namespace that match its selector, have an IP, are not terminating, and are Ready
(or any, with publishNotReadyAddresses). The controller's own EndpointSlices cannot be used: the
apiserver rejects loopback addresses in EndpointSlices and Endpoints ("may not be in the loopback
range"), so Services with process pods behind them have no slices in this plane.

DNS (`<svc>.<ns>.svc.cluster.local`, and the short forms through the pod's search path):

- a ClusterIP Service resolves to a stable "service IP" from the node's block, where a TCP proxy
  listens on each of the Service's ports and forwards every new connection to one ready endpoint
  (round robin), resolving `targetPort` (number or the pod's named port) per endpoint. The proxy
  listens only while the Service has ready endpoints, so a client sees "connection refused" as it
  would from kube-proxy's REJECT rule;
- a headless Service (clusterIP None) resolves to its ready endpoints' pod IPs, as CoreDNS does;
- an ExternalName Service is a CNAME.

Why a proxy and not "resolve to a pod IP": clients cache DNS (aiohttp keeps answers for 300 s,
the runtime's client for the whole run), so a name that resolved to one pod would keep pointing
at it after the pod is deleted or the pool scaled down. A Service IP, like a real ClusterIP, stays
valid while endpoints come and go, and `port` != `targetPort` works.

The table is written to a JSON file (atomically) that the children's `sitecustomize` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.cluster.kubelet.netblock import Allocator
from tests.cluster.kubelet.podspec import Unsupported, container_port

log = logging.getLogger(__name__)

DOMAIN = "cluster.local"


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def endpoints(service: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods that back a Service (pure: the EndpointSlice controller's rule, ready ones only)."""
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    if not selector:
        return []
    ns = service["metadata"]["namespace"]
    out = []
    for pod in pods:
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if meta["namespace"] != ns or any(labels.get(k) != v for k, v in selector.items()):
            continue
        if not (pod.get("status") or {}).get("podIP") or meta.get("deletionTimestamp"):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        if spec.get("publishNotReadyAddresses") or _ready(pod):
            out.append(pod)
    return sorted(out, key=lambda p: p["metadata"]["name"])


def target_port(pod: Mapping[str, Any], port: Mapping[str, Any]) -> int | None:
    """A Service port's targetPort on one pod (a named port is looked up in its containers)."""
    target = port.get("targetPort", port["port"])
    for container in pod["spec"]["containers"]:
        try:
            return container_port(container, target)
        except Unsupported:
            continue
    return None


class ServiceTable:
    """Services + pods -> the DNS file and the per-Service-port TCP proxies."""

    def __init__(self, dns_file: Path, ips: Allocator) -> None:
        self.dns_file = dns_file
        self.ips = ips
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.service_ip: dict[tuple[str, str], str] = {}
        self.proxies: dict[tuple[str, int], Proxy] = {}  # (service IP, port)
        self._dirty = asyncio.Event()
        self._written = ""

    def on_service(self, kind: str, svc: dict[str, Any]) -> None:
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        if kind == "DELETED":
            self.services.pop(key, None)
        else:
            self.services[key] = svc
        self._dirty.set()

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if kind == "DELETED":
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod
        self._dirty.set()

    async def run(self) -> None:
        """Recompute after changes (coalesced), forever."""
        self.write_dns({})
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.02)  # coalesce bursts of watch events
            self._dirty.clear()
            try:
                await self.sync()
            except Exception:  # noqa: BLE001 - keep serving the last good table
                log.exception("service table sync failed")

    async def sync(self) -> None:
        records: dict[str, Any] = {}
        wanted: dict[tuple[str, int], list[tuple[str, int]]] = {}
        pods = list(self.pods.values())
        for key in list(self.service_ip):
            if key not in self.services:
                self.ips.release(self.service_ip.pop(key))
        for (ns, name), svc in self.services.items():
            fqdn = f"{name}.{ns}.svc.{DOMAIN}"
            spec = svc.get("spec") or {}
            if spec.get("type") == "ExternalName":
                records[fqdn] = {"cname": spec.get("externalName", "")}
                continue
            eps = endpoints(svc, pods)
            if spec.get("clusterIP") in ("None", None, ""):
                records[fqdn] = sorted({p["status"]["podIP"] for p in eps})
                continue
            ip = self.service_ip.get((ns, name)) or self.ips.allocate()
            self.service_ip[(ns, name)] = ip
            records[fqdn] = [ip]
            for port in spec.get("ports") or []:
                if port.get("protocol", "TCP") != "TCP":
                    continue
                targets = [(p["status"]["podIP"], t) for p in eps if (t := target_port(p, port)) is not None]
                if targets:
                    wanted[(ip, int(port["port"]))] = targets
        await self._reconcile_proxies(wanted)
        self.write_dns(records)

    async def _reconcile_proxies(self, wanted: dict[tuple[str, int], list[tuple[str, int]]]) -> None:
        for key in list(self.proxies):
            if key not in wanted:
                # No endpoints left: stop accepting, but leave open connections alone, as
                # kube-proxy's conntrack entries outlive a rule change.
                self.proxies.pop(key).stop_listening()
        for key, targets in wanted.items():
            proxy = self.proxies.get(key)
            if proxy is None:
                proxy = Proxy(*key)
                try:
                    await proxy.open()
                except OSError as exc:
                    log.warning("service proxy %s:%s not opened: %s", *key, exc)
                    continue
                self.proxies[key] = proxy
            proxy.targets = targets

    def write_dns(self, records: dict[str, Any]) -> None:
        text = json.dumps({"domain": DOMAIN, "records": records}, sort_keys=True)
        if text == self._written:
            return
        tmp = self.dns_file.with_name(self.dns_file.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.dns_file)
        self._written = text

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()
        self.proxies.clear()


class Proxy:
    """A userspace TCP proxy on (service IP, port): each connection goes to the next endpoint."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip = ip
        self.port = port
        self.targets: list[tuple[str, int]] = []
        self._rr = itertools.count()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.ip, self.port, reuse_address=True)

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def close(self) -> None:
        self.stop_listening()
        for task in list(self._conns):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        upstream_writer = None
        try:
            targets = list(self.targets)
            if not targets:
                return
            host, port = targets[next(self._rr) % len(targets)]
            try:
                up_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, asyncio.TimeoutError) as exc:
                log.info("service proxy %s:%s -> %s:%s: %r", self.ip, self.port, host, port, exc)
                return
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            for w in (writer, upstream_writer):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        with contextlib.suppress(Exception):
            writer.close()
