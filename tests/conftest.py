"""Shared fixtures. The control-plane fixtures live in tests/cluster/fixtures.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / "examples" / "tiny-model"

pytest_plugins = ["tests.cluster.fixtures"] if (REPO / "tests" / "cluster" / "fixtures.py").exists() else []


@pytest.fixture(scope="module")
def sim_engines() -> Iterator[Any]:
    """Two fast simulated SGLang engines, one per test module that asks."""
    from rollout_runtime.engines.sim import start_sim_cluster_thread
    from tests.runtime.test_rollout_sim import sim_config

    handle = start_sim_cluster_thread(2, sim_config(token_latency=0.002))
    yield handle
    handle.stop()


@pytest.fixture
def tiny_tokenizer_path() -> str:
    return str(TINY_MODEL)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def arith_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(40):
        a, b = 10 + i, 20 + 2 * i
        rows.append({"prompt": f"What is {a}+{b}?", "label": str(a + b), "metadata": {"i": i}})
    return rows
