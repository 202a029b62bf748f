"""Live weights on the test cluster: spec.weights rolled into running simulated servers, for real.

Simulated servers take `LOAD_S` per weight load (`--weight-load-seconds`). The operator pauses them
(retract), loads, continues, all at once; the real sglang-router keeps routing; a RolloutJob with
poolRef keeps generating; the committed samples' weight-version spans say which version made each
token. New servers (scale-up, a restarted container) stay out of the router until they serve the
pool's version: the readiness gate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.operator.kube_helpers import apply, get_json, status
from tests.operator.live_weights import (
    DEFAULT,
    ServerWatch,
    assert_no_traffic_before_current,
    assert_spans_follow_the_updates,
    batch_rows,
    get_column,
    patch_weights,
    pool_events,
    served_version,
    weights_dir,
    weights_synced,
)
from tests.operator.real_pool import RealPool, apply_pool_job, is_ready, simulated_pool

pytestmark = pytest.mark.cluster

LOAD_S = 2.0
ENGINE_ARGS = ["--token-latency", "0.03", "--length-median", "24", "--weight-load-seconds", str(LOAD_S)]
BATCH, SAMPLES = 4, 2


def start_job(pool: RealPool, name: str, dataset: str, out: Path, rollouts: int) -> None:
    apply_pool_job(pool, name, dataset, out, batch=BATCH, samples=SAMPLES, rollouts=rollouts)
    wait_rollout(pool, name, 1)


def job(pool: RealPool, name: str) -> dict[str, Any]:
    return status(pool.cluster, pool.namespace, "rj", name)


def wait_rollout(pool: RealPool, name: str, rollout_id: int, timeout: float = 240) -> int:
    st = pool.wait(f"job {name} to commit rollout {rollout_id}",
                   lambda: (s := job(pool, name)).get("rolloutId", -1) >= rollout_id and s, timeout)
    assert st["phase"] == "Running", st
    return int(st["rolloutId"])


def wait_finished(pool: RealPool, name: str, rollouts: int) -> None:
    final = pool.wait(f"job {name} to finish", lambda: (s := job(pool, name)).get("phase")
                      in ("Succeeded", "Failed") and s, timeout=400)
    assert final["phase"] == "Succeeded" and final["rolloutId"] == rollouts - 1, final


def versions(pool: RealPool, ready_only: bool = True) -> dict[str, str]:
    return {p["metadata"]["name"]: served_version(pool.server_url(p)) for p in pool.server_pods(ready_only)}


def wait_synced(pool: RealPool, version: int, replicas: int, timeout: float = 120) -> dict[str, Any]:
    def synced() -> dict[str, Any] | None:
        st = pool.status()
        cond = next((c for c in st.get("conditions") or [] if c["type"] == "WeightsSynced"), {})
        ok = (st.get("weightVersion") == version and cond.get("status") == "True"
              and st.get("weightsUpdatedReplicas") == replicas and len(pool.server_pods(True)) == replicas)
        return st if ok else None

    return pool.wait(f"pool {pool.name} synced at version {version} on {replicas} servers", synced, timeout)


def scale_up(pool: RealPool, replicas: int, *, version: int) -> str:
    """Scale the pool up by one server; once it is synced and routed, the new pod's name."""
    old = {p["metadata"]["name"] for p in pool.server_pods()}
    pool.scale(replicas)
    wait_synced(pool, version, replicas)
    pool.wait_workers(replicas)
    return next(p["metadata"]["name"] for p in pool.server_pods() if p["metadata"]["name"] not in old)


