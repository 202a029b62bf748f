"""The runtime's own overhead, against a zero-latency simulated engine.

Sends the same requests two ways to the same engine process: with a bare aiohttp client
(the ceiling on this machine: nothing but HTTP and JSON), and through the runtime's
`generate_rollout` (groups, semaphore, tokenization, Sample bookkeeping, rewards, abort
at the end of the batch). Prints samples/s and CPU per sample for both, and the ratios.

Target (DESIGN.md): runtime >= 80% of the bare client's samples/s, <= 1 ms runtime CPU per
sample, at 512 requests in flight (256 groups x 8 samples).

The engine runs in its own process, pinned to one core where the machine has two or more,
so its CPU does not count against the client under test (pinned to the other core).

    python benchmarks/runtime_overhead.py [--groups 256] [--samples 8] [--concurrency 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(port: int, response_len: int, cpu: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rollout_runtime.cli", "sim-engine", "--port", str(port), "--token-latency", "0",
           "--length-dist", "fixed", "--length-median", str(response_len), "--seed", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sim engine exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("sim engine did not start")


def prompts(n: int) -> list[dict]:
    return [{"prompt": f"What is {10 + i % 80}+{20 + (i * 7) % 70}?", "label": str(30 + i % 80 + (i * 7) % 70)}
            for i in range(n)]


async def bare_client(url: str, payloads: list[dict], concurrency: int, rounds: int) -> list[tuple[float, float]]:
    """The ceiling: one warm keep-alive aiohttp session, a semaphore, JSON in and out, nothing else."""
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def one(payload: dict) -> None:
            async with sem:
                async with session.post(url, json=payload) as resp:
                    out = await resp.json()
                    assert out["meta_info"]["output_token_logprobs"] is not None

        await asyncio.gather(*(one(p) for p in payloads))  # warm-up: open the connections
        results = []
        for _ in range(rounds):
            w0, c0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(p) for p in payloads))
            results.append((time.perf_counter() - w0, time.process_time() - c0))
        return results


def measure(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=256)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=512)
    ap.add_argument("--response-len", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the figures as JSON here")
    opts = ap.parse_args()

    from rollout_runtime.config import RolloutConfig
    from rollout_runtime.data_source import RolloutDataSourceWithBuffer
    from rollout_runtime.misc import load_tokenizer
    from rollout_runtime.async_utils import run
    from rollout_runtime.sglang_rollout import GenerateState, generate_rollout

    cpus = sorted(os.sched_getaffinity(0))
    engine_cpu, client_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)
    port = free_port()
    engine = start_engine(port, opts.response_len, engine_cpu)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    n = opts.groups * opts.samples
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "prompts.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in prompts(opts.groups * opts.rounds)))
            tok_path = str(REPO / "examples" / "tiny-model")
            args = RolloutConfig(
                prompt_data=str(data), input_key="prompt", label_key="label", hf_checkpoint=tok_path,
                sglang_router_url=f"http://127.0.0.1:{port}", sglang_server_concurrency=opts.concurrency,
                rollout_batch_size=opts.groups, n_samples_per_prompt=opts.samples,
                rollout_max_response_len=opts.response_len, rm_type="random", num_rollout=opts.rounds,
                output_dir=tmp,
            )
            tokenizer = load_tokenizer(tok_path)
            sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "max_new_tokens": opts.response_len,
                        "no_stop_trim": True, "skip_special_tokens": False}
            payloads = [{"input_ids": tokenizer.encode(r["prompt"], add_special_tokens=False), "sampling_params": sampling,
                         "return_logprob": True} for r in prompts(opts.groups) for _ in range(opts.samples)]
            url = f"http://127.0.0.1:{port}/generate"

            bare = asyncio.run(bare_client(url, payloads, opts.concurrency, opts.rounds))

            source = RolloutDataSourceWithBuffer(args)
            generate_rollout(args, -1, source)  # warm-up: tokenizer, connections
            runtime = []
            for rid in range(opts.rounds):
                runtime.append(measure(lambda: generate_rollout(args, rid, source)))
            run(GenerateState(args).aclose())
    finally:
        engine.terminate()
        engine.wait(10)

    def figures(samples: list[tuple[float, float]]) -> tuple[float, float]:
        wall = min(w for w, _ in samples)
        cpu = min(c for _, c in samples)
        return n / wall, cpu / n * 1000

    bare_sps, bare_cpu = figures(bare)
    rt_sps, rt_cpu = figures(runtime)
    ratio = rt_sps / bare_sps
    print(f"runtime overhead at {opts.concurrency} in flight: {opts.groups} groups x {opts.samples} samples "
          f"= {n} requests/round, {opts.response_len} tokens each, best of {opts.rounds} rounds")
    print(f"  engine pinned to CPU {engine_cpu}, client to CPU {client_cpu}")
    print(f"  {'client':<16}{'samples/s':>12}{'CPU ms/sample':>16}")
    print(f"  {'bare aiohttp':<16}{bare_sps:>12,.0f}{bare_cpu:>16.3f}")
    print(f"  {'kuberollout':<16}{rt_sps:>12,.0f}{rt_cpu:>16.3f}")
    print(f"  throughput ratio {ratio:.2f} (target >= 0.80): {'OK' if ratio >= 0.8 else 'MISSED'}")
    print(f"  runtime CPU per sample {rt_cpu:.3f} ms (target <= 1 ms): {'OK' if rt_cpu <= 1.0 else 'MISSED'}")
    if opts.json:
        Path(opts.json).write_text(json.dumps({"bare_samples_per_s": bare_sps, "bare_cpu_ms": bare_cpu,
                                               "runtime_samples_per_s": rt_sps, "runtime_cpu_ms": rt_cpu,
                                               "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
