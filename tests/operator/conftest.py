"""Objects shaped like what the API server returns, for the pure (no-cluster) operator tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rollout_operator.settings import OperatorConfig


def rolloutjob(name: str = "arith", namespace: str = "ns", *, status: dict[str, Any] | None = None,
               generation: int = 1, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "kuberollout.io/v1alpha1",
        "kind": "RolloutJob",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": generation,
                     "resourceVersion": "10"},
        "spec": {
            "endpoint": "http://engine:30000",
            "dataset": {"path": "/data/train.jsonl", "inputKey": "prompt"},
            "rollout": {"batchSize": 4, "numRollouts": 3, "maxResponseLength": 64},
        },
        "status": copy.deepcopy(status) if status else {},
    }
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = value
    return body


def sglangpool(name: str = "qwen", namespace: str = "ns", *, status: dict[str, Any] | None = None,
               **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kuberollout.io/v1alpha1",
        "kind": "SGLangPool",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1,
                     "resourceVersion": "20"},
        "spec": {"model": {"path": "Qwen/Qwen3-8B"}, **spec},
        "status": copy.deepcopy(status) if status else {},
    }


@pytest.fixture
def config() -> OperatorConfig:
    return OperatorConfig(runtime_image="rt:test", sglang_image="sglang:test", router_image="router:test")


# ----------------------------------------------------------------------- cluster fixtures


@pytest.fixture(scope="session")
def crds_installed(cluster: Any) -> Any:
    """The generated CRDs, applied server-side (as the docs tell users to), and Established."""
    from tests.operator.kube_helpers import REPO

    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in ("rolloutjobs.kuberollout.io", "sglangpools.kuberollout.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return cluster


@pytest.fixture(scope="session")
def operator(crds_installed: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One `rollout-operator` process for the session, watching kro-* namespaces."""
    from tests.operator.kube_helpers import OperatorProcess

    proc = OperatorProcess(crds_installed, tmp_path_factory.mktemp("operator") / "operator.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def kro_namespace(crds_installed: Any, request: pytest.FixtureRequest) -> Any:
    """A fresh namespace the test operator watches (kro-<test>-<hex>)."""
    from tests.operator.kube_helpers import NAMESPACE_PREFIX

    name = crds_installed.new_namespace(f"{NAMESPACE_PREFIX}-{request.node.name[:24]}")
    yield name
    crds_installed.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failing operator test, attach the operator's log tail."""
    report = yield
    if report.failed and "operator" in getattr(item, "fixturenames", ()):
        proc = item.funcargs.get("operator") if hasattr(item, "funcargs") else None
        if proc is not None:
            report.sections.append(("rollout-operator log (last lines)", proc.log_tail(80)))
    return report


@pytest.fixture
def dataset(tmp_path: Any) -> str:
    """64 arithmetic prompts with labels (tests/operator's RolloutJobs read them)."""
    import json

    rows = [{"prompt": f"What is {10 + i}+{20 + 2 * i}?", "label": str(30 + 3 * i)} for i in range(64)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def real_pool(operator: Any, kro_namespace: str, process_kubelet: Any) -> Any:
    """Factory for SGLangPools that run for real (simulated servers + the real router as process
    pods): ``real_pool("sim", replicas=3, engine_args=[...], router={...})`` -> a Ready RealPool.
    See tests/operator/real_pool.py."""
    from tests.operator.real_pool import start_real_pool

    def make(name: str = "sim", **kwargs: Any) -> Any:
        return start_real_pool(operator.cluster, process_kubelet, kro_namespace, name, **kwargs)

    return make
