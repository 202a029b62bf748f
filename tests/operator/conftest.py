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
