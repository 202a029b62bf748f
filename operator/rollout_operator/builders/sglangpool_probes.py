"""Server probes, the weights readiness gate, and the router's health checks: sized for planned pauses.

A weight update pauses every server of a pool at once for as long as the load takes, up to the
operator's pause budget (`--weights-pause-budget-seconds`, 300 s by default). While paused, real
SGLang 0.5.23 answers `/health` and `/health_generate` with 503 after 20 s (they run a one-token
generation that waits behind the pause) and `/ready` with 503, but it keeps accepting requests: they
wait and run when it continues. So:

- **Liveness: tcpSocket** on the server port. It never goes through the scheduler, so a paused or
  loading server is never restarted. A server whose HTTP listener is gone is restarted after
  `LIVENESS_PERIOD_S * LIVENESS_FAILURES`. A hung scheduler is SGLang's own watchdog's job
  (`--watchdog-timeout`, 300 s: a forward batch that takes longer crashes the server, and the
  kubelet restarts it).
- **Readiness: `/health_generate`**, a real generation, with a failure window longer than the pause
  budget: a planned pause never makes a server NotReady, a server that cannot generate for longer
  than that does go NotReady. Keeping paused servers Ready is deliberate: the whole pool pauses at
  once, so dropping them would leave the router with no server at all (every request failing
  instead of waiting), and sglang-router 0.3.2 does not drop a registered pod on NotReady anyway.
- **Startup: `/health_generate`** with `startupTimeoutSeconds` to load the model, as before.
- **Readiness gate `kuberollout.io/weights-synced`**: a new server (scale-up, a replaced pod, a
  restarted container) is not Ready, so neither the router's discovery nor the Service sends it
  traffic, until the operator has loaded the pool's current weights into it.
- **The router's health checks** (`/health` every interval, a worker marked unhealthy after
  `threshold` failures) get the same window, so a planned pause does not take workers out of
  rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rollout_operator.api.sglangpool_types import SGLangPoolSpec
from rollout_operator.constants import WEIGHTS_GATE

#: The startup probe's period (its failure threshold is startupTimeoutSeconds / this).
STARTUP_PERIOD_S = 10
LIVENESS_PERIOD_S = 30
LIVENESS_TIMEOUT_S = 10
LIVENESS_FAILURES = 5
#: SGLang's own bound on a health check (`SGLANG_HEALTH_CHECK_TIMEOUT`, 20 s) plus slack.
HEALTH_GENERATE_TIMEOUT_S = 30
#: How many probe periods fit in one pause budget: the period is the budget over this, within bounds.
READINESS_STEPS = 10
MAX_READINESS_PERIOD_S = 30
ROUTER_HEALTH_STEPS = 5
MAX_ROUTER_HEALTH_INTERVAL_S = 60
ROUTER_HEALTH_TIMEOUT_S = 5


@dataclass(frozen=True)
class PauseTolerance:
    """Periods and thresholds that outlast a pause of `budget_s` seconds (pure arithmetic, for tests and docs).

    The kubelet (and the router) run one probe at a time, at most once per period, so a probe that
    may take up to `timeout` fails at most `floor((budget + timeout) / period) + 1` times in a row
    during a pause (one started just before the pause fails too); the thresholds are one more.
    """

    budget_s: float
    readiness_period_s: int
    readiness_failures: int
    router_interval_s: int
    router_failures: int

    @classmethod
    def for_budget(cls, budget_s: float) -> PauseTolerance:
        readiness = min(MAX_READINESS_PERIOD_S, max(1, math.ceil(budget_s / READINESS_STEPS)))
        router = min(MAX_ROUTER_HEALTH_INTERVAL_S, max(1, math.ceil(budget_s / ROUTER_HEALTH_STEPS)))
        return cls(budget_s=budget_s,
                   readiness_period_s=readiness,
                   readiness_failures=math.floor((budget_s + HEALTH_GENERATE_TIMEOUT_S) / readiness) + 2,
                   router_interval_s=router,
                   router_failures=math.floor((budget_s + ROUTER_HEALTH_TIMEOUT_S) / router) + 2)

    @property
    def readiness_window_s(self) -> int:
        """The shortest time of failing readiness probes that makes a server NotReady."""
        return (self.readiness_failures - 1) * self.readiness_period_s

    @property
    def router_window_s(self) -> int:
        """The shortest time of failing health checks after which the router stops using a worker."""
        return (self.router_failures - 1) * self.router_interval_s


def server_probes(spec: SGLangPoolSpec, budget_s: float) -> dict[str, Any]:
    """startupProbe, readinessProbe and livenessProbe of a server container."""
    tolerance = PauseTolerance.for_budget(budget_s)

    def generate(period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": "/health_generate", "port": "http"}, "periodSeconds": period,
                "timeoutSeconds": HEALTH_GENERATE_TIMEOUT_S, "failureThreshold": failures}

    return {
        "startupProbe": generate(STARTUP_PERIOD_S, max(1, math.ceil(spec.startup_timeout_seconds / STARTUP_PERIOD_S))),
        "readinessProbe": generate(tolerance.readiness_period_s, tolerance.readiness_failures),
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": LIVENESS_PERIOD_S,
                          "timeoutSeconds": LIVENESS_TIMEOUT_S, "failureThreshold": LIVENESS_FAILURES},
    }


def readiness_gates() -> list[dict[str, str]]:
    """The server pods' readiness gate: Ready only once the operator has loaded the pool's weights."""
    return [{"conditionType": WEIGHTS_GATE}]


def router_health_args(budget_s: float) -> list[str]:
    """sglang-router 0.3.2 health-check flags that outlast a planned pause."""
    tolerance = PauseTolerance.for_budget(budget_s)
    return ["--health-check-interval-secs", str(tolerance.router_interval_s),
            "--health-failure-threshold", str(tolerance.router_failures),
            "--health-check-timeout-secs", str(ROUTER_HEALTH_TIMEOUT_S)]
