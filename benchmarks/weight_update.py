"""Live-weights benchmark: the operator's overhead on a weight update, for 1, 4 and 16 servers.

    python benchmarks/weight_update.py                       # 1, 4, 16 servers on a fresh test plane
    python benchmarks/weight_update.py --servers 4 --load-seconds 5

For each pool size it starts an SGLangPool of simulated servers (each load takes `--load-seconds`)
behind the real sglang-router, on the test control plane with the process kubelet (every server a
real process with its own IP and probes), patches `spec.weights`, and measures:

- T: from the patch (the API call) until `status.weightVersion` shows the new version;
- U: the slowest server's own `/update_weights_from_disk` call (`status.lastWeightUpdate.maxLoadSeconds`);
- overhead = T - U: everything the operator adds (watch event, reconcile, status writes, the pause
  and continue calls, reading the versions back). Target: <= 1 s at 16 servers.
- the pause window each server saw (paused -> continued, from the operator's per-server log lines).

Everything shares this machine: etcd, the apiserver, the controllers, the process kubelet and its
probes, every server, the router, the operator and this script.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

TARGET_OVERHEAD_S = 1.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=int, action="append", help="pool sizes (default 1, 4, 16)")
    p.add_argument("--load-seconds", type=float, default=2.0, help="each server's load time (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="updates per pool size (default %(default)s)")
    p.add_argument("--json", default=None, help="also write the figures as JSON to this path")
    return p.parse_args()


def measure(pool: Any, api: Any, version: int, weights: str) -> dict[str, Any]:
    """One update: patch spec.weights, poll status until weightVersion == version."""
    group, plural = "kuberollout.io", "sglangpools"
    body = {"spec": {"weights": {"path": weights, "version": version}}}
    t0 = time.monotonic()
    api.patch_namespaced_custom_object(group, "v1alpha1", pool.namespace, plural, pool.name, body)
    while True:
        st = api.get_namespaced_custom_object(group, "v1alpha1", pool.namespace, plural, pool.name).get("status") or {}
        if st.get("weightVersion") == version:
            t = time.monotonic() - t0
            break
        if time.monotonic() - t0 > 300:
            raise TimeoutError(f"weightVersion never became {version}: {json.dumps(st)}")
        time.sleep(0.02)
    while (st.get("lastWeightUpdate") or {}).get("version") != version:  # written once the task has returned
        time.sleep(0.02)
        st = api.get_namespaced_custom_object(group, "v1alpha1", pool.namespace, plural, pool.name).get("status") or {}
    record = st["lastWeightUpdate"]
    return {"version": version, "patch_to_status_s": t, "slowest_load_s": record["maxLoadSeconds"],
            "overhead_s": t - record["maxLoadSeconds"], "max_pause_s": record["maxPauseSeconds"]}


def pause_windows(log: str, namespace: str, pool: str, version_count: int) -> list[list[float]]:
    """Per update, every server's pause window, from the operator's log lines."""
    pattern = re.compile(rf"SGLangPool {re.escape(namespace)}/{re.escape(pool)}: server (\S+) \(\S+\) ok: "
                         rf"load ([\d.]+)s, paused ([\d.]+)s")
    windows = [float(m.group(3)) for m in pattern.finditer(log)]
    per = len(windows) // version_count if version_count else 0
    return [windows[i * per:(i + 1) * per] for i in range(version_count)] if per else []


def main() -> int:
    args = parse_args()
    sizes = args.servers or [1, 4, 16]
    from kubernetes import client as k8s

    from tests.cluster.harness import Cluster
    from tests.cluster.process_node import start_process_kubelet
    from tests.operator.kube_helpers import OperatorProcess, apply
    from tests.operator.live_weights import weights_dir
    from tests.operator.real_pool import RealPool, simulated_pool

    print("starting the test control plane and the process kubelet ...", flush=True)
    cluster = Cluster.start()
    results: list[dict[str, Any]] = []
    try:
        kubelet = start_process_kubelet(cluster)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("rolloutjobs.kuberollout.io", "sglangpools.kuberollout.io"):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        log_path = cluster.plane.workdir / "operator.log"  # type: ignore[union-attr]
        operator = OperatorProcess(cluster, log_path, namespace="wbench-*")
        operator.start()
        api = k8s.CustomObjectsApi(cluster.api_client())
        try:
            for n in sizes:
                ns = cluster.new_namespace("wbench")
                # No tokenizer (token ids only): a server then needs ~50 MB instead of ~600 MB, and 16 fit.
                apply(cluster, ns, simulated_pool("bench", kubelet, replicas=n, gpusPerReplica=0,
                                                  extraArgs=["--weight-load-seconds", str(args.load_seconds)]))
                pool = RealPool(cluster, kubelet, ns, "bench")
                started = time.monotonic()
                pool.wait_ready(n, timeout=900)
                print(f"{n} server(s) Ready behind the router in {time.monotonic() - started:.0f}s", flush=True)
                runs = []
                for version in range(1, args.repeats + 1):
                    weights = weights_dir(cluster.plane.workdir / ns, f"step_{version}")  # type: ignore[union-attr]
                    runs.append(measure(pool, api, version, weights))
                    time.sleep(1.0)
                windows = pause_windows(log_path.read_text(), ns, "bench", len(runs))
                for run, w in zip(runs, windows, strict=False):
                    run["pause_windows_s"] = sorted(round(x, 3) for x in w)
                results.append({"servers": n, "runs": runs})
                cluster.delete_namespace(ns)
        finally:
            operator.stop()
    finally:
        cluster.close()

    print()
    print(f"weight-update orchestration overhead (load {args.load_seconds:g} s per server; everything on this "
          f"machine)")
    print(f"  {'servers':>7}  {'patch->status':>13}  {'slowest load':>12}  {'overhead':>8}  pause windows (s)")
    ok = True
    for r in results:
        for run in r["runs"]:
            windows = run.get("pause_windows_s") or []
            shown = ", ".join(f"{w:.2f}" for w in windows)
            print(f"  {r['servers']:>7}  {run['patch_to_status_s']:>12.2f}s  {run['slowest_load_s']:>11.2f}s  "
                  f"{run['overhead_s']:>7.2f}s  {shown}")
        median = statistics.median(run["overhead_s"] for run in r["runs"])
        r["median_overhead_s"] = median
        if r["servers"] >= 16 and median > TARGET_OVERHEAD_S:
            ok = False
        print(f"  {r['servers']:>7}  median overhead {median:.2f}s" +
              (f"   target <= {TARGET_OVERHEAD_S:g} s: {'ok' if median <= TARGET_OVERHEAD_S else 'MISSED'}"
               if r["servers"] >= 16 else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
