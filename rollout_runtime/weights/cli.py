"""`rollout-runtime update-weights`: the operator's weight update, for servers without Kubernetes.

Exit codes: 0 when every server serves the new version, 1 when any failed (each one named with its
step and the server's message; the others keep the new version, the failed ones their old one),
2 for bad arguments or when no server could be found.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict

from rollout_runtime.contract import EXIT_CONFIG_ERROR
from rollout_runtime.weights.calls import CallFailed
from rollout_runtime.weights.sync import DEFAULT_RETRIES, DEFAULT_STEP_TIMEOUT_S, DEFAULT_TIMEOUT_S, update_weights
from rollout_runtime.weights.target import PAUSE_MODES

EXIT_UPDATE_FAILED = 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rollout-runtime update-weights",
        description="Load new weights into running SGLang servers: pause -> /update_weights_from_disk -> continue, "
                    "on every server at once. A URL may be an sglang-router: its workers (GET /workers) are updated. "
                    "Any version may be loaded, a lower one included (a rollback).")
    p.add_argument("--engine", action="extend", nargs="+", required=True, metavar="URL",
                   help="SGLang server or router URLs (--engine A --engine B, or --engine A B)")
    p.add_argument("--path", required=True, help="directory with the new weights, as the servers see it")
    p.add_argument("--version", required=True, type=int, help="the policy version (non-negative integer), sent "
                                                              "as the servers' weight_version")
    p.add_argument("--pause-mode", default="retract", choices=PAUSE_MODES,
                   help="what happens to requests in flight (default retract; see docs/operator.md)")
    p.add_argument("--load-format", default=None, help="SGLang load format (default: the server's own)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds one server may take to load (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--step-timeout", type=float, default=DEFAULT_STEP_TIMEOUT_S,
                   help=f"seconds for pause / continue / version reads (default {DEFAULT_STEP_TIMEOUT_S:g})")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES, help="retries of a transient failure per call")
    p.add_argument("--skip-current", action="store_true",
                   help="leave alone servers that already serve --version")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.version < 0:
        print("rollout-runtime update-weights: --version must be a non-negative integer", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        report = asyncio.run(update_weights(
            args.engine, args.path, args.version, pause_mode=args.pause_mode, load_format=args.load_format,
            timeout=args.timeout, step_timeout=args.step_timeout, retries=args.retries,
            skip_current=args.skip_current))
    except CallFailed as exc:  # a router that could not be read, or lists no workers
        print(f"rollout-runtime update-weights: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.json:
        print(json.dumps({"ok": report.ok, "version": args.version, "duration_seconds": report.duration_seconds,
                          "servers": [asdict(o) for o in report.outcomes]}, indent=2))
    else:
        for o in report.outcomes:
            pause = f", paused {o.pause_seconds:.2f}s" if o.pause_seconds is not None else ""
            load = f", load {o.update_seconds:.2f}s" if o.update_seconds is not None else ""
            state = "ok" if o.ok else f"FAILED at {o.failed_step}"
            print(f"{o.url}: {state}: {o.message}{load}{pause}")
    if not report.ok:
        names = ", ".join(o.url for o in report.failures)
        print(f"rollout-runtime update-weights: {len(report.failures)} server(s) failed: {names}", file=sys.stderr)
        return EXIT_UPDATE_FAILED
    print(report.summary(), file=sys.stderr if args.json else sys.stdout)
    return 0
