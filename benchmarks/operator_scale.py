"""Operator scale benchmark: N RolloutJobs (endpoint, no pool) applied at once.

    python benchmarks/operator_scale.py                 # 1000 jobs on a fresh test control plane
    python benchmarks/operator_scale.py --jobs 200      # smaller
    python benchmarks/operator_scale.py --kubeconfig ~/.kube/config   # an existing cluster (careful)

Prints the time until every job has its state ConfigMap, ServiceAccount, Role, RoleBinding, batch
Job and a status phase; the p50/p99 latency from a job's creation (the POST returning) to its
batch Job appearing in a watch; and the operator process's peak RSS (VmHWM). Target on 2 cores:
1000 jobs within 120 s, peak RSS within 250 MB.

Everything shares the machine: etcd, kube-apiserver, controller-manager (which creates a pod per
Job), scheduler (which finds no node for those pods: they have no toleration for the fake GPU
nodes, so they stay Pending and never "run"), kwok, the operator and this script. The jobs are
created with concurrent POSTs (what a `kubectl apply` of many files does in parallel); the
timestamps come from this script's own watches, so they do not depend on the second-granularity
creationTimestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WANT = ("configmap", "serviceaccount", "role", "rolebinding", "job", "phase")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1000, help="RolloutJobs to create (default %(default)s)")
    p.add_argument("--kubeconfig", default=None, help="use this cluster instead of starting the test control plane")
    p.add_argument("--workers", type=int, default=32, help="operator reconcile workers (default %(default)s)")
    p.add_argument("--create-concurrency", type=int, default=32, help="parallel POSTs (default %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the namespace (and the plane) afterwards")
    p.add_argument("--json", default=None, help="also write the figures as JSON to this path")
    return p.parse_args()


def rolloutjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kuberollout.io/v1alpha1",
        "kind": "RolloutJob",
        "metadata": {"name": name},
        "spec": {
            "endpoint": "http://sglang-router.example:30000",
            "dataset": {"path": "/data/train.jsonl", "inputKey": "prompt", "labelKey": "label"},
            "rollout": {"batchSize": 32, "samplesPerPrompt": 8, "numRollouts": 100, "maxResponseLength": 1024},
            "reward": {"type": "math"},
            "output": {"path": f"/data/out/{name}"},
        },
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Progress:
    """Per job: when each of its pieces was first seen in a watch."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.created: dict[str, float] = {}
        self.seen: dict[str, dict[str, float]] = {}
        self.complete: dict[str, float] = {}
        self.done = asyncio.Event()

    def mark(self, job: str, what: str) -> None:
        pieces = self.seen.setdefault(job, {})
        if what in pieces:
            return
        pieces[what] = time.monotonic()
        if len(pieces) == len(WANT) and job not in self.complete:
            self.complete[job] = time.monotonic()
            if len(self.complete) >= self.n:
                self.done.set()


async def watch(client: Any, path: str, handle: Any, stop: asyncio.Event) -> None:
    """LIST then WATCH `path`, calling handle(type, object) for every item and event."""
    from rollout_operator.kube import ApiError

    while not stop.is_set():
        try:
            listing = await client.get(path)
            for item in listing.get("items") or []:
                handle("ADDED", item)
            rv = listing["metadata"]["resourceVersion"]
            session = await client._ensure()
            params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
            async with session.get(path, params=params, timeout=None) as resp:
                async for line in resp.content:
                    if stop.is_set():
                        return
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        handle(event["type"], event["object"])
        except (TimeoutError, ApiError, OSError, json.JSONDecodeError):
            await asyncio.sleep(0.5)


