"""The pool's probes, readiness gate and router health checks, sized for planned pauses (no cluster).

The arithmetic here is what the process-kubelet test (test_cluster_weights_probes.py) shows with a
short budget: a pause as long as the budget never makes a server NotReady, never restarts it, and
never takes it out of the router's rotation; a server that cannot generate for longer does go NotReady.
"""

from __future__ import annotations

import math

import pytest
from rollout_operator.builders import sglangpool as pb
from rollout_operator.builders.sglangpool_probes import (
    LIVENESS_FAILURES,
    LIVENESS_PERIOD_S,
    ROUTER_HEALTH_TIMEOUT_S,
    PauseTolerance,
)
from rollout_operator.settings import OperatorConfig

from tests.operator.conftest import sglangpool
from tests.operator.test_builders import container, typed_pool

#: SGLang 0.5.23's health check gives up after this long (SGLANG_HEALTH_CHECK_TIMEOUT): a probe that
#: starts up to this long before a pause can still fail because of it.
SGLANG_HEALTH_TIMEOUT_S = 20


def failures_during(pause_s: float, period_s: int, probe_s: float) -> int:
    """The most consecutive failures of a probe that takes `probe_s` during a pause.

    As the kubelet runs it: one at a time on a ticker of `period_s` (a probe slower than the period
    is followed at once by the next), so probes start `max(period, probe)` apart, and one that
    started up to `probe_s` before the pause fails too.
    """
    return math.floor((pause_s + probe_s) / max(period_s, probe_s)) + 1


@pytest.mark.parametrize("budget", [5, 12, 60, 250, 300, 900, 3600])
@pytest.mark.parametrize("probe_s", [0.1, 1, SGLANG_HEALTH_TIMEOUT_S, 30])
def test_a_pause_as_long_as_the_budget_never_reaches_a_threshold(budget: float, probe_s: float) -> None:
    t = PauseTolerance.for_budget(budget)
    assert failures_during(budget, t.readiness_period_s, probe_s) < t.readiness_failures
    assert failures_during(budget, t.router_interval_s, min(probe_s, ROUTER_HEALTH_TIMEOUT_S)) < t.router_failures
    # ... and a server that cannot generate for longer than the window does go NotReady / unhealthy.
    assert t.readiness_window_s >= budget and t.router_window_s >= budget


def test_the_default_budget_in_numbers() -> None:
    t = PauseTolerance.for_budget(300)
    assert (t.readiness_period_s, t.readiness_failures, t.readiness_window_s) == (30, 13, 360)
    assert (t.router_interval_s, t.router_failures, t.router_window_s) == (60, 7, 360)


def test_server_probes_and_gate(config: OperatorConfig) -> None:
    d = pb.server_deployment(typed_pool(sglangpool(replicas=2)), config)
    c = container(d)
    # Liveness never goes through the scheduler: a paused or loading server still has its port.
    assert c["livenessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": LIVENESS_PERIOD_S,
                                  "timeoutSeconds": 10, "failureThreshold": LIVENESS_FAILURES}
    t = PauseTolerance.for_budget(config.weights_pause_budget_seconds)
    ready = c["readinessProbe"]
    assert ready["httpGet"] == {"path": "/health_generate", "port": "http"}
    assert (ready["periodSeconds"], ready["failureThreshold"]) == (t.readiness_period_s, t.readiness_failures)
    assert ready["timeoutSeconds"] > SGLANG_HEALTH_TIMEOUT_S  # the server's own 503 arrives before ours
    assert d["spec"]["template"]["spec"]["readinessGates"] == [{"conditionType": "kuberollout.io/weights-synced"}]


def test_the_budget_shapes_readiness_and_the_router_and_extra_args_still_win() -> None:
    config = OperatorConfig(runtime_image="rt", sglang_image="sg", router_image="ro", weights_pause_budget_seconds=12)
    pool = typed_pool(sglangpool(router={"extraArgs": ["--health-failure-threshold", "99"]}))
    ready = container(pb.server_deployment(pool, config))["readinessProbe"]
    assert (ready["periodSeconds"], ready["failureThreshold"]) == (2, 23)
    args = container(pb.router_deployment(pool, config))["args"]
    assert args[args.index("--health-check-interval-secs") + 1] == "3"
    assert args[args.index("--health-check-timeout-secs") + 1] == str(ROUTER_HEALTH_TIMEOUT_S)
    assert args[-2:] == ["--health-failure-threshold", "99"]  # the user's flag comes last, so it wins
