"""Simulated engine: reproducibility, timing, length distributions, answers, cluster front, CLI."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import aiohttp
import pytest

from rollout_runtime.engines.answers import (
    arithmetic_answer,
    extract_boxed,
    regex_answer,
)
from rollout_runtime.engines.sim import (
    SimCluster,
    SimEngine,
    SimEngineConfig,
    start_sim_cluster_thread,
    start_sim_engine_thread,
)
from rollout_runtime.engines.textcodec import SyntheticCodec
from tests.engines.helpers import (
    REPO_ROOT,
    TINY_MODEL,
    EngineClient,
    free_port,
    wait_http,
)


def body(prompt: str, **sp: Any) -> dict[str, Any]:
    return {"text": prompt, "sampling_params": {"max_new_tokens": 256, **sp}, "return_logprob": True}


async def test_reproducible_per_prompt_multiset(client: EngineClient) -> None:
    """Same seed -> the same responses for the n samples of each prompt, whatever the order."""
    prompts = [f"What is {a}+{a + 3}?" for a in range(10, 14)]

    async def run(order: list[str]) -> dict[str, list[str]]:
        async with SimEngine(SimEngineConfig(seed=3)) as eng:
            outs = await asyncio.gather(*(client.generate(eng.url, body(p)) for p in order))
        got: dict[str, list[str]] = collections.defaultdict(list)
        for p, o in zip(order, outs):
            got[p].append(o["text"])
        return {p: sorted(v) for p, v in got.items()}

    order = [p for p in prompts for _ in range(4)]
    first = await run(order)
    second = await run(list(reversed(order)))
    assert first == second
    assert all(len(set(v)) > 1 for v in first.values()), "samples of one prompt must differ"
    async with SimEngine(SimEngineConfig(seed=4)) as eng:
        other = await client.generate(eng.url, body(prompts[0]))
    assert other["text"] not in first[prompts[0]]


async def test_sampling_seed_and_greedy_are_deterministic(client: EngineClient) -> None:
    async with SimEngine(SimEngineConfig(seed=1)) as eng:
        a = await client.generate(eng.url, body("hello", sampling_seed=42))
        b = await client.generate(eng.url, body("hello", sampling_seed=42))
        c = await client.generate(eng.url, body("hello", sampling_seed=43))
        g1 = await client.generate(eng.url, body("hello", temperature=0.0))
        g2 = await client.generate(eng.url, body("hello", temperature=0.0))
    assert a["output_ids"] == b["output_ids"] != c["output_ids"]
    assert g1["output_ids"] == g2["output_ids"]


async def test_length_distributions(client: EngineClient) -> None:
    async with SimEngine(SimEngineConfig(length_dist="fixed", length_median=20, answer_mode="none")) as eng:
        out = await client.generate(eng.url, body("x"))
        assert out["meta_info"]["completion_tokens"] == 20
        assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": 2}
        out = await client.generate(eng.url, body("x", max_new_tokens=7))
        assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 7}
    async with SimEngine(SimEngineConfig(length_dist="uniform", length_min=5, length_max=9, answer_mode="none")) as eng:
        outs = await asyncio.gather(*(client.generate(eng.url, body("y")) for _ in range(40)))
        lengths = {o["meta_info"]["completion_tokens"] for o in outs}
        assert lengths <= set(range(5, 10)) and len(lengths) >= 3
    cfg = SimEngineConfig(length_dist="lognormal", length_median=50, length_sigma=1.0, answer_mode="none")
    async with SimEngine(cfg) as eng:
        outs = await asyncio.gather(*(client.generate(eng.url, body(f"z{i}", max_new_tokens=4000)) for i in range(300)))
    lengths = sorted(o["meta_info"]["completion_tokens"] for o in outs)
    median = lengths[len(lengths) // 2]
    assert 35 <= median <= 70
    assert lengths[-1] > 4 * median, "lognormal must have a long tail"


async def test_answers_accuracy_and_group_mix(client: EngineClient) -> None:
    prompts = [f"What is {a}+{b}?" for a, b in zip(range(10, 50), range(60, 100))]
    for acc, expect in ((1.0, 1.0), (0.0, 0.0)):
        async with SimEngine(SimEngineConfig(answer_accuracy=acc, length_median=16)) as eng:
            outs = await asyncio.gather(*(client.generate(eng.url, body(p)) for p in prompts[:10]))
        right = [extract_boxed(o["text"]) == arithmetic_answer(p) for p, o in zip(prompts, outs)]
        assert sum(right) / len(right) == expect
    # A low concentration polarises prompts: some groups all right, some all wrong, some mixed.
    cfg = SimEngineConfig(answer_accuracy=0.5, answer_concentration=0.6, length_median=16)
    async with SimEngine(cfg) as eng:
        group = 8
        outs = await asyncio.gather(*(client.generate(eng.url, body(p)) for p in prompts for _ in range(group)))
    kinds = collections.Counter()
    for i, p in enumerate(prompts):
        rights = sum(extract_boxed(o["text"]) == arithmetic_answer(p) for o in outs[i * group : (i + 1) * group])
        kinds["all" if rights == group else "none" if rights == 0 else "mixed"] += 1
    assert kinds["all"] > 0 and kinds["none"] > 0 and kinds["mixed"] > 0, kinds


async def test_answer_regex_and_tokenizer_text(client: EngineClient, tiny_tokenizer: Any) -> None:
    cfg = SimEngineConfig(answer_mode="regex", answer_regex=r"label=(\w+)", answer_accuracy=1.0, tokenizer=str(TINY_MODEL))
    async with SimEngine(cfg) as eng:
        prompt = tiny_tokenizer.apply_chat_template(
            [{"role": "user", "content": "Say the word. label=banana"}], add_generation_prompt=True, tokenize=False
        )
        ids = tiny_tokenizer.encode(prompt, add_special_tokens=False)
        out = await client.generate(eng.url, {"input_ids": ids, "sampling_params": {"max_new_tokens": 200}})
    assert extract_boxed(out["text"]) == "banana"
    # Text and ids agree: the text is the tokenizer's decoding of the ids (minus the EOS).
    assert out["output_ids"][-1] == tiny_tokenizer.eos_token_id
    assert out["text"] == tiny_tokenizer.decode(out["output_ids"][:-1], skip_special_tokens=True)


def test_answer_helpers() -> None:
    assert arithmetic_answer("<|im_start|>user\nWhat is 37+45?<|im_end|>") == "82"
    assert arithmetic_answer("What is 90-12?") == "78"
    assert arithmetic_answer("no math here") is None
    assert extract_boxed("so \\boxed{1} then \\boxed{{a}b}") == "{a}b"
    assert extract_boxed("nothing") is None
    assert regex_answer("answer: 7, answer: 9", r"answer: (\d)") == "9"


async def test_synthetic_vocabulary_text_matches_ids(client: EngineClient) -> None:
    codec = SyntheticCodec(32000, 2)
    async with SimEngine(SimEngineConfig(length_median=30)) as eng:
        out = await client.generate(eng.url, {**body("What is 2+2?"), "return_text_in_logprobs": True})
    assert out["text"] == codec.decode(out["output_ids"][:-1])
    assert "".join(t for _, _, t in out["meta_info"]["output_token_logprobs"][:-1]) == out["text"]
    assert codec.decode(codec.encode("abc \\boxed{4}")) == "abc \\boxed{4}"


async def test_token_latency_ttft_and_abort_timing(client: EngineClient) -> None:
    cfg = SimEngineConfig(token_latency=0.01, ttft=0.1, length_dist="fixed", length_median=30, answer_mode="none")
    async with SimEngine(cfg) as eng:
        t0 = time.perf_counter()
        out = await client.generate(eng.url, body("q"))
        elapsed = time.perf_counter() - t0
        assert out["meta_info"]["completion_tokens"] == 30
        assert 0.38 <= elapsed < 1.5
        task = asyncio.create_task(client.generate(eng.url, body("q2", ignore_eos=True, max_new_tokens=1000)))
        await asyncio.sleep(0.35)
        t_abort = time.perf_counter()
        eng.abort(abort_all=True)
        out = await task
        assert time.perf_counter() - t_abort < 0.2, "abort must not wait for the next tick"
        assert out["meta_info"]["finish_reason"]["type"] == "abort"
        assert 15 <= out["meta_info"]["completion_tokens"] <= 35  # ~25 tokens after 0.35 s


async def test_max_running_requests_queue(client: EngineClient) -> None:
    cfg = SimEngineConfig(token_latency=0.01, length_dist="fixed", length_median=40, max_running_requests=2, answer_mode="none")
    async with SimEngine(cfg) as eng:
        tasks = [asyncio.create_task(client.generate(eng.url, body(f"p{i}"))) for i in range(5)]
        await client.wait_running(eng.url, 5)
        _, loads = await client.get(eng.url + "/v1/loads")
        load = loads["loads"][0]
        assert (load["num_running_reqs"], load["num_waiting_reqs"]) == (2, 3)
        await client.post(eng.url + "/abort_request", {"abort_all": True})
        outs = await asyncio.gather(*tasks)
    messages = collections.Counter(o["meta_info"]["finish_reason"]["message"] for o in outs)
    assert messages == {"Aborted": 2, "Abort in waiting queue": 3}


async def test_zero_latency_many_in_flight(client: EngineClient) -> None:
    """1000 zero-latency requests, 256 in flight: every one completes with its own full output.

    The per-request cost itself is a figure, not an assertion: benchmarks/runtime_overhead.py measures
    it against a bare client (timed unit tests only measure how loaded the machine is)."""
    async with SimEngine(SimEngineConfig(length_median=64, length_dist="fixed", answer_mode="none")) as eng:
        n = 1000
        sem = asyncio.Semaphore(256)

        async def one(i: int) -> dict:
            async with sem:
                return await client.generate(eng.url, {"input_ids": [5, 6, i], "sampling_params": {"max_new_tokens": 512},
                                                       "return_logprob": True})

        outs = await asyncio.gather(*(one(i) for i in range(n)))
    assert all(o["meta_info"]["finish_reason"]["type"] in ("stop", "length") for o in outs)
    assert all(len(o["meta_info"]["output_token_logprobs"]) == len(o["output_ids"]) == o["meta_info"]["completion_tokens"]
               for o in outs)
    assert len({o["meta_info"]["id"] for o in outs}) == n  # no two requests answered with the same state


async def test_cluster_front_round_robin_and_router_quirks(client: EngineClient) -> None:
    async with SimCluster(2, SimEngineConfig(length_median=8)) as cluster:
        status, workers = await client.get(cluster.router_url + "/workers")
        assert status == 200 and workers["total"] == 2
        assert sorted(w["url"] for w in workers["workers"]) == sorted(cluster.worker_urls)
        assert all(w["is_healthy"] and w["model_id"] == "kuberollout-sim" for w in workers["workers"])
        for i in range(4):
            await client.generate(
                cluster.router_url,
                {"text": f"What is {i}+1?", "sampling_params": {"max_new_tokens": 8, "custom_params": {"a": 1}}, "routing_key": "x"},
            )
        assert [len(e.recorded_requests) for e in cluster.engines] == [2, 2]
        sent = cluster.engines[0].recorded_requests[0]
        assert "routing_key" not in sent and "custom_params" not in sent["sampling_params"]
        assert sent["log_metrics"] is True  # the router's own defaults are added
        status, _ = await client.post(cluster.router_url + "/abort_request", {"abort_all": True})
        assert status == 404
        status, _ = await client.post(cluster.router_url + "/generate", {"text": ["a", "b"]})
        assert status == 422
        events = await client.stream(cluster.router_url, {"text": "What is 1+1?", "sampling_params": {"max_new_tokens": 8}})
        assert events[-1] == "[DONE]" and events[-2]["meta_info"]["finish_reason"] is not None
        for path in ("/health", "/readiness", "/health_generate", "/liveness"):
            status, _ = await client.get(cluster.router_url + path)
            assert status == 200
        status, loads = await client.get(cluster.router_url + "/get_loads")
        assert [w["load"] for w in loads["workers"]] == [-1, -1]


def test_thread_helpers_for_sync_code() -> None:
    handle = start_sim_engine_thread(SimEngineConfig(length_median=4), record_requests=8)
    try:
        req = urllib.request.Request(
            handle.url + "/generate",
            data=json.dumps({"text": "hi", "sampling_params": {"max_new_tokens": 4}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            out = json.loads(r.read())
        assert out["meta_info"]["completion_tokens"] <= 4
        assert handle.value.recorded_requests[-1]["text"] == "hi"
    finally:
        handle.stop()
    cluster = start_sim_cluster_thread(2, SimEngineConfig())
    try:
        with urllib.request.urlopen(cluster.url + "/workers", timeout=10) as r:
            assert json.loads(r.read())["total"] == 2
        assert len(cluster.value.worker_urls) == 2
    finally:
        cluster.stop()


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SimEngineConfig(length_min=10, length_max=5)
    with pytest.raises(ValueError):
        SimEngineConfig(answer_mode="regex")
    with pytest.raises(ValueError):
        SimEngineConfig(no_such_field=1)  # type: ignore[call-arg]


def test_cli_starts_workers_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout_runtime.engines.sim", "--port", str(port), "--workers", "2", "--token-latency", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/workers", timeout=5) as r:
            assert json.loads(r.read())["total"] == 2
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/generate",
            data=json.dumps({"text": "What is 1+2?", "sampling_params": {"max_new_tokens": 64}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert "\\boxed{" in json.loads(r.read())["text"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
    assert rc == 0, proc.stdout.read().decode() if proc.stdout else ""


async def test_front_forwards_disconnect(client: EngineClient) -> None:
    """Closing the client connection to the front aborts the request on the worker (like the router)."""
    cfg = SimEngineConfig(token_latency=0.01, length_dist="fixed", length_median=500, answer_mode="none")
    async with SimCluster(1, cfg) as cluster, aiohttp.ClientSession() as s:
        async def go() -> None:
            async with s.post(cluster.router_url + "/generate", json={"text": "x", "sampling_params": {"max_new_tokens": 600}}) as r:
                await r.read()

        task = asyncio.create_task(go())
        await client.wait_running(cluster.worker_urls[0], 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.wait_idle(cluster.worker_urls[0], timeout=5)


async def test_pause_continue_and_metrics(client: EngineClient) -> None:
    cfg = SimEngineConfig(token_latency=0.01, length_dist="fixed", length_median=300, answer_mode="none")
    async with SimEngine(cfg) as eng:
        running = asyncio.create_task(client.generate(eng.url, body("a")))
        await client.wait_running(eng.url, 1)
        status, _ = await client.post(eng.url + "/pause_generation", {"mode": "abort"})
        assert status == 200
        assert (await running)["meta_info"]["finish_reason"]["type"] == "abort"
        held = asyncio.create_task(client.generate(eng.url, body("b", max_new_tokens=3)))
        await asyncio.sleep(0.1)
        assert not held.done(), "new requests wait while generation is paused"
        await client.post(eng.url + "/continue_generation", {})
        assert (await held)["meta_info"]["completion_tokens"] == 3
        status, text = await client.get(eng.url + "/metrics")
        assert status == 200 and "sglang:num_requests_total" in text and "sglang:num_aborted_requests_total" in text
        # Real SGLang has no /get_weight_version: the served version is /model_info's weight_version.
        status, _ = await client.get(eng.url + "/get_weight_version")
        assert status == 404
        status, info = await client.get(eng.url + "/model_info")
        assert status == 200 and info["weight_version"] == "default"


async def test_weight_version_change_mid_request(client: EngineClient) -> None:
    """With ``abort_all_requests: false`` a running request keeps going and records both versions."""
    cfg = SimEngineConfig(token_latency=0.005, length_dist="fixed", length_median=80, answer_mode="none", weight_version="v1")
    async with SimEngine(cfg) as eng:
        task = asyncio.create_task(client.generate(eng.url, body("w")))
        await client.wait_running(eng.url, 1)
        await asyncio.sleep(0.1)
        await client.post(eng.url + "/update_weight_version", {"new_version": "v2", "abort_all_requests": False})
        out = await task
    meta = out["meta_info"]
    assert meta["weight_version"] == "v2"
    spans = meta["weight_versions"]
    assert [s["version"] for s in spans] == ["v1", "v2"]
    assert spans[0]["start"] == 0 and spans[0]["end"] == spans[1]["start"] > 0 and spans[1]["end"] == 80
