"""Helpers for the live-weights cluster tests: patching spec.weights, reading what servers serve,
watching servers over time, and checking the weight-version spans of committed samples.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.operator.kube_helpers import condition, events, get_json
from tests.operator.real_pool import RealPool, is_ready

DEFAULT = "default"


def weights_dir(root: Path, name: str) -> str:
    """A directory the simulated servers accept as weights (they only check that it exists)."""
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(b"")
    return str(path)


def patch_weights(pool: RealPool, **weights: Any) -> float:
    """`kubectl patch sgp` spec.weights; returns when kubectl returned (time.monotonic())."""
    pool.cluster.kubectl("patch", "sgp", pool.name, "-n", pool.namespace, "--type", "merge",
                         "-p", json.dumps({"spec": {"weights": weights}}))
    return time.monotonic()


def get_column(pool: RealPool, column: str) -> str:
    """One column of `kubectl get sgp` (the default table)."""
    lines = pool.cluster.kubectl("get", "sgp", pool.name, "-n", pool.namespace).stdout.splitlines()
    header, row = lines[0].split(), lines[1].split()
    return row[header.index(column)]


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def served_version(url: str) -> str:
    return str(http_json(url + "/model_info")["weight_version"])


def requests_total(url: str) -> int:
    """Generate requests a simulated server has taken (its /metrics; health checks do not count)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("sglang:num_requests_total"):
                return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError(f"{url}/metrics has no sglang:num_requests_total")


def weights_synced(pool: RealPool) -> dict[str, Any]:
    return condition(pool.status(), "WeightsSynced")


def pool_events(pool: RealPool, reason: str) -> list[dict[str, Any]]:
    return [e for e in events(pool.cluster, pool.namespace, pool.name) if e.get("reason") == reason]


@dataclass
class Observation:
    at: float
    pod: str
    ready: bool
    restarts: int
    version: str | None  # None: did not answer
    requests: int | None
    in_router: bool


@dataclass
class ServerWatch:
    """Polls every server pod (version, request count, readiness) and the router's workers, in a thread."""

    pool: RealPool
    interval: float = 0.1
    observations: list[Observation] = field(default_factory=list)
    statuses: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ServerWatch:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a pod in flux; the next round sees it
                pass
            self._stop.wait(self.interval)

    def poll(self) -> None:
        status = self.pool.status()
        self.statuses.append((time.monotonic(), status))
        try:
            routed = self.pool.worker_urls()
        except Exception:  # noqa: BLE001 - no router (or it restarts)
            routed = set()
        for pod in self.pool.server_pods():
            st = pod.get("status") or {}
            if not st.get("podIP"):
                continue
            url = self.pool.server_url(pod)
            try:
                version, count = served_version(url), requests_total(url)
            except Exception:  # noqa: BLE001 - not up (yet)
                version, count = None, None
            self.observations.append(Observation(
                time.monotonic(), pod["metadata"]["name"], is_ready(pod),
                sum(c.get("restartCount") or 0 for c in st.get("containerStatuses") or []), version, count,
                url in routed))

    def of(self, pod: str) -> list[Observation]:
        return [o for o in self.observations if o.pod == pod]


def assert_no_traffic_before_current(watch: ServerWatch, pod: str, version: str) -> None:
    """The pod took no generate request, and was in neither Ready nor the router, before it served `version`."""
    seen = [o for o in watch.of(pod) if o.version is not None]
    assert seen, f"pod {pod} was never observed"
    first_current = next((o for o in seen if o.version == version), None)
    assert first_current is not None, f"pod {pod} never served {version}: {seen[-3:]}"
    before = [o for o in seen if o.at < first_current.at]
    assert all(o.requests == 0 for o in before), f"pod {pod} took requests before serving {version}: {before}"
    assert not any(o.ready or o.in_router for o in before), f"pod {pod} was Ready/routed before {version}: {before}"
    assert any(o.ready and o.in_router for o in seen), f"pod {pod} never joined the pool"


def spans_of(row: dict[str, Any]) -> list[str]:
    return [s["version"] for s in row.get("weight_version_spans") or []]


def batch_rows(pool: RealPool, job: str, out: Path) -> dict[int, list[dict[str, Any]]]:
    """rollout id -> the rows of the batch file the job's commit names (read through the commit, as a trainer does)."""
    from rollout_runtime.state import RolloutState

    data = get_json(pool.cluster, "configmap", f"{job}-state", "-n", pool.namespace)["data"]
    state = RolloutState.model_validate_json(data["state.json"])
    names = {i: state.batch_name(i) for i in range(state.rollout_id + 1)}
    return {i: [json.loads(line) for line in (out / name).open()] for i, name in names.items() if name}


def assert_spans_follow_the_updates(rows: dict[int, list[dict[str, Any]]], order: list[str],
                                    settled: dict[str, tuple[int, int]]) -> None:
    """Every committed sample's tokens came from versions in update order (never an older one after
    a newer one), and the rollouts a version fully owns (`settled[v] = (first, last)` rollout ids,
    started after every server served v and ended before the next update) carry only v."""
    for rollout, samples in rows.items():
        for row in samples:
            versions = spans_of(row)
            assert versions, f"rollout {rollout}: a sample without weight-version spans"
            ranks = [order.index(v) for v in versions]
            assert ranks == sorted(ranks), f"rollout {rollout}: tokens from an older version after a newer: {versions}"
            for version, (first, last) in settled.items():
                if first <= rollout <= last:
                    assert set(versions) == {version}, f"rollout {rollout} should be all {version}: {versions}"
