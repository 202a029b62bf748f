"""Dev engine: its tokens and logprobs are the model's own (checked against plain transformers)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import pytest

from tests.engines.helpers import (
    HAS_MODEL,
    HAS_TORCH,
    REPO_ROOT,
    TINY_MODEL,
    EngineClient,
    EngineHandle,
    free_port,
    wait_http,
)

pytestmark = pytest.mark.skipif(not (HAS_TORCH and HAS_MODEL), reason="needs torch and examples/tiny-model weights")

QUESTIONS = ["What is 37+45?", "What is 90-12?", "What is 58+77?"]


@pytest.fixture(scope="module")
def hf_model() -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    model.eval()
    return model


def forward_logprobs(model: Any, prompt_ids: list[int], output_ids: list[int]) -> list[float]:
    """log_softmax of raw logits at each output position, from one forward pass over prompt+output."""
    import torch

    ids = torch.tensor([prompt_ids + output_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    lps = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    return [float(lps[start + i, t]) for i, t in enumerate(output_ids)]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
async def test_logprobs_match_forward_pass(
    dev_handle: EngineHandle, client: EngineClient, hf_model: Any, temperature: float
) -> None:
    for q in QUESTIONS:
        ids = dev_handle.tokenizer.encode(dev_handle.chat_prompt(q), add_special_tokens=False)
        body = {
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 24, "temperature": temperature, "top_p": 0.9, "ignore_eos": True},
            "return_logprob": True,
        }
        out = await client.generate(dev_handle.url, body)
        got = [lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]]
        want = forward_logprobs(hf_model, ids, out["output_ids"])
        assert got == pytest.approx(want, abs=2e-4)


async def test_greedy_matches_model_generate(dev_handle: EngineHandle, client: EngineClient, hf_model: Any) -> None:
    import torch

    for q in QUESTIONS:
        ids = dev_handle.tokenizer.encode(dev_handle.chat_prompt(q), add_special_tokens=False)
        out = await client.generate(dev_handle.url, {"input_ids": ids, "sampling_params": {"max_new_tokens": 20, "temperature": 0}})
        with torch.no_grad():
            ref = hf_model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids) :].tolist()
        # model.generate stops at the generation_config EOS ids and includes the EOS token, like SGLang.
        assert out["output_ids"] == ref


async def test_prompt_logprobs_match_forward_pass(dev_handle: EngineHandle, client: EngineClient, hf_model: Any) -> None:
    import torch

    ids = dev_handle.tokenizer.encode(dev_handle.chat_prompt(QUESTIONS[0]) + "\\boxed{82}", add_special_tokens=False)
    out = await client.generate(
        dev_handle.url,
        {"input_ids": ids, "sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": 0},
    )
    got = out["meta_info"]["input_token_logprobs"]
    with torch.no_grad():
        lps = torch.log_softmax(hf_model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    assert got[0][0] is None
    assert [x[0] for x in got[1:]] == pytest.approx([float(lps[i - 1, ids[i]]) for i in range(1, len(ids))], abs=2e-4)
    assert [x[1] for x in got] == ids


async def test_sampling_seed_reproducible(dev_handle: EngineHandle, client: EngineClient) -> None:
    body = {"text": dev_handle.chat_prompt(QUESTIONS[2]), "sampling_params": {"max_new_tokens": 16, "sampling_seed": 7, "ignore_eos": True}}
    a = await client.generate(dev_handle.url, body)
    b = await client.generate(dev_handle.url, body)
    assert a["output_ids"] == b["output_ids"]


async def test_queue_beyond_max_batch_size(dev_handle: EngineHandle, client: EngineClient) -> None:
    """max_batch_size=4 in the fixture: extra requests wait (and are counted as waiting)."""
    import asyncio

    body = {"text": dev_handle.chat_prompt(QUESTIONS[0]), "sampling_params": {"max_new_tokens": 60, "ignore_eos": True}}
    tasks = [asyncio.create_task(client.generate(dev_handle.url, body)) for _ in range(6)]
    await client.wait_running(dev_handle.url, 6)
    _, loads = await client.get(dev_handle.url + "/v1/loads")
    load = loads["loads"][0]
    assert load["num_running_reqs"] <= 4 and load["num_running_reqs"] + load["num_waiting_reqs"] == 6
    outs = await asyncio.gather(*tasks)
    assert all(o["meta_info"]["completion_tokens"] == 60 for o in outs)


@pytest.mark.slow
def test_cli_serves_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout_runtime.engines.dev", "--model", str(TINY_MODEL), "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health_generate", timeout=90)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/generate",
            data=json.dumps({"text": "<|im_start|>user\nWhat is 11+22?<|im_end|>\n<|im_start|>assistant\n", "sampling_params": {"max_new_tokens": 12, "temperature": 0}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            assert "\\boxed{" in json.loads(r.read())["text"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0, proc.stdout.read().decode() if proc.stdout else ""
