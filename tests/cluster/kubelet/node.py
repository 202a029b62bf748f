"""The process node: its Node object, status and Lease heartbeats.

The node is *not* annotated `kwok.x-k8s.io/node=fake`, so kwok leaves it and its pods alone: the
process kubelet is the only writer of their status, as a kubelet is on a real node. It carries a
NoSchedule taint, so only pods that tolerate it land here (the tests opt in; pods for kwok's fake
GPU nodes keep going there). It advertises fake `nvidia.com/gpu`, like the kwok nodes, so that a
simulated pool that asks for GPUs schedules; nothing here uses them.

Liveness towards the node lifecycle controller is the node Lease in kube-node-lease, renewed
every 10 s (kube-controller-manager marks a node NotReady after 50 s without a renewal).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import platform
from collections.abc import Mapping
from typing import Any

import aiohttp

from tests.cluster.kubelet.api import ApiError, KubeAPI
from tests.cluster.kubelet.status import now_rfc3339

log = logging.getLogger(__name__)

PROCESS_NODE_LABEL = "kuberollout.io/process-node"
TAINT = {"key": PROCESS_NODE_LABEL, "value": "true", "effect": "NoSchedule"}
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 60.0


def micro_time() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_manifest(name: str, pod_cidr: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            PROCESS_NODE_LABEL: "true", "nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": str(gpus),
        }},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": [dict(TAINT)]},
    }


def node_status(node_ip: str, capacity: Mapping[str, str], port: int, transition: str) -> dict[str, Any]:
    now = now_rfc3339()

    def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": transition}

    return {
        "capacity": dict(capacity), "allocatable": dict(capacity),
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
        ],
        # Only an InternalIP: the apiserver would try a Hostname address first, and it does not resolve.
        "addresses": [{"type": "InternalIP", "address": node_ip}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
            "osImage": "kuberollout process kubelet", "containerRuntimeVersion": "process://local",
            "kubeletVersion": "v1.34.12-process", "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": "amd64",
        },
        "phase": "Running",
    }


class NodeAgent:
    """Registers the node and keeps it Ready."""

    def __init__(self, api: KubeAPI, name: str, node_ip: str, pod_cidr: str, capacity: Mapping[str, str],
                 gpus: int, port: int = 0) -> None:
        self.api = api
        self.name = name
        self.node_ip = node_ip
        self.pod_cidr = pod_cidr
        self.capacity = dict(capacity)
        self.gpus = gpus
        self.port = port
        self.transition = now_rfc3339()

    async def register(self) -> None:
        """Create the Node (replacing a stale one of the same name), post Ready, take the Lease."""
        with contextlib.suppress(ApiError):
            await self.api.delete(f"/api/v1/nodes/{self.name}")
        for _ in range(50):
            try:
                await self.api.post("/api/v1/nodes", node_manifest(self.name, self.pod_cidr, self.gpus))
                break
            except ApiError as exc:
                if exc.status != 409:  # the old one is still being deleted
                    raise
                await asyncio.sleep(0.2)
        await self.post_status()
        await self.renew_lease()

    async def post_status(self) -> None:
        await self.api.patch(f"/api/v1/nodes/{self.name}/status",
                             {"status": node_status(self.node_ip, self.capacity, self.port, self.transition)})

    async def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_time()}
        try:
            await self.api.patch(path, {"spec": spec}, content_type="application/merge-patch+json")
        except ApiError as exc:
            if exc.status != 404:
                raise
            node = await self.api.get(f"/api/v1/nodes/{self.name}")
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}
            await self.api.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                "spec": spec})

    async def heartbeat(self) -> None:
        """Renew the Lease every 10 s and refresh the node status every minute, forever."""
        since_status = 0.0
        while True:
            await asyncio.sleep(RENEW_EVERY)
            since_status += RENEW_EVERY
            try:
                await self.renew_lease()
                if since_status >= STATUS_EVERY:
                    since_status = 0.0
                    await self.post_status()
            except (ApiError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("node heartbeat failed: %r", exc)
