"""The RL loop's overlap: step time against max(train, generate), for maxStaleness 0, 1 and 2.

A trainer and `rollout-runtime run` take turns on the same policy versions: the trainer reads batch k
(`RolloutReader`), trains for a fixed time (a sleep: `--train-seconds`), and publishes version k+1 to
simulated engines (`publish_weights`: pause, a load of `--weight-load-seconds`, continue). The runtime
generates with `--max-staleness` η, so rollout N waits for version N − η.

Per η it prints, over the steady-state steps (the first `--warmup` are left out):
- step time: the trainer's wall time per step (batch read to batch read);
- train: its own busy time per step (training + publishing), generate: the runtime's generation time per
  rollout (its commits' `rollout/generate_seconds`), and step / max(train, generate): 1.0 is perfect overlap;
- trainer idle: the fraction of wall time the trainer waited for a batch; rollout idle: the fraction the
  runtime waited for weights (its commits' `rollout/weight_wait_seconds`).

Target (DESIGN.md): with maxStaleness 1, step time <= 1.10 x max(train, generate). η = 0 is the synchronous
loop (step ~ train + generate); η = 2 buys nothing more when train and generate are steady.

    python benchmarks/rl_loop.py [--train-seconds 1.0] [--steps 12] [--staleness 0 1 2] [--token-latency 0.004]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def start_engines(opts: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """Simulated engines behind their router-style front, in their own process (the trainer's sleeps and the
    runtime's work do not slow them down)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "rollout_runtime.cli", "sim-engine", "--port", str(port), "--workers",
           str(opts.engines), "--seed", "0", "--tokenizer", str(REPO / "examples" / "tiny-model"),
           "--token-latency", str(opts.token_latency), "--length-dist", "lognormal", "--length-median",
           str(opts.length_median), "--length-max", str(opts.max_len), "--answer-accuracy", "0.5",
           "--weight-load-seconds", str(opts.weight_load_seconds), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/workers", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the simulated engines did not start")


def run_loop(opts: argparse.Namespace, url: str, eta: int, work: Path) -> dict[str, float]:
    from rollout_runtime.reader import RolloutReader
    from rollout_runtime.state.file_store import JsonFileStateStore
    from rollout_runtime.weights.publish import publish_weights

    out = work / f"eta{eta}"
    weights = work / "weights"
    weights.mkdir(exist_ok=True)
    publish_weights(url, str(weights), 0)  # every run starts from version 0
    rows = [{"prompt": f"What is {10 + i}+{20 + 2 * i}?", "label": str(30 + 3 * i)} for i in range(200)]
    data = work / "arith.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "prompt_data": str(data), "input_key": "prompt", "label_key": "label",
        "hf_checkpoint": str(REPO / "examples" / "tiny-model"), "apply_chat_template": True, "sglang_router_url": url,
        "output_dir": str(out), "rm_type": "math", "rollout_batch_size": opts.groups, "n_samples_per_prompt":
        opts.samples, "rollout_max_response_len": opts.max_len, "num_rollout": opts.steps,
        "sglang_server_concurrency": 256, "rollout_num_engines": opts.engines, "max_staleness": eta,
        "partial_rollout": True, "over_sampling_batch_size": opts.groups,
    }
    cfg = work / f"eta{eta}.yaml"
    cfg.write_text(json.dumps(config))
    log = open(work / f"runtime_eta{eta}.log", "w")
    runtime = subprocess.Popen([sys.executable, "-m", "rollout_runtime.cli", "run", "--no-progress", "--config",
                                str(cfg)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    reader = RolloutReader(str(out), poll_interval=0.01, max_poll_interval=0.05)
    ends, idle, busy = [], [], []
    try:
        reader.get(0, timeout=300)  # the runtime's start-up is not part of a step
        ends.append(time.monotonic())
        for k in range(opts.steps):
            if k:
                t = time.monotonic()
                reader.get(k, timeout=300)
                idle.append(time.monotonic() - t)
                ends.append(time.monotonic())
            t = time.monotonic()
            time.sleep(opts.train_seconds)
            publish_weights(url, str(weights), k + 1)
            busy.append(time.monotonic() - t)
            reader.ack(k)
        if runtime.wait(120) != 0:
            raise RuntimeError(f"the runtime failed; see {log.name}")
    finally:
        if runtime.poll() is None:
            runtime.kill()
    store = JsonFileStateStore(out / ".state")
    metrics = [store.read_snapshot(k).metrics for k in range(opts.steps)]
    w = opts.warmup
    steps = [b - a for a, b in zip(ends[w:], ends[w + 1:])]
    gen = [m["rollout/generate_seconds"] for m in metrics[w + 1:]]
    waits = [m["rollout/weight_wait_seconds"] for m in metrics[w + 1:]]
    train = busy[w:len(steps) + w]
    step = statistics.mean(steps)
    ideal = max(statistics.mean(train), statistics.mean(gen))
    wall = ends[-1] - ends[w]
    return {"eta": eta, "step": step, "train": statistics.mean(train), "generate": statistics.mean(gen),
            "ratio": step / ideal, "trainer_idle": sum(idle[w:]) / wall, "rollout_idle": sum(waits) / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-seconds", type=float, default=1.0, help="the trainer's step (a sleep)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--groups", type=int, default=16, help="groups per batch")
    p.add_argument("--samples", type=int, default=8, help="samples per group")
    p.add_argument("--token-latency", type=float, default=0.004)
    p.add_argument("--length-median", type=int, default=40)
    p.add_argument("--max-len", type=int, default=160)
    p.add_argument("--weight-load-seconds", type=float, default=0.05)
    opts = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    engines, url = start_engines(opts)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [run_loop(opts, url, eta, Path(tmp)) for eta in opts.staleness]
    finally:
        engines.kill()
    print(f"RL loop: train {opts.train_seconds:.2f}s/step (+ publish), {opts.groups}x{opts.samples} samples per "
          f"batch, {opts.engines} simulated engines, {opts.steps} steps ({opts.warmup} warm-up)")
    print(f"{'maxStaleness':>12} {'step s':>8} {'train s':>8} {'generate s':>10} {'step/max':>9} "
          f"{'trainer idle':>12} {'rollout idle':>12}")
    for r in rows:
        print(f"{r['eta']:>12} {r['step']:>8.3f} {r['train']:>8.3f} {r['generate']:>10.3f} {r['ratio']:>9.3f} "
              f"{r['trainer_idle']:>12.1%} {r['rollout_idle']:>12.1%}")
    one = next((r for r in rows if r["eta"] == 1), None)
    if one is not None:
        verdict = "meets" if one["ratio"] <= 1.10 else "misses"
        print(f"maxStaleness 1: step time {one['ratio']:.3f} x max(train, generate) ({verdict} the 1.10 target)")


if __name__ == "__main__":
    main()
