"""Bounded staleness on the test cluster: a RolloutJob with poolRef and maxStaleness 1, driven by a trainer.

The pool runs for real (simulated servers and the real router as process pods, live weights through
the operator); the runtime reads the pool's `status.weightVersion` with its own ServiceAccount. The
trainer is this test: it reads batch k with `RolloutReader.from_rolloutjob` and publishes version
k+1 with `publish_weights` (a merge patch of spec.weights). Rollout N may start only under version
N - 1, so after each publish the job commits exactly one more rollout and waits again, and
`kubectl get rj` shows it: Running, REASON WaitingForWeights, WAITS-FOR the version it needs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rollout_runtime.reader import RolloutReader
from rollout_runtime.staleness.rule import token_versions
from rollout_runtime.types import flatten
from rollout_runtime.weights.publish import publish_weights
from tests.operator.kube_helpers import condition, status
from tests.operator.live_weights import weights_dir
from tests.operator.real_pool import RealPool, apply_pool_job

pytestmark = pytest.mark.cluster

ENGINE_ARGS = ["--token-latency", "0.01", "--length-median", "16", "--weight-load-seconds", "0.3"]
BATCH, SAMPLES, ROLLOUTS, ETA = 4, 2, 5, 1


def job(pool: RealPool, name: str) -> dict[str, Any]:
    return status(pool.cluster, pool.namespace, "rj", name)


def wide_row(pool: RealPool, name: str) -> dict[str, str]:
    """`kubectl get rj NAME -o wide` as {column: value}."""
    lines = pool.cluster.kubectl("get", "rj", name, "-n", pool.namespace, "-o", "wide").stdout.splitlines()
    return dict(zip(lines[0].split(), lines[1].split()))


def wait_waiting(pool: RealPool, name: str, rollout_id: int, version: int) -> dict[str, Any]:
    """The job committed `rollout_id` and waits for `version` before rollout_id + 1; its status then."""
    def waiting() -> dict[str, Any] | None:
        st = job(pool, name)
        ok = st.get("reason") == "WaitingForWeights" and st.get("waitingForWeightVersion") == version
        return st if ok and st.get("rolloutId") == rollout_id else None

    return pool.wait(f"job {name} to commit rollout {rollout_id} and wait for version {version}", waiting, 120)


def test_a_pool_job_with_max_staleness_waits_for_the_trainer_and_resumes(
        real_pool: Any, dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool: RealPool = real_pool("stale", replicas=2, engine_args=ENGINE_ARGS)
    out = tmp_path / "out"
    apply_pool_job(pool, "rl", dataset, out, batch=BATCH, samples=SAMPLES, rollouts=ROLLOUTS, maxStaleness=ETA)

    # Version 0 admits rollouts 0 and 1; rollout 2 needs version 1: the job waits, visibly, and commits nothing.
    st = wait_waiting(pool, "rl", 1, 1)
    assert st["phase"] == "Running" and st["servedWeightVersion"] == 0, st
    cond = condition(st, "WaitingForWeights")
    assert cond["status"] == "True" and "rollout 2 waits for weight version 1" in cond["message"], cond
    row = wide_row(pool, "rl")
    assert (row["PHASE"], row["REASON"], row["WAITS-FOR"], row["WEIGHTS"]) == ("Running", "WaitingForWeights", "1",
                                                                               "0"), row
    time.sleep(3.0)  # several of the runtime's readings of the pool: still nothing beyond rollout 1
    assert job(pool, "rl")["rolloutId"] == 1

    # The trainer: batch k, then version k+1; each publish lets exactly one more rollout through.
    monkeypatch.setenv("KUBECONFIG", str(pool.cluster.kubeconfig))
    reader = RolloutReader.from_rolloutjob("rl", pool.namespace, max_poll_interval=0.2)
    for k in range(ROLLOUTS):
        groups = reader.get(k, timeout=120)
        assert len(groups) == BATCH and all(len(g) == SAMPLES for g in groups)
        oldest = min(v for g in groups for s in flatten(g) for v in token_versions(s))
        assert oldest >= k - ETA, f"batch {k} holds a token of version {oldest}"
        published = publish_weights(pool.name, weights_dir(tmp_path, f"step_{k + 1}"), k + 1,
                                    namespace=pool.namespace, wait=True, timeout=60, poll_interval=0.1)
        assert published.served == k + 1
        if k + 3 < ROLLOUTS:  # rollout k+2 is admitted now; k+3 needs version k+2, not published yet
            st = wait_waiting(pool, "rl", k + 2, k + 2)
            assert st["phase"] == "Running" and st["servedWeightVersion"] == k + 1, st

    final = pool.wait("job rl to finish", lambda: (s := job(pool, "rl")).get("phase") in ("Succeeded", "Failed") and s,
                      timeout=120)
    assert final["phase"] == "Succeeded" and final["rolloutId"] == ROLLOUTS - 1, final
    assert "waitingForWeightVersion" not in final
    assert condition(final, "WaitingForWeights")["status"] == "False"
    # The last batch's versions, in status: rollout 4 started under version 3 at the oldest.
    assert ROLLOUTS - 1 - ETA <= final["weightVersionMin"] <= final["weightVersionMax"] <= ROLLOUTS, final
    assert final["stale"] == 0, final  # no recycled group here: nothing had to be regenerated
