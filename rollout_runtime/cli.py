"""`rollout-runtime`: run rollouts, or serve a simulated / dev SGLang engine.

`run` takes a YAML config and/or slime-style flags (flags win), or in a cluster reads its
own RolloutJob (`--rolloutjob NAME`) and commits state to the job's ConfigMap.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing
from typing import Any

from rollout_runtime.contract import EXIT_CONFIG_ERROR, EXIT_ENGINE_UNAVAILABLE, EXIT_INTERRUPTED, RUNTIME_SECTIONS

RUN_USAGE = ("rollout-runtime run [--config FILE] [--rolloutjob NAME [--namespace NS]] [--no-progress]\n"
             "                           [--log-level LEVEL] [--summary-json FILE] [slime flags ...]")
RUN_DESCRIPTION = """\
Generate rollouts. Every RolloutConfig field is a flag in slime's spelling (and a key of the --config
YAML in snake_case); flags win over the YAML. Boolean flags also have a --no-<flag> form. Killing the
run and starting it again resumes after the last committed rollout."""


# Help groups, in declaration order: a field belongs to the group of the last start at or before it.
# (They mirror the "# --- group" headers in the class body; tests check every start is a field.)
GROUP_STARTS: dict[str, str] = {
    "hf_checkpoint": "engines and router",
    "prompt_data": "dataset",
    "rollout_batch_size": "rollout",
    "rm_type": "reward",
    "dynamic_sampling_filter_path": "filters",
    "eval_prompt_data": "eval",
    "loss_mask_type": "SFT",
    "save": "state and output",
    "eval_config": "eval",
    "rollout_num_gpus": "engines and router",
    "custom_rollout_log_function_path": "rollout",
}


def field_groups() -> dict[str, str]:
    """field name -> its help group."""
    from rollout_runtime.config import RolloutConfig

    out, group = {}, "other"
    for name in RolloutConfig.model_fields:
        group = GROUP_STARTS.get(name, group)
        out[name] = group
    return out


def run_help() -> str:
    """`rollout-runtime run --help`: every flag with its group, default and description, as slime's argparse."""
    from rollout_runtime.config import RolloutConfig, _unwrap
    from rollout_runtime.slime_flags import sources, trainer_flags

    parser = argparse.ArgumentParser(prog="rollout-runtime run", usage=RUN_USAGE, description=RUN_DESCRIPTION,
                                     add_help=False, formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=40, width=112))
    own = parser.add_argument_group("run")
    own.add_argument("--config", metavar="FILE", help="YAML of slime flag names (snake_case) to values.")
    own.add_argument("--rolloutjob", metavar="NAME", help="In a cluster: read this RolloutJob's spec and commit state "
                                                          "to its ConfigMap.")
    own.add_argument("--namespace", metavar="NS", help="Namespace of --rolloutjob (default: the pod's).")
    own.add_argument("--no-progress", action="store_true", help="Log lines instead of the live progress bar.")
    own.add_argument("--log-level", metavar="LEVEL", help="Python log level (default: INFO or $KUBEROLLOUT_LOG_LEVEL).")
    own.add_argument("--summary-json", metavar="FILE", help="Also write the run summary as JSON to this path.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, group in field_groups().items():
        info = RolloutConfig.model_fields[name]
        arg_group = groups.get(group) or groups.setdefault(group, parser.add_argument_group(group))
        flag = "--" + name.replace("_", "-")
        inner, _ = _unwrap(info.annotation)
        if info.is_required():
            default = "required"
        else:
            default = json.dumps(info.default) if isinstance(info.default, (dict, list)) else info.default
        text = f"{info.description} (default: {default})"
        if inner is bool:
            arg_group.add_argument(flag, "--no-" + flag[2:], action="store_true", help=text)
        else:
            metavar = name.split("_")[-1].upper() + (" ..." if typing.get_origin(inner) is list else "")
            arg_group.add_argument(flag, metavar=metavar, help=text.replace("%", "%%"))
    src = sources()
    parser.epilog = (f"slime's other flags (trainer, Megatron, --sglang-*, --router-*: {len(trainer_flags())} known, from "
                     f"slime {src['slime'][:10]}, Megatron-LM {src['megatron'][:10]}, SGLang {src['sglang']}, "
                     f"sglang-router {src['sglang_router']}) are accepted as attributes of args with slime's defaults, "
                     f"so one slime command line serves both; any other flag is an error.")
    return parser.format_help()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"run": _run, "sim-engine": _sim_engine, "dev-engine": _dev_engine, "update-weights": _update_weights}
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: rollout-runtime {run,sim-engine,dev-engine,update-weights} [options]\n\n"
              "  run             generate rollouts (slime-compatible config and flags)\n"
              "  sim-engine      serve a simulated SGLang engine (no model) for tests and load tests\n"
              "  dev-engine      serve a small transformers model on CPU with SGLang's protocol\n"
              "  update-weights  load new weights into running SGLang servers (or a router's workers)\n\n"
              "'rollout-runtime COMMAND --help' for a command's options.")
        return 0
    cmd = commands.get(argv[0])
    if cmd is None:
        print(f"rollout-runtime: unknown command {argv[0]!r}; choose one of {', '.join(commands)}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return cmd(argv[1:])


def _sim_engine(argv: list[str]) -> int:
    from rollout_runtime.engines.sim import main as sim_main

    return sim_main(argv)


def _dev_engine(argv: list[str]) -> int:
    from rollout_runtime.engines.dev import main as dev_main

    return dev_main(argv)


def _update_weights(argv: list[str]) -> int:
    from rollout_runtime.weights.cli import main as update_main

    return update_main(argv)


def _run(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(run_help())
        return 0
    parser = argparse.ArgumentParser(prog="rollout-runtime run", add_help=False, allow_abbrev=False)
    parser.add_argument("--config")
    parser.add_argument("--rolloutjob")
    parser.add_argument("--namespace")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--log-level", default=os.environ.get("KUBEROLLOUT_LOG_LEVEL", "INFO"))
    parser.add_argument("--summary-json", help="also write the run summary as JSON to this path")
    ours, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=ours.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from rollout_runtime.config import ConfigError, RolloutConfig
    from rollout_runtime.dataset import DatasetError
    from rollout_runtime.http_client import EngineError, EngineRequestError
    from rollout_runtime.misc import PluginError
    from rollout_runtime.runner import LogProgress, RichProgress, Runner, install_signal_handlers
    from rollout_runtime.state import StateConflictError

    try:
        base: dict[str, Any] = {}
        if ours.rolloutjob:
            from rollout_runtime.kube import current_namespace, read_rolloutjob

            namespace = current_namespace(ours.namespace)
            job = read_rolloutjob(ours.rolloutjob, namespace)
            sections = {k: v for k, v in (job.get("spec") or {}).items() if k in RUNTIME_SECTIONS}
            base = RolloutConfig.from_sections(sections).model_dump(exclude_unset=True)
            base.setdefault("state_namespace", namespace)
        if ours.config:
            import yaml

            data = yaml.safe_load(open(ours.config)) or {}
            if not isinstance(data, dict):
                raise ConfigError(f"{ours.config}: a rollout config must be a mapping of slime flag names to values")
            base.update({k.replace("-", "_"): v for k, v in data.items()})
        args = RolloutConfig.from_cli(rest, base=base)
        args.check_runnable()
        interactive = sys.stderr.isatty() and not ours.no_progress
        progress = RichProgress() if interactive else LogProgress()
        if isinstance(progress, RichProgress):
            root = logging.getLogger()
            root.handlers[:] = [progress.log_handler()]
        runner = Runner(args, progress=progress)
        install_signal_handlers(runner)
        summary = runner.run()
    except (ConfigError, DatasetError, PluginError) as exc:
        print(f"rollout-runtime: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except EngineRequestError:
        raise  # a 4xx: the request is wrong, not the engine gone (a bug or a plugin's mistake): keep the traceback
    except EngineError as exc:
        print(engine_unavailable(exc), file=sys.stderr)
        return EXIT_ENGINE_UNAVAILABLE
    except KeyboardInterrupt:
        print("rollout-runtime: stopped; the next run resumes after the last committed rollout", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StateConflictError as exc:
        print(f"rollout-runtime: stopped without committing: {exc}", file=sys.stderr)
        return 1
    _print_summary(summary, args)
    if ours.summary_json:
        with open(ours.summary_json, "w") as fh:
            json.dump({**summary.__dict__, "tokens_per_second": summary.tokens_per_second}, fh, indent=1)
    return 0


def engine_unavailable(exc: Any) -> str:
    """The one line (the pod's termination message) for an engine that stayed unreachable or kept failing."""
    from rollout_runtime.http_client import origin

    what = " ".join(str(exc).split())
    url = origin(exc.url) if getattr(exc, "url", "") else "the engine"
    return (f"rollout-runtime: engine unavailable: {what}; check that the router or engine at {url} is up and "
            f"reachable from here (in a cluster: kubectl get sglangpool, and the RolloutJob's spec.poolRef or "
            f"spec.endpoint); the next attempt resumes after the last committed rollout")


def _print_summary(summary: Any, args: Any) -> None:
    reward = f"{summary.mean_reward:.3f}" if summary.mean_reward is not None else "n/a"
    lines = [
        "rollout summary",
        f"  rollouts       {summary.rollouts} (ids {summary.first_rollout_id}..{summary.last_rollout_id})",
        f"  completed      {summary.completed} samples",
        f"  aborted        {summary.aborted} samples",
        f"  filtered       {summary.filtered} samples",
        f"  mean reward    {reward}",
        f"  tokens/s       {summary.tokens_per_second:,.1f} ({summary.response_tokens} response tokens in {summary.seconds:.1f}s)",
        f"  output         {args.output_dir}",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
