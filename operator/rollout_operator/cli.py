"""`rollout-operator`: run the kuberollout operator (kopf's runner with our defaults).

    rollout-operator --all-namespaces
    rollout-operator --namespace team-a --namespace team-b --metrics-port 9090

Standalone by default (no kopf peering objects): run one replica with the Recreate strategy,
as the kopf docs recommend; `--peering NAME` switches to kopf's peering for hot standbys.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from rollout_operator import __version__
from rollout_operator.settings import OperatorConfig, PodPolicy


def build_parser() -> argparse.ArgumentParser:
    defaults = OperatorConfig()
    p = argparse.ArgumentParser(
        prog="rollout-operator",
        description="kuberollout operator: reconciles SGLangPool and RolloutJob (kuberollout.io/v1alpha1).",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable; globs like 'team-*' work)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch the whole cluster (default)")
    p.add_argument("--liveness", default=os.environ.get("KUBEROLLOUT_LIVENESS", "http://0.0.0.0:8080/healthz"),
                   metavar="URL", help="liveness endpoint served by kopf ('' to disable; default %(default)s)")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("KUBEROLLOUT_METRICS_PORT", "9090")),
                   help="Prometheus metrics port (0 to disable; default %(default)s)")
    p.add_argument("--log-format", choices=("json", "plain", "full"),
                   default=os.environ.get("KUBEROLLOUT_LOG_FORMAT", "json"), help="log format (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs of the operator")
    p.add_argument("--debug", action="store_true", help="debug logs of kopf too")
    p.add_argument("--workers", type=int, default=defaults.workers, help="reconcile workers (default %(default)s)")
    p.add_argument("--resync-seconds", type=float, default=defaults.resync_seconds,
                   help="re-check every object this often (default %(default)s)")
    p.add_argument("--runtime-image", default=defaults.runtime_image,
                   help="default runtime image (env KUBEROLLOUT_RUNTIME_IMAGE; default %(default)s)")
    p.add_argument("--sglang-image", default=defaults.sglang_image,
                   help="default SGLang server image (env KUBEROLLOUT_SGLANG_IMAGE; default %(default)s)")
    p.add_argument("--router-image", default=defaults.router_image,
                   help="default SGLang router image (env KUBEROLLOUT_ROUTER_IMAGE; default %(default)s)")
    policy = defaults.policy
    p.add_argument("--allowed-service-accounts", type=_names, default=",".join(policy.allowed_service_accounts),
                   metavar="NAMES", help="comma-separated ServiceAccounts (or globs) spec.runtime.serviceAccountName "
                                         "may name; '' (the default): none, runtimes run as their job's own")
    p.add_argument("--allowed-volume-types", type=_names, default=",".join(policy.allowed_volume_types),
                   metavar="TYPES",
                   help="comma-separated volume types allowed in spec.runtime.volumes and a pool's spec.volumes "
                        "(default: the restricted Pod Security Standard's: %(default)s)")
    p.add_argument("--allowed-image-prefixes", type=_names, default=",".join(policy.allowed_image_prefixes),
                   metavar="PREFIXES",
                   help="comma-separated image prefixes a spec may choose images from; '' (the default): any image")
    p.add_argument("--weights-pause-budget-seconds", type=float, default=defaults.weights_pause_budget_seconds,
                   help="longest pause of a server for one weight update; server readiness and the router's "
                        "health checks outlast it (default %(default)s)")
    p.add_argument("--peering", default=None, metavar="NAME",
                   help="use kopf peering object NAME (needs kopf's peering CRDs); default: standalone")
    p.add_argument("--priority", type=int, default=0, help="peering priority")
    p.add_argument("--version", action="version", version=f"rollout-operator {__version__}")
    return p


def _names(value: str) -> tuple[str, ...]:
    """A comma-separated list flag ('' is the empty list)."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    import kopf

    import rollout_operator.handlers  # noqa: F401 - registers the handlers

    log_format = {"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}
    kopf.configure(debug=args.debug, verbose=args.verbose or args.debug, log_format=log_format[args.log_format],
                   log_prefix=True, log_refkey="object")
    if not (args.verbose or args.debug):
        logging.getLogger("rollout_operator").setLevel(logging.INFO)
        # kopf logs every handler call at INFO ("Handler 'on_pod' succeeded."): thousands of lines
        # a minute with many jobs, and our handlers only enqueue. Transitions are logged by us.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("kopf.activities.probe").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    config = OperatorConfig(
        runtime_image=args.runtime_image,
        sglang_image=args.sglang_image,
        router_image=args.router_image,
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        metrics_port=args.metrics_port or None,
        policy=PodPolicy(allowed_service_accounts=args.allowed_service_accounts,
                         allowed_volume_types=args.allowed_volume_types,
                         allowed_image_prefixes=args.allowed_image_prefixes),
        weights_pause_budget_seconds=args.weights_pause_budget_seconds,
    )
    namespaces = args.namespace or []
    try:
        asyncio.run(kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=args.peering is None,
            peering_name=args.peering,
            priority=args.priority,
            liveness_endpoint=args.liveness or None,
            memo=kopf.Memo(config=config),
        ))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
