"""The dev engine really reloads weights from disk (``POST /update_weights_from_disk``).

New weights saved by ``transformers`` change the engine's greedy answers, which then match a fresh
``transformers`` load of those weights; a checkpoint that does not fit the model (a tensor of the
wrong shape, a tensor the model does not have, no weights at the path) is a 400 naming the problem,
and the old weights keep serving, as SGLang's loader rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engines.helpers import HAS_MODEL, HAS_TORCH, TINY_MODEL, EngineClient

pytestmark = pytest.mark.skipif(not (HAS_TORCH and HAS_MODEL), reason="needs torch and examples/tiny-model weights")

PROMPT = "<|im_start|>user\nWhat is 37+45?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def dev_url() -> Iterator[str]:
    """A dev engine of its own: these tests change its weights."""
    from rollout_runtime.engines.dev import DevEngineConfig, start_dev_engine_thread

    handle = start_dev_engine_thread(DevEngineConfig(model=str(TINY_MODEL), seed=0))
    try:
        yield handle.url
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def new_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every weight perturbed (a 'training step'), saved as transformers saves it."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3 * p.std().clamp(min=1e-3))
    out = tmp_path_factory.mktemp("step1")
    model.save_pretrained(out)
    return out


def hf_greedy(path: Path, n: int, prefix: list[int] | None = None) -> list[int]:
    """n argmax tokens from a fresh ``transformers`` load of ``path`` (EOS does not stop it, as with
    ``ignore_eos``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = prefix if prefix is not None else AutoTokenizer.from_pretrained(str(TINY_MODEL)).encode(PROMPT)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            out.append(int(torch.argmax(logits)))
    return out


async def greedy(client: EngineClient, url: str, n: int = 12) -> dict[str, Any]:
    return await client.generate(url, {"text": PROMPT, "sampling_params": {"max_new_tokens": n, "temperature": 0,
                                                                           "ignore_eos": True}})


async def update(client: EngineClient, url: str, path: Path | str, version: str) -> tuple[int, Any]:
    return await client.post(url + "/update_weights_from_disk", {"model_path": str(path), "weight_version": version})


async def test_reload_changes_outputs_to_the_new_weights(dev_url: str, client: EngineClient, new_weights: Path) -> None:
    before = await greedy(client, dev_url)
    assert before["output_ids"] == hf_greedy(TINY_MODEL, 12)
    status, body = await update(client, dev_url, new_weights, "1")
    assert status == 200 and body["success"] and body["message"].endswith("Weight version updated to 1."), body
    after = await greedy(client, dev_url)
    assert after["output_ids"] != before["output_ids"]
    assert after["output_ids"] == hf_greedy(new_weights, 12)
    assert after["meta_info"]["weight_version"] == "1"
    _, info = await client.get(dev_url + "/model_info")
    assert info["weight_version"] == "1" and info["model_path"] == str(new_weights)
    status, body = await update(client, dev_url, TINY_MODEL, "2")  # a rollback is a load like any other
    assert status == 200 and (await greedy(client, dev_url))["output_ids"] == before["output_ids"]


async def test_bad_checkpoints_are_refused_and_old_weights_keep_serving(dev_url: str, client: EngineClient,
                                                                        tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    await update(client, dev_url, TINY_MODEL, "base")
    before = await greedy(client, dev_url)
    bad_shape = tmp_path / "shape"
    bad_shape.mkdir()
    save_file({"model.norm.weight": torch.ones(7)}, str(bad_shape / "model.safetensors"))
    bad_name = tmp_path / "name"
    bad_name.mkdir()
    save_file({"model.layers.99.mlp.up_proj.weight": torch.ones(2, 2)}, str(bad_name / "model.safetensors"))
    cases = [
        (bad_shape, "model.norm.weight", "Attempted to load weight (torch.Size([7])) into parameter (torch.Size([96]))"),
        (bad_name, "model.layers.99.mlp.up_proj.weight", "is not a parameter of this model"),
        (tmp_path / "missing", "Cannot find any model weights with", str(tmp_path / "missing")),
    ]
    for path, *expected in cases:
        status, body = await update(client, dev_url, path, "broken")
        assert status == 400 and body["success"] is False and body["num_paused_requests"] == 0
        assert all(e in body["message"] for e in expected), body["message"]
        after = await greedy(client, dev_url)
        assert after["output_ids"] == before["output_ids"] and after["meta_info"]["weight_version"] == "base"
    _, info = await client.get(dev_url + "/model_info")
    assert info["weight_version"] == "base" and info["model_path"] == str(TINY_MODEL)


async def test_retracted_request_continues_under_new_weights(dev_url: str, client: EngineClient,
                                                             new_weights: Path) -> None:
    """retract drops the KV cache: after the update the prefix is recomputed with the new weights, so
    the tokens after the pause are exactly what the new model says after prompt + tokens so far."""
    import asyncio

    from transformers import AutoTokenizer

    await update(client, dev_url, TINY_MODEL, "base")
    task = asyncio.create_task(greedy(client, dev_url, n=60))
    await client.wait_running(dev_url, 1)
    await asyncio.sleep(0.05)
    await client.post(dev_url + "/pause_generation", {"mode": "retract"})
    try:
        status, _ = await update(client, dev_url, new_weights, "1")
        assert status == 200
    finally:
        await client.post(dev_url + "/continue_generation", {})
    out = await task
    first, second = out["meta_info"]["weight_versions"]
    k = first["end"]
    assert first["version"] == "base" and second == {"version": "1", "start": k, "end": 60} and 0 < k < 60
    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    prefix = tok.encode(PROMPT) + out["output_ids"][:k]
    assert out["output_ids"][k:] == hf_greedy(new_weights, 60 - k, prefix)
