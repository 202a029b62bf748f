"""The process kubelet: a node whose pods are local processes, for the test control plane.

    python -m tests.cluster.kubelet --kubeconfig admin.kubeconfig --workdir DIR [--node NAME]

It registers a Node, watches all pods and Services, runs the pods bound to its node (pod.py),
serves cluster DNS and Service routing to them (services.py), serves their logs to `kubectl
logs` (server.py), and writes `<workdir>/ready.json`
once the node is registered, which the harness waits for. SIGTERM stops every pod's processes
(SIGTERM, then SIGKILL after a short grace) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from tests.cluster.kubelet.api import KubeAPI, Reflector
from tests.cluster.kubelet.context import KubeletContext
from tests.cluster.kubelet.netblock import NetBlock
from tests.cluster.kubelet.node import NodeAgent
from tests.cluster.kubelet.pod import PodRunner
from tests.cluster.kubelet.server import KubeletServer
from tests.cluster.kubelet.services import ServiceTable

log = logging.getLogger("process-kubelet")

SHUTDOWN_GRACE = 5.0


class Kubelet:
    """Dispatches pod events: pods on this node get a PodRunner; all pods feed the Service table."""

    def __init__(self, ctx: KubeletContext, services: ServiceTable) -> None:
        self.ctx = ctx
        self.services = services
        self.runners: dict[str, PodRunner] = {}  # by pod UID

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        self.services.on_pod(kind, pod)
        if (pod.get("spec") or {}).get("nodeName") != self.ctx.node_name:
            return
        uid = pod["metadata"]["uid"]
        runner = self.runners.get(uid)
        if kind == "DELETED":
            if runner is not None:
                runner.deleted()
                self.runners.pop(uid, None)
            return
        if runner is not None:
            runner.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return  # finished before we saw it (a kubelet restart): nothing to run
        runner = PodRunner(self.ctx, pod)
        self.runners[uid] = runner
        if pod["metadata"].get("deletionTimestamp"):
            runner.start()
            runner.update(pod)
            return
        log.info("admitting pod %s", runner.key)
        runner.start()

    async def shutdown(self) -> None:
        await asyncio.gather(*(r.shutdown(SHUTDOWN_GRACE) for r in self.runners.values()),
                             return_exceptions=True)


async def serve(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    net = NetBlock.claim()
    api = KubeAPI(Path(args.kubeconfig))
    capacity = {"cpu": str(args.cpus), "memory": args.memory, "pods": "110", "ephemeral-storage": "100Gi",
                "nvidia.com/gpu": str(args.gpus)}
    server = KubeletServer(workdir / "pods", net.node_ip, workdir / "certs")
    node = NodeAgent(api, args.node, net.node_ip, net.pod_cidr, capacity, args.gpus, port=await server.start())
    ctx = KubeletContext(api=api, node_name=args.node, net=net, workdir=workdir, dns_file=workdir / "dns.json",
                         capacity=capacity, crash_backoff=args.crash_backoff)
    services = ServiceTable(ctx.dns_file, net.services)
    kubelet = Kubelet(ctx, services)
    tasks: list[asyncio.Task[Any]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.register()
        pods = Reflector(api, "/api/v1/pods", kubelet.on_pod, name="pods")
        svcs = Reflector(api, "/api/v1/services", services.on_service, name="services")
        tasks = [loop.create_task(c) for c in (node.heartbeat(), pods.run(), svcs.run(), services.run())]
        await asyncio.wait_for(asyncio.gather(pods.synced.wait(), svcs.synced.wait()), 60)
        ready = {"node": args.node, "block": net.block, "pod_cidr": net.pod_cidr, "node_ip": net.node_ip,
                 "dns_file": str(ctx.dns_file), "pods_dir": str(workdir / "pods"), "pid": os.getpid()}
        tmp = workdir / "ready.json.tmp"
        tmp.write_text(json.dumps(ready))
        os.replace(tmp, workdir / "ready.json")
        log.info("process kubelet ready: %s", ready)
        await stop.wait()
        log.info("shutting down")
    finally:
        await kubelet.shutdown()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await services.close()
        await server.close()
        if ctx.probe_session is not None:
            await ctx.probe_session.close()
        await api.close()
        net.release()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.cluster.kubelet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True, help="admin kubeconfig of the plane")
    ap.add_argument("--workdir", required=True, help="pod directories, logs, DNS table, ready.json")
    ap.add_argument("--node", default="process-0", help="Node name")
    ap.add_argument("--gpus", type=int, default=8, help="fake nvidia.com/gpu to advertise (scheduling only)")
    ap.add_argument("--cpus", type=int, default=32)
    ap.add_argument("--memory", default="128Gi")
    ap.add_argument("--crash-backoff", type=float, default=10.0, help="first CrashLoopBackOff delay (s)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0