async def run(args: argparse.Namespace, kubeconfig: Path, kubectl: list[str]) -> dict[str, Any]:
    from rollout_operator.kube import KubeClient, resource_path

    from tests.operator.kube_helpers import free_port

    os.environ["KUBECONFIG"] = str(kubeconfig)
    ns = f"kro-scale-{secrets.token_hex(3)}"
    subprocess.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")], check=True,
                   capture_output=True)
    for crd in ("rolloutjobs.kuberollout.io", "sglangpools.kuberollout.io"):
        subprocess.run([*kubectl, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s"], check=True,
                       capture_output=True)
    subprocess.run([*kubectl, "create", "namespace", ns], check=True, capture_output=True)

    log_path = Path(f"/tmp/{ns}-operator.log")
    metrics_port, liveness_port = free_port(), free_port()
    operator = subprocess.Popen(
        [sys.executable, "-m", "rollout_operator.cli", "--namespace", ns, "--workers", str(args.workers),
         "--metrics-port", str(metrics_port), "--liveness", f"http://127.0.0.1:{liveness_port}/healthz",
         "--log-format", "plain"],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG": str(kubeconfig)})
    client = KubeClient(max_connections=args.create_concurrency + 8, timeout=120)
    progress = Progress(args.jobs)
    stop = asyncio.Event()
    names = [f"rj-{i:05d}" for i in range(args.jobs)]
    try:
        # Wait for the operator to be up (its liveness endpoint answers once kopf runs).
        import urllib.request

        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=1)
                break
            except OSError:
                if operator.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"operator did not start; see {log_path}") from None
                await asyncio.sleep(0.2)
        base_rss = peak_rss_mb(operator.pid)

        def owner(obj: dict[str, Any]) -> str | None:
            return ((obj.get("metadata") or {}).get("labels") or {}).get("kuberollout.io/rolloutjob")

        def on_child(kind: str) -> Any:
            def handle(_: str, obj: dict[str, Any]) -> None:
                job = owner(obj)
                if job:
                    progress.mark(job, kind)
            return handle

        def on_rj(_: str, obj: dict[str, Any]) -> None:
            if (obj.get("status") or {}).get("phase"):
                progress.mark(obj["metadata"]["name"], "phase")

        sel = "?labelSelector=kuberollout.io%2Frolloutjob"
        watches = [
            watch(client, resource_path("v1", "ConfigMap", ns) + sel, on_child("configmap"), stop),
            watch(client, resource_path("v1", "ServiceAccount", ns) + sel, on_child("serviceaccount"), stop),
            watch(client, resource_path("rbac.authorization.k8s.io/v1", "Role", ns) + sel, on_child("role"), stop),
            watch(client, resource_path("rbac.authorization.k8s.io/v1", "RoleBinding", ns) + sel,
                  on_child("rolebinding"), stop),
            watch(client, resource_path("batch/v1", "Job", ns) + sel, on_child("job"), stop),
            watch(client, resource_path("kuberollout.io/v1alpha1", "RolloutJob", ns), on_rj, stop),
        ]
        tasks = [asyncio.create_task(w) for w in watches]
        await asyncio.sleep(1.0)  # let the watches start

        sem = asyncio.Semaphore(args.create_concurrency)
        cpu0 = cpu_seconds(operator.pid)
        t0 = time.monotonic()

        async def create(name: str) -> None:
            body = rolloutjob(name)
            body["metadata"]["namespace"] = ns
            async with sem:
                await client.create(body)
            progress.created[name] = time.monotonic()

        await asyncio.gather(*(create(n) for n in names))
        t_applied = time.monotonic() - t0
        print(f"created {args.jobs} RolloutJobs in {t_applied:.1f}s", flush=True)
        try:
            await asyncio.wait_for(progress.done.wait(), timeout=args.timeout)
            complete = True
        except TimeoutError:
            complete = False
        t_all = time.monotonic() - t0
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        cpu = cpu_seconds(operator.pid) - cpu0
        latencies = sorted(progress.seen[n]["job"] - progress.created[n] for n in names
                           if "job" in progress.seen.get(n, {}) and n in progress.created)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        api_requests = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                           if line.startswith("kuberollout_api_requests_total"))
        figures = {
            "jobs": args.jobs,
            "complete": len(progress.complete),
            "all_reconciled": complete,
            "seconds_to_create": round(t_applied, 1),
            "seconds_until_all_reconciled": round(t_all, 1),
            "apply_to_job_p50_s": round(statistics.median(latencies), 2) if latencies else None,
            "apply_to_job_p99_s": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2) if latencies else None,
            "apply_to_job_max_s": round(latencies[-1], 2) if latencies else None,
            "operator_peak_rss_mb": round(peak_rss_mb(operator.pid), 1),
            "operator_idle_rss_mb": round(base_rss, 1),
            "operator_cpu_seconds": round(cpu, 1),
            "operator_api_requests": int(api_requests),
            "cpus": os.cpu_count(),
            "operator_log": str(log_path),
        }
        return figures
    finally:
        stop.set()
        await client.close()
        operator.terminate()
        try:
            operator.wait(20)
        except subprocess.TimeoutExpired:
            operator.kill()
        if not args.keep:
            subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=false"], capture_output=True)


def main() -> int:
    args = parse_args()
    plane = None
    if args.kubeconfig:
        kubeconfig = Path(args.kubeconfig).expanduser()
        kubectl = ["kubectl", f"--kubeconfig={kubeconfig}"]
    else:
        from tests.cluster.harness import Cluster

        print("starting the test control plane ...", flush=True)
        plane = Cluster.start()
        kubeconfig = plane.kubeconfig
        kubectl = [str(plane.bins["kubectl"]), f"--kubeconfig={kubeconfig}"]
    try:
        figures = asyncio.run(run(args, kubeconfig, kubectl))
    finally:
        if plane is not None and not args.keep:
            plane.close()
    ok_time = figures["all_reconciled"] and figures["seconds_until_all_reconciled"] <= 120 * args.jobs / 1000
    ok_rss = figures["operator_peak_rss_mb"] <= 250
    print()
    print(f"operator scale benchmark ({figures['cpus']} CPUs, everything on this machine)")
    print(f"  RolloutJobs                         {figures['jobs']} ({figures['complete']} fully reconciled)")
    print(f"  created (concurrent POSTs) in       {figures['seconds_to_create']} s")
    print(f"  all reconciled (CM, SA, Role, RB, Job, phase) after  {figures['seconds_until_all_reconciled']} s"
          f"   target <= {120 * args.jobs / 1000:.0f} s: {'ok' if ok_time else 'MISSED'}")
    print(f"  apply-to-Job latency p50 / p99 / max {figures['apply_to_job_p50_s']} / {figures['apply_to_job_p99_s']}"
          f" / {figures['apply_to_job_max_s']} s")
    print(f"  operator peak RSS                   {figures['operator_peak_rss_mb']} MB (idle "
          f"{figures['operator_idle_rss_mb']} MB)   target <= 250 MB: {'ok' if ok_rss else 'MISSED'}")
    print(f"  operator CPU                        {figures['operator_cpu_seconds']} s for "
          f"{figures['operator_api_requests']} API requests")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0 if ok_time and ok_rss else 1


if __name__ == "__main__":
    raise SystemExit(main())
