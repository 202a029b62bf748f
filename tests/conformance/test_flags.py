"""(d) Every flag the operator generates is one the real programs accept.

The command lines come from the operator's public builders (``server_deployment``,
``router_deployment``) for a range of pool specs; the server's go through sglang 0.5.23's own
``ServerArgs.add_cli_args`` parser (in a subprocess: see ``server_args_probe.py``), the router's
through sglang-router 0.3.2's ``launch_router.parse_router_args``, and the simulated engine's
through our ``sim-engine`` parser. An argument a parser refuses fails here, not in a pod.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from rollout_operator.api.sglangpool_types import RouterSpec, SGLangPool
from rollout_operator.builders import sglangpool as pool_builders
from rollout_operator.settings import OperatorConfig
from tests.conformance import real_sglang

REPO = Path(__file__).resolve().parents[2]
CONFIG = OperatorConfig(runtime_image="rt:test", sglang_image="sglang:test", router_image="router:test")
POLICIES = typing.get_args(RouterSpec.model_fields["policy"].annotation)


def pool(name: str = "p", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kuberollout.io/v1alpha1", "kind": "SGLangPool",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
            "spec": spec, "status": {}}


SERVER_POOLS = [
    pool(model={"path": "Qwen/Qwen3-8B"}),
    pool(model={"path": "/models/m", "servedModelName": "m"}, gpusPerReplica=8, port=31000),
    pool(model={"pvc": {"claimName": "weights", "subPath": "qwen"}}, gpusPerReplica=2,
         extraArgs=["--mem-fraction-static", "0.85", "--context-length", "8192", "--weight-version", "0"]),
]


def server_container(body: dict[str, Any]) -> dict[str, Any]:
    """The server container the operator builds for this pool (its public builder, nothing else)."""
    return pool_builders.server_deployment(SGLangPool.from_body(body), CONFIG)["spec"]["template"]["spec"]["containers"][0]


def router_container(body: dict[str, Any]) -> dict[str, Any]:
    return pool_builders.router_deployment(SGLangPool.from_body(body), CONFIG)["spec"]["template"]["spec"]["containers"][0]


def test_server_flags_parse_with_real_server_args() -> None:
    real_sglang.root()  # skips without sglang 0.5.23
    commands = [server_container(body) for body in SERVER_POOLS]
    assert all(c["command"] == ["python3", "-m", "sglang.launch_server"] for c in commands)
    argvs = [c["args"] for c in commands]
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("server_args_probe.py"))],
                          input=json.dumps(argvs), capture_output=True, text=True, timeout=300,
                          env={"PATH": "", "HOME": "/tmp", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    for argv, result in zip(argvs, results):
        assert result["ok"], (argv, result["error"])
        values = result["values"]
        assert values["tp_size"] == int(argv[argv.index("--tp-size") + 1]) and values["host"] == "0.0.0.0"
        assert values["model_path"] == argv[argv.index("--model-path") + 1] and values["enable_metrics"] is True
    assert results[1]["values"]["served_model_name"] == "m" and results[2]["values"]["context_length"] == 8192


@pytest.mark.parametrize("policy", POLICIES)
def test_router_flags_parse_with_real_router(policy: str) -> None:
    launch_router = pytest.importorskip("sglang_router.launch_router", reason="pip install sglang-router==0.3.2")
    body = pool(model={"path": "m"}, router={"policy": policy, "extraArgs": ["--request-timeout-secs", "600"]})
    c = router_container(body)
    assert c["command"] == ["python3", "-m", "sglang_router.launch_router"]
    try:
        args = launch_router.parse_router_args(c["args"])
    except SystemExit as e:
        pytest.fail(f"sglang-router 0.3.2 refuses {c['args']}: exit {e.code}")
    assert args.policy == policy and args.service_discovery is True and args.request_timeout_secs == 600
    after = c["args"][c["args"].index("--selector") + 1:]
    labels = after[: next((i for i, a in enumerate(after) if a.startswith("--")), len(after))]
    assert labels and args.selector == dict(kv.split("=", 1) for kv in labels)


def test_simulated_server_flags_parse_with_sim_engine() -> None:
    from rollout_runtime.engines.sim import build_arg_parser, config_from_args

    body = pool(engine="simulated", model={"servedModelName": "sim"}, extraArgs=["--token-latency", "0.01"])
    c = server_container(body)
    assert c["command"] == ["rollout-runtime"] and c["args"][0] == "sim-engine"
    cfg = config_from_args(build_arg_parser().parse_args(c["args"][1:]))
    assert cfg.model_name == "sim" and cfg.token_latency == 0.01
