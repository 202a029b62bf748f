"""Prometheus metrics of the operator (kopf has none built in).

Counters and histograms are updated as reconciles run; the per-object gauges (jobs by phase,
samples per job, pools) are computed at scrape time from the in-memory indexes, so they can
never drift from what the operator sees and cost nothing between scrapes. The collector reads
them through `OperatorView`, a small protocol the controller implements, so this module never
imports the controller.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rollout_operator.api.rolloutjob_status import JobPhase, RolloutJobStatus
from rollout_runtime.contract import FLAT_KEYS

# Status fields read from the slim RolloutJobs. The commit's figures are mirrored into status
# under their flat ConfigMap names (rollout_runtime.contract.FLAT_KEYS); the attempt is the operator's.
_SAMPLES = {state: FLAT_KEYS[state] for state in ("completed", "aborted", "filtered")}  # state label -> field
_ROLLOUT_ID = FLAT_KEYS["rollout_id"]
_ATTEMPT = RolloutJobStatus.model_fields["attempt"].alias or "attempt"


class OperatorView(Protocol):
    """What the scrape-time gauges read (implemented by controller.manager.Controller)."""

    def all_rolloutjobs(self) -> Iterable[dict[str, Any]]:
        """Every RolloutJob the operator sees (slim dicts: metadata, spec, status)."""

    def all_pools(self) -> Iterable[dict[str, Any]]:
        """Every SGLangPool the operator sees."""

    def queue_depths(self) -> Mapping[str, int]:
        """Work queue name -> keys waiting."""

    def api_request_counts(self) -> Mapping[tuple[str, int], int]:
        """(verb, HTTP code) -> requests the reconcilers made."""


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

    def attach(self, view: OperatorView) -> None:
        self.registry.register(_StateCollector(view))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)


class _StateCollector(Collector):
    def __init__(self, view: OperatorView) -> None:
        self.view = view

    def collect(self) -> Iterator[Any]:
        v = self.view
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
        for job in v.all_rolloutjobs():
            meta, status = job["metadata"], job.get("status") or {}
            tally[status.get("phase") or JobPhase.PENDING] += 1
            ns, name = meta["namespace"], meta["name"]
            for state, key in _SAMPLES.items():
                if status.get(key) is not None:
                    samples.add_metric([ns, name, state], status[key])
                    total[state] += status[key]
            if status.get(_ROLLOUT_ID) is not None:
                rollout.add_metric([ns, name], status[_ROLLOUT_ID])
            if status.get(_ATTEMPT) is not None:
                attempts.add_metric([ns, name], status[_ATTEMPT])
        for phase in JobPhase:
            phases.add_metric([str(phase)], tally.get(phase, 0))
        for state in _SAMPLES:
            totals.add_metric([state], total.get(state, 0))
        pools = GaugeMetricFamily("kuberollout_sglangpool_ready_replicas", "Ready servers per pool",
                                  labels=["namespace", "sglangpool"])
        for pool in v.all_pools():
            meta, status = pool["metadata"], pool.get("status") or {}
            pools.add_metric([meta["namespace"], meta["name"]], status.get("readyReplicas") or 0)
        depth = GaugeMetricFamily("kuberollout_workqueue_depth", "Keys waiting to be reconciled", labels=["kind"])
        for kind, n in v.queue_depths().items():
            depth.add_metric([kind], n)
        api = CounterMetricFamily("kuberollout_api_requests", "API requests made by the operator's reconcilers",
                                  labels=["verb", "code"])
        for (verb, code), n in sorted(v.api_request_counts().items()):
            api.add_metric([verb, str(code)], n)
        yield from (phases, samples, rollout, attempts, totals, pools, depth, api)
