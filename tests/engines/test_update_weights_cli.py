"""`rollout-runtime update-weights` against dev engines behind the real sglang-router.

A training step (SGD on CPU with torch, saved with safetensors) is loaded through the router URL
into both engines; their greedy answers change, and equal a fresh transformers load of the new
weights. A path the engines cannot load exits 1 naming every server, and they keep serving.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engines.helpers import HAS_MODEL, HAS_TORCH, TINY_MODEL, EngineClient

pytestmark = [pytest.mark.skipif(not (HAS_TORCH and HAS_MODEL), reason="needs torch and examples/tiny-model"),
              pytest.mark.timeout(300)]

PROMPTS = [f"<|im_start|>user\nWhat is {a}+{b}?<|im_end|>\n<|im_start|>assistant\n" for a, b in
           [(12, 30), (47, 25), (83, 9), (61, 38)]]
N = 10


@pytest.fixture(scope="module")
def engines() -> Iterator[list[str]]:
    from rollout_runtime.engines.dev import DevEngineConfig, start_dev_engine_thread

    handles = [start_dev_engine_thread(DevEngineConfig(model=str(TINY_MODEL), seed=0)) for _ in range(2)]
    try:
        yield [h.url for h in handles]
    finally:
        for h in handles:
            h.stop()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few SGD steps on wrong answers (so greedy answers move), saved with safetensors."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    model = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = tok([p + "\\boxed{7}<|im_end|>" for p in PROMPTS], return_tensors="pt", padding=True)
    for _ in range(5):
        loss = model(**batch, labels=batch["input_ids"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = tmp_path_factory.mktemp("step_1")
    save_model(model, str(out / "model.safetensors"))  # shared (tied) tensors saved once
    return out


def hf_greedy(weights: Path) -> list[list[int]]:
    """Greedy continuations from a fresh transformers load of the tiny model with `weights` loaded."""
    import torch
    from safetensors.torch import load_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    model = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32).eval()
    load_model(model, str(weights / "model.safetensors"))
    outs = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids, out = tok.encode(prompt), []
            for _ in range(N):
                out.append(int(torch.argmax(model(input_ids=torch.tensor([ids + out])).logits[0, -1])))
            outs.append(out)
    return outs


async def greedy(client: EngineClient, url: str) -> list[list[int]]:
    outs = []
    for prompt in PROMPTS:
        out = await client.generate(url, {"text": prompt, "sampling_params": {"max_new_tokens": N, "temperature": 0,
                                                                              "ignore_eos": True}})
        outs.append(out["output_ids"])
    return outs


def update_weights(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rollout_runtime.cli", "update-weights", *args],
                          capture_output=True, text=True, timeout=120)


async def test_a_training_step_loaded_through_the_router_changes_greedy_answers(
        engines: list[str], router_launcher: Any, client: EngineClient, trained: Path) -> None:
    router = router_launcher(engines)
    before = [await greedy(client, url) for url in engines]
    assert before[0] == before[1]

    done = update_weights("--engine", router, "--path", str(trained), "--version", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(s["url"] for s in __import__("json").loads(done.stdout)["servers"]) == sorted(engines)

    after = [await greedy(client, url) for url in engines]
    assert after[0] != before[0] and after[0] == after[1]
    assert after[0] == hf_greedy(trained)
    for url in engines:
        _, info = await client.get(url + "/model_info")
        assert info["weight_version"] == "1"

    # A path they cannot load: exit 1, each server named, both keep serving version 1.
    failed = update_weights("--engine", *engines, "--path", str(trained.parent / "nope"), "--version", "2")
    assert failed.returncode == 1
    assert all(url in failed.stderr and url in failed.stdout for url in engines)
    assert "Cannot find any model weights" in failed.stdout
    assert [await greedy(client, url) for url in engines] == after

    # A rollback to the model's own weights (version 0) is a load like any other.
    back = update_weights("--engine", router, "--path", str(TINY_MODEL), "--version", "0")
    assert back.returncode == 0, back.stdout + back.stderr
    assert [await greedy(client, url) for url in engines] == before
