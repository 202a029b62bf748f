"""A server paused for a whole weight load is neither restarted nor dropped; a hung one is dropped.

Real SGLang answers /health and /health_generate with 503 (after SGLANG_HEALTH_CHECK_TIMEOUT, 20 s)
while paused, and keeps new requests waiting until it continues. The pool's probes and the router's
health checks are sized from the operator's pause budget (builders/sglangpool_probes.py). A budget
of five minutes would make this test take five minutes, so it runs its own operator with a 12 s
budget and servers whose health check gives up after 1 s, and shows, on the process kubelet with
the real router:

- a pause as long as the budget: the pod stays Ready, is not restarted, the router keeps it
  healthy, and a request sent during the pause waits and completes after the continue;
- a pause longer than the readiness window (a hung server): the pod goes NotReady and the router
  marks it unhealthy, only after the budget has passed, and still nothing restarts it; it comes
  back when it continues.

test_weights_builders.py shows the same inequalities for the default 300 s budget (and others).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rollout_operator.builders.sglangpool_probes import PauseTolerance

from tests.operator.kube_helpers import OperatorProcess, apply, get_json
from tests.operator.real_pool import RealPool, is_ready, simulated_pool

pytestmark = pytest.mark.cluster

BUDGET_S = 12


@pytest.fixture
def short_budget(crds_installed: Any, tmp_path: Path) -> Any:
    """An operator with a 12 s pause budget, watching one namespace of its own (not kro-*)."""
    cluster = crds_installed
    ns = cluster.new_namespace("wprobe")
    proc = OperatorProcess(cluster, tmp_path / "operator.log", "--weights-pause-budget-seconds", str(BUDGET_S),
                           namespace=ns)
    proc.start()
    yield proc, ns
    proc.stop()
    cluster.delete_namespace(ns)


def post(url: str, body: dict[str, Any], timeout: float = 30) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def test_a_planned_pause_keeps_the_server_and_a_hang_drops_it(short_budget: Any, process_kubelet: Any) -> None:
    operator, ns = short_budget
    body = simulated_pool("paused", process_kubelet, replicas=1, engine_args=["--token-latency", "0.01"],
                          env=[{"name": "SGLANG_HEALTH_CHECK_TIMEOUT", "value": "1"}])
    apply(operator.cluster, ns, body)
    pool = RealPool(operator.cluster, process_kubelet, ns, "paused")
    pool.wait_ready(1)
    tolerance = PauseTolerance.for_budget(BUDGET_S)
    (pod,) = pool.server_pods()
    name, url = pod["metadata"]["name"], pool.server_url(pod)
    ready = pod["spec"]["containers"][0]["readinessProbe"]
    assert (ready["periodSeconds"], ready["failureThreshold"]) == (tolerance.readiness_period_s,
                                                                   tolerance.readiness_failures)

    def state() -> tuple[bool, int, bool | None]:
        p = get_json(pool.cluster, "pod", name, "-n", ns)
        healthy = {w["url"]: w["is_healthy"] for w in pool.workers()}.get(url)
        return is_ready(p), p["status"]["containerStatuses"][0]["restartCount"], healthy

    # 1. A planned pause as long as the budget.
    answers: list[tuple[float, Any]] = []

    def generate() -> None:
        out = post(pool.router_url + "/generate", {"text": "What is 1+1?", "sampling_params": {"max_new_tokens": 4}},
                   timeout=120)
        answers.append((time.monotonic(), out))

    post(url + "/pause_generation", {"mode": "retract"})
    paused = time.monotonic()
    sender = threading.Thread(target=generate)
    sender.start()
    seen = []
    while time.monotonic() - paused < BUDGET_S:
        seen.append(state())
        time.sleep(0.5)
    assert not answers, "a request answered while the server was paused"
    post(url + "/continue_generation", {})
    continued = time.monotonic()
    sender.join(60)
    assert all(s == (True, 0, True) for s in seen), f"Ready/restarts/router-healthy during the pause: {seen}"
    ((done, out),) = answers
    assert done >= continued and out["meta_info"]["finish_reason"]["type"] in ("length", "stop")

    # 2. A hang: paused for longer than the windows. NotReady and unhealthy, after the budget; never restarted.
    # First let a router health check and a readiness probe pass, so that the two pauses are not one long one
    # to them (two weight updates back to back are: see docs/operator.md).
    time.sleep(2 * max(tolerance.router_interval_s, tolerance.readiness_period_s))
    post(url + "/pause_generation", {"mode": "retract"})
    hung = time.monotonic()
    not_ready_at = unhealthy_at = None
    deadline = hung + tolerance.readiness_window_s + 30
    while (not_ready_at is None or unhealthy_at is None) and time.monotonic() < deadline:
        r, restarts, healthy = state()
        assert restarts == 0, "a paused server was restarted"
        now = time.monotonic() - hung
        not_ready_at = not_ready_at if not_ready_at is not None or r else now
        unhealthy_at = unhealthy_at if unhealthy_at is not None or healthy is not False else now
        time.sleep(0.5)
    assert not_ready_at is not None and unhealthy_at is not None, (not_ready_at, unhealthy_at)
    assert not_ready_at > BUDGET_S and unhealthy_at > BUDGET_S
    assert not_ready_at <= tolerance.readiness_window_s + 15
    post(url + "/continue_generation", {})
    pool.wait("the server Ready and healthy again", lambda: state() == (True, 0, True), timeout=90)