def test_a_new_version_rolls_into_a_running_pool_under_load(real_pool: Any, dataset: str, tmp_path: Path) -> None:
    out, rollouts = tmp_path / "out", 20
    pool: RealPool = real_pool("sim", replicas=3, engine_args=ENGINE_ARGS)
    assert get_column(pool, "WEIGHTS") == "0" and weights_synced(pool)["status"] == "True"
    start_job(pool, "run", dataset, out, rollouts)
    before = int(job(pool, "run")["rolloutId"])
    step1 = weights_dir(tmp_path, "step_1")
    workers_before = pool.worker_urls()

    patched = patch_weights(pool, path=step1, version=1)
    pool.wait("kubectl get sgp to show WEIGHTS 1", lambda: get_column(pool, "WEIGHTS") == "1",
              timeout=LOAD_S + 30)
    took = time.monotonic() - patched
    after = int(job(pool, "run")["rolloutId"])
    assert took <= LOAD_S + 2, f"WEIGHTS showed 1 after {took:.2f}s (load {LOAD_S}s + 2s allowed)"
    assert set(versions(pool).values()) == {"1"} and len(versions(pool)) == 3
    st = pool.status()
    assert st["weightsUpdatedReplicas"] == 3 and weights_synced(pool)["reason"] == "Synced"
    assert st["lastWeightUpdate"]["version"] == 1 and st["lastWeightUpdate"]["servers"] == 3
    assert LOAD_S <= st["lastWeightUpdate"]["maxPauseSeconds"] < LOAD_S + 2
    (event,) = pool_events(pool, "WeightsUpdated")
    assert "3 server(s)" in event["message"] and "longest pause" in event["message"]
    # The router kept every server through the update, and nothing restarted.
    assert pool.worker_urls() == workers_before
    assert all(c.get("restartCount") == 0 for p in pool.server_pods() for c in p["status"]["containerStatuses"])

    # The job kept running to the end; every committed token came from a version being served.
    wait_finished(pool, "run", rollouts)
    rows = batch_rows(pool, "run", out)
    assert sorted(rows) == list(range(rollouts))
    assert_spans_follow_the_updates(rows, [DEFAULT, "1"], {DEFAULT: (0, before), "1": (after + 2, rollouts - 1)})
    assert after + 2 < rollouts - 1, "the update came too late in the run to check the rollouts after it"


def test_new_servers_take_traffic_only_once_they_serve_the_current_version(real_pool: Any, dataset: str,
                                                                          tmp_path: Path) -> None:
    out, rollouts = tmp_path / "out", 500  # more than it will get to: the test stops looking before the end
    # round_robin: every registered server gets traffic (cache_aware keeps similar prompts where they were).
    pool: RealPool = real_pool("grow", replicas=2, engine_args=[*ENGINE_ARGS[:-1], "3"], router={"policy": "round_robin"})
    start_job(pool, "grow", dataset, out, rollouts)
    with ServerWatch(pool) as watch:
        # Scale up while an update is loading: the new server waits for it, then gets version 1 itself.
        patch_weights(pool, path=weights_dir(tmp_path, "step_1"), version=1)
        pool.wait("the update to start", lambda: weights_synced(pool).get("reason") == "Updating", timeout=30)
        during = scale_up(pool, 3, version=1)
        settled_1 = wait_rollout(pool, "grow", int(job(pool, "grow")["rolloutId"]) + 1)
        # Scale up after the update: the new server is brought to version 1 before it is let in.
        later = scale_up(pool, 4, version=1)
        last = wait_rollout(pool, "grow", int(job(pool, "grow")["rolloutId"]) + 2)
    for pod in (during, later):
        assert_no_traffic_before_current(watch, pod, "1")
        assert any(o.requests for o in watch.of(pod)), f"{pod} never took a request once in the pool"
    rows = {r: samples for r, samples in batch_rows(pool, "grow", out).items() if r <= last}
    assert sorted(rows) == list(range(last + 1))
    assert_spans_follow_the_updates(rows, [DEFAULT, "1"], {"1": (settled_1 + 1, last)})


