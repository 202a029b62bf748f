"""Prometheus metrics of the operator (kopf has none built in).

Counters and histograms are updated as reconciles run; the per-object gauges (jobs by phase,
samples per job, pools) are computed at scrape time from the in-memory indexes, so they can
never drift from what the operator sees and cost nothing between scrapes.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from rollout_operator.controller import Controller

JOB_PHASES = ("Pending", "WaitingForPool", "Running", "Succeeded", "Failed", "Suspended")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter("kuberollout_reconcile_total", "Reconciles by kind and result",
                                  ["kind", "result"], registry=self.registry)
        self.errors = Counter("kuberollout_reconcile_errors_total", "Failed reconciles by kind and error",
                              ["kind", "error"], registry=self.registry)
        self.duration = Histogram("kuberollout_reconcile_duration_seconds", "Reconcile latency", ["kind"],
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                  registry=self.registry)
        self.events = Counter("kuberollout_events_total", "Kubernetes events posted", ["kind", "type", "reason"],
                              registry=self.registry)

    def attach(self, controller: Controller) -> None:
        self.registry.register(_StateCollector(controller))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)


class _StateCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Any]:
        c = self.controller
        phases = GaugeMetricFamily("kuberollout_rolloutjobs", "RolloutJobs by phase", labels=["phase"])
        samples = GaugeMetricFamily("kuberollout_rolloutjob_samples", "Samples of a RolloutJob (cumulative, from "
                                    "its last commit)", labels=["namespace", "rolloutjob", "state"])
        rollout = GaugeMetricFamily("kuberollout_rolloutjob_rollout_id", "Last committed rollout id",
                                    labels=["namespace", "rolloutjob"])
        attempts = GaugeMetricFamily("kuberollout_rolloutjob_attempt", "Current attempt",
                                     labels=["namespace", "rolloutjob"])
        totals = CounterMetricFamily("kuberollout_samples", "Samples over all RolloutJobs the operator sees",
                                     labels=["state"])
        tally: Tally[str] = Tally()
        total: Tally[str] = Tally()
        for job in c.all_rolloutjobs():
            meta, status = job["metadata"], job.get("status") or {}
            tally[status.get("phase") or "Pending"] += 1
            ns, name = meta["namespace"], meta["name"]
            for state in ("completed", "aborted", "filtered"):
                if status.get(state) is not None:
                    samples.add_metric([ns, name, state], status[state])
                    total[state] += status[state]
            if status.get("rolloutId") is not None:
                rollout.add_metric([ns, name], status["rolloutId"])
            if status.get("attempt") is not None:
                attempts.add_metric([ns, name], status["attempt"])
        for phase in JOB_PHASES:
            phases.add_metric([phase], tally.get(phase, 0))
        for state in ("completed", "aborted", "filtered"):
            totals.add_metric([state], total.get(state, 0))
        pools = GaugeMetricFamily("kuberollout_sglangpool_ready_replicas", "Ready servers per pool",
                                  labels=["namespace", "sglangpool"])
        for pool in c.all_pools():
            meta, status = pool["metadata"], pool.get("status") or {}
            pools.add_metric([meta["namespace"], meta["name"]], status.get("readyReplicas") or 0)
        depth = GaugeMetricFamily("kuberollout_workqueue_depth", "Keys waiting to be reconciled", labels=["kind"])
        depth.add_metric(["rolloutjob"], c.job_queue.depth())
        depth.add_metric(["sglangpool"], c.pool_queue.depth())
        api = CounterMetricFamily("kuberollout_api_requests", "API requests made by the operator's reconcilers",
                                  labels=["verb", "code"])
        for (verb, code), n in sorted(c.client.stats.counts.items()):
            api.add_metric([verb, str(code)], n)
        yield from (phases, samples, rollout, attempts, totals, pools, depth, api)
