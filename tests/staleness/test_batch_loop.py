"""Bounded staleness in the batch loop, against simulated engines over HTTP (weights loaded with the weights API).

What is checked is what a trainer relies on: a rollout that is ahead waits (and says so) until the served
version admits it; no token older than the bound reaches a batch, whether it comes from a recycled partial
group or from a server that fell behind; and a group an engine interrupts for a weight update continues
instead of landing in the batch half-done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rollout_runtime.async_utils import run
from rollout_runtime.contract import WeightWait
from rollout_runtime.data_source import RolloutDataSourceWithBuffer
from rollout_runtime.engines.sim import start_sim_cluster_thread
from rollout_runtime.rollout.generate import GenerateState, close_http
from rollout_runtime.sglang_rollout import generate_rollout, last_rollout_stats
from rollout_runtime.staleness.rule import token_versions
from rollout_runtime.types import Sample, flatten
from rollout_runtime.weights import update_weights
from tests.conftest import write_jsonl
from tests.runtime.test_rollout_sim import make_args, sim_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster() -> Iterator[Any]:
    """Two simulated engines behind a router-style front, fresh per test (weight versions are per test)."""
    handle = start_sim_cluster_thread(2, sim_config(token_latency=0.002, weight_load_seconds=0.05))
    yield handle
    handle.stop()


@pytest.fixture
def dataset(tmp_path, arith_rows) -> str:
    return write_jsonl(tmp_path / "arith.jsonl", arith_rows)


def publish(url: str, tmp_path: Any, version: int, **kw: Any) -> None:
    weights = tmp_path / f"v{version}"
    weights.mkdir(exist_ok=True)
    report = run(update_weights([url], str(weights), version, **kw))
    assert report.ok, report.summary()


def versions_of(groups: list[list[Sample]]) -> set[int]:
    return {v for g in groups for s in flatten(g) for v in token_versions(s)}


def in_background(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_a_rollout_ahead_of_the_policy_waits_reports_and_resumes(cluster, dataset, tmp_path):
    args = make_args(cluster.url, dataset, max_staleness=0, weight_poll_interval=0.05)
    reports: list[WeightWait] = []
    gate = GenerateState(args).weight_gate
    gate.reporter, gate.attempt = reports.append, 1
    thread, out = in_background(generate_rollout, args, 1, RolloutDataSourceWithBuffer(args))
    deadline = time.monotonic() + 30
    while not reports and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reports and reports[0].waiting_for == 1 and reports[0].served == 0 and reports[0].rollout_id == 1
    assert reports[0].attempt == 1 and reports[0].since
    time.sleep(0.3)
    assert thread.is_alive(), "rollout 1 with maxStaleness 0 must wait for version 1"
    assert cluster.value.recorded_requests == [], "no group may start under version 0"
    publish(cluster.url, tmp_path, 1)
    thread.join(60)
    assert "error" not in out, out.get("error")
    groups = out["value"].samples
    assert len(groups) == 4 and versions_of(groups) == {1}
    assert reports[-1].waiting_for is None and reports[-1].served == 1
    # Called as slime calls it (no runner in front), the rollout function itself waited before its first refill.
    assert last_rollout_stats(args).weight_wait_seconds >= 0.3
    # Free-running, the same rollout starts at once under version 1 (and would under 0).
    free = make_args(cluster.url, dataset)
    assert len(generate_rollout(free, 7, RolloutDataSourceWithBuffer(free)).samples) == 4
    run(close_http(args))


@pytest.mark.parametrize("policy", ["regenerate", "drop"])
def test_recycled_groups_older_than_the_bound(cluster, dataset, tmp_path, policy):
    """A recycled partial group with tokens from version 0 meets rollout 3 under maxStaleness 1 (oldest allowed: 2)."""
    publish(cluster.url, tmp_path, 3)
    args = make_args(cluster.url, dataset, max_staleness=1, stale_group_policy=policy, partial_rollout=True)
    source = RolloutDataSourceWithBuffer(args)
    old = source.get_samples(1)[0]
    for s in old:
        s.tokens = s.tokens or [1, 2, 3]
        s.tokens += [5, 6]
        s.response, s.response_length, s.status = "ab", 2, Sample.Status.ABORTED
        s.rollout_log_probs, s.loss_mask = [-0.1, -0.2], [1, 1]
        s.weight_version_spans = [{"version": "default", "start": 0, "end": 2}]
        s.weight_versions = ["default"]
    fresh = source.get_samples(1)[0]  # a recycled group from version 3: within the bound, continued as it is
    for s in fresh:
        s.tokens = s.tokens or [1, 2, 3]
        s.tokens += [7]
        s.response, s.response_length, s.status = "c", 1, Sample.Status.ABORTED
        s.rollout_log_probs, s.loss_mask = [-0.3], [1]
        s.weight_version_spans = [{"version": "3", "start": 0, "end": 1}]
    source.add_samples([old, fresh])
    groups = generate_rollout(args, 3, source).samples
    stats = last_rollout_stats(args)
    assert len(groups) == 4 and min(versions_of(groups)) >= 2
    indices = {s.index for g in groups for s in g}
    assert {s.index for s in fresh} <= indices  # continued: its version-3 tokens kept
    kept_fresh = [s for g in groups for s in g if s.index == fresh[0].index][0]
    assert kept_fresh.weight_version_spans[0] == {"version": "3", "start": 0, "end": 1}
    assert stats.stale == 4 and stats.wasted_tokens >= 8
    if policy == "regenerate":  # restarted from its prompt: in the batch, without its version-0 tokens
        again = [s for g in groups for s in g if s.index == old[0].index][0]
        assert again.weight_version_spans[0]["start"] == 0 and again.weight_version_spans[0]["version"] == "3"
    else:
        assert not {s.index for s in old} & indices
    run(close_http(args))


def test_a_server_behind_the_others_never_reaches_a_batch(cluster, dataset, tmp_path):
    """The gate admitted rollout 5 (served 5), then one server went back to version 0 (as a restarted server
    would): its tokens are caught, the rollout waits until it is on 5 again, and the batch holds only version 5."""
    publish(cluster.url, tmp_path, 5)
    args = make_args(cluster.url, dataset, max_staleness=0, weight_poll_interval=0.05)
    gate = GenerateState(args).weight_gate
    run(gate.refresh())
    assert gate.served == 5
    behind = cluster.value.worker_urls[1]
    run(update_weights([behind], str(tmp_path / "v5"), 0))
    thread, out = in_background(generate_rollout, args, 5, RolloutDataSourceWithBuffer(args))
    time.sleep(1.0)
    publish(behind, tmp_path, 5)
    thread.join(60)
    assert "error" not in out, out.get("error")
    groups = out["value"].samples
    assert len(groups) == 4 and versions_of(groups) == {5}
    assert last_rollout_stats(args).stale > 0  # it did catch version-0 tokens on the way
    run(close_http(args))


def test_groups_interrupted_by_a_weight_update_continue(dataset, tmp_path):
    """A weight update paused with `abort` returns running requests half-done; they continue under the new
    version (two spans), and none is in the batch unfinished."""
    handle = start_sim_cluster_thread(2, sim_config(token_latency=0.01, length_dist="uniform", length_min=30,
                                                    length_max=60))
    try:
        args = make_args(handle.url, dataset, rollout_max_response_len=64)
        thread, out = in_background(generate_rollout, args, 0, RolloutDataSourceWithBuffer(args))
        time.sleep(0.25)
        publish(handle.url, tmp_path, 1, pause_mode="abort")
        thread.join(60)
        assert "error" not in out, out.get("error")
        samples = [s for g in out["value"].samples for s in g]
        assert all(s.status in (Sample.Status.COMPLETED, Sample.Status.TRUNCATED) for s in samples)
        assert all(s.reward is not None for s in samples)
        spanned = [s for s in samples if {sp["version"] for sp in s.weight_version_spans} == {"default", "1"}]
        assert spanned, "some sample must have tokens from both versions"
        for s in spanned:
            assert s.weight_version_spans[-1]["end"] == s.response_length == len(s.rollout_log_probs)
        run(close_http(args))
    finally:
        handle.stop()