def test_a_server_killed_mid_update_recovers_at_the_current_version(real_pool: Any, tmp_path: Path) -> None:
    pool: RealPool = real_pool("kill", replicas=3, engine_args=[*ENGINE_ARGS[:-1], "4"])
    victim = pool.server_pods()[0]
    with ServerWatch(pool, interval=0.05) as watch:
        patch_weights(pool, path=weights_dir(tmp_path, "step_1"), version=1)
        pool.wait("the load to start", lambda: weights_synced(pool).get("reason") == "Updating", timeout=30)
        time.sleep(1.0)  # inside the 4 s load
        pool.kill_server(victim)
        wait_synced(pool, 1, 3, timeout=180)
    # readyReplicas comes from the Deployment's status, which the deployment controller updates after the
    # pods turn Ready (what wait_synced checks): the pool's status catches up a moment later.
    final = pool.wait("the pool's status to count 3 ready servers at version 1",
                      lambda: (st := pool.status()).get("readyReplicas") == 3 and st.get("weightVersion") == 1 and st,
                      timeout=60)
    assert final["readyReplicas"] == 3
    restarted = get_json(pool.cluster, "pod", victim["metadata"]["name"], "-n", pool.namespace)
    assert restarted["status"]["containerStatuses"][0]["restartCount"] == 1
    assert served_version(pool.server_url(restarted)) == "1"
    # Never Synced while a Ready server served another version: every status that said Synced is
    # followed by observations of Ready servers at that version only.
    for at, st in watch.statuses:
        cond = next((c for c in st.get("conditions") or [] if c["type"] == "WeightsSynced"), {})
        if cond.get("status") == "True" and st.get("weightVersion") == 1:
            stale = [o for o in watch.observations if o.at > at and o.ready and o.version not in (None, "1")]
            assert not stale, f"Synced at {at} while {stale[:3]}"
    # The restarted container (back on the model's own weights) was not let in before it served 1.
    reborn = [o for o in watch.of(victim["metadata"]["name"]) if o.restarts == 1 and o.version is not None]
    first = next(o for o in reborn if o.version == "1")
    assert not any(o.ready for o in reborn if o.at < first.at)


def test_a_bad_weights_path_is_reported_and_changes_nothing(real_pool: Any, tmp_path: Path) -> None:
    pool: RealPool = real_pool("bad", replicas=2, engine_args=ENGINE_ARGS)
    pods = pool.server_pods()
    patch_weights(pool, path=str(tmp_path / "missing"), version=1)
    cond = pool.wait("UpdateFailed", lambda: (c := weights_synced(pool)).get("reason") == "UpdateFailed" and c,
                     timeout=60)
    assert cond["status"] == "False" and "Cannot find any model weights" in cond["message"]
    assert all(p["metadata"]["name"] in cond["message"] for p in pods)
    (event,) = pool.wait("the UpdateFailed event", lambda: pool_events(pool, "UpdateFailed"), timeout=30)
    assert event["type"] == "Warning" and "missing" in event["message"]
    # The servers keep serving the old weights, nothing restarted, the pool stays Ready.
    assert versions(pool) == {p["metadata"]["name"]: DEFAULT for p in pods}
    st = pool.status()
    assert st["phase"] == "Ready" and st["readyReplicas"] == 2 and st.get("weightVersion") == 0
    assert [p["metadata"]["uid"] for p in pool.server_pods(True)] == [p["metadata"]["uid"] for p in pods]
    assert all(c.get("restartCount") == 0 for p in pool.server_pods() for c in p["status"]["containerStatuses"])
    # Fixing the path (same version) is tried at once.
    patch_weights(pool, path=weights_dir(tmp_path, "step_1"), version=1)
    wait_synced(pool, 1, 2, timeout=60)


def test_a_pool_without_a_router_still_updates_every_server(operator: Any, kro_namespace: str,
                                                           process_kubelet: Any, tmp_path: Path) -> None:
    body = simulated_pool("solo", process_kubelet, replicas=2, engine_args=ENGINE_ARGS, router={"enabled": False})
    apply(operator.cluster, kro_namespace, body)
    pool = RealPool(operator.cluster, process_kubelet, kro_namespace, "solo")
    pool.wait("the pool Ready", lambda: pool.status().get("readyReplicas") == 2 and len(pool.server_pods(True)) == 2,
              timeout=240)
    patch_weights(pool, path=weights_dir(tmp_path, "step_3"), version=3)
    wait_synced(pool, 3, 2, timeout=60)
    assert set(versions(pool).values()) == {"3"}
    assert all(is_ready(p) for p in pool.server_pods())
