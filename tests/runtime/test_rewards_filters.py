import asyncio

import pytest
from aiohttp import web

from rollout_runtime.config import RolloutConfig
from rollout_runtime.filter_hub.dynamic_sampling_filters import (check_reward_nonzero_std,
                                                                 check_reward_nonzero_std_with_fallback)
from rollout_runtime.filter_hub.over_sampling_filters import sort_by_reward_std
from rollout_runtime.rm_hub import RewardError, async_rm, batched_async_rm
from rollout_runtime.types import Sample


def args_(**kw):
    return RolloutConfig(rollout_batch_size=2, **kw)


@pytest.mark.parametrize("rm_type,response,label,expected", [
    ("math", "so the answer is \\boxed{82}.", "82", 1),
    ("math", "\\boxed{81}", "82", 0),
    ("math", "\\boxed{\\frac{1}{2}}", "0.5", 1),
    ("math", "no box 82", "82", 0),
    ("math", "\\boxed{3}", "\\boxed{3}", 1),
    ("deepscaler", "<think>hmm</think> \\boxed{12}", "12", 1),
    ("deepscaler", "\\boxed{12}", "12", 0),  # no reasoning delimiter
    ("f1", "the cat sat", "cat sat down", pytest.approx(0.8)),
    ("gpqa", "I think the answer is (C)", "C", 1.0),
    ("boxed_f1", "blah \\boxed{paris}", "Paris", 1.0),
])
async def test_builtin_rewards(rm_type, response, label, expected):
    assert await async_rm(args_(rm_type=rm_type), Sample(response=response, label=label)) == expected


async def test_dapo_returns_dict_and_reward_key():
    args = args_(rm_type="dapo", reward_key="score")
    s = Sample(response="work... Answer: 82", label="82")
    s.reward = await async_rm(args, s)
    assert s.reward["acc"] is True and s.get_reward_value(args) == 1.0
    assert (await async_rm(args, Sample(response="Answer: 7", label="82")))["score"] == -1.0


async def test_metadata_rm_type_and_errors():
    s = Sample(response="\\boxed{5}", label="5", metadata={"rm_type": "math"})
    assert await async_rm(args_(rm_type="f1"), s) == 1
    with pytest.raises(RewardError, match="no reward configured"):
        await async_rm(args_(), Sample(response="x"))
    with pytest.raises(RewardError, match="not implemented"):
        await async_rm(args_(rm_type="bogus"), Sample(response="x"))


async def my_rm(args, sample_or_samples):
    if isinstance(sample_or_samples, list):
        return [len(s.response) for s in sample_or_samples]
    return len(sample_or_samples.response) * args.my_scale


async def test_custom_rm_single_and_batch():
    args = args_(custom_rm_path=f"{__name__}.my_rm")
    args.my_scale = 10
    assert await async_rm(args, Sample(response="abc")) == 30
    assert await batched_async_rm(args, [Sample(response="a"), Sample(response="abcd")]) == [1, 4]


@pytest.fixture
async def rm_server(aiohttp_unused_port=None):
    calls = {"n": 0, "mode": "ok"}

    async def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        body = await request.json()
        mode = calls["mode"]
        if mode == "flaky" and calls["n"] < 3:
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        if mode == "slow":
            await asyncio.sleep(5)
        if mode == "bad":
            return web.json_response({"error": "label missing"}, status=422)
        return web.json_response({"score": float(body["response"] == body["label"]), "seen": body["prompt"]})

    app = web.Application()
    app.router.add_post("/rm", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/rm", calls
    await runner.cleanup()


async def test_remote_rm_success_retry_timeout_and_4xx(rm_server):
    url, calls = rm_server
    args = args_(rm_type="remote_rm", rm_url=url, rm_timeout=0.5, rm_max_retries=3, reward_key="score")
    s = Sample(prompt="p", response="42", label="42")
    assert await async_rm(args, s) == {"score": 1.0, "seen": "p"}

    calls.update(n=0, mode="flaky")
    assert (await async_rm(args, s))["score"] == 1.0
    assert calls["n"] == 3  # two 503s retried

    calls.update(n=0, mode="slow")
    with pytest.raises(RewardError, match=r"gave no reward .* after 2 attempts \(timeout 0.5s each\): timed out"):
        await async_rm(args_(rm_type="remote_rm", rm_url=url, rm_timeout=0.5, rm_max_retries=1), s)

    calls.update(n=0, mode="bad")
    with pytest.raises(RewardError, match="rejected sample .*HTTP 422: label missing"):
        await async_rm(args, s)
    assert calls["n"] == 1  # 4xx is not retried


def group(rewards):
    return [Sample(reward=r) for r in rewards]


def test_dynamic_sampling_filters():
    args = args_()
    assert check_reward_nonzero_std(args, group([0, 1, 1])).keep
    out = check_reward_nonzero_std(args, group([1, 1, 1]))
    assert not out.keep and out.reason == "zero_std_1.0" and not out.keep_when_insufficient
    assert check_reward_nonzero_std_with_fallback(args, group([0, 0])).keep_when_insufficient
    keyed = args_(reward_key="score")
    assert check_reward_nonzero_std(keyed, [Sample(reward={"score": s}) for s in (1.0, -1.0)]).keep


def test_sort_by_reward_std():
    args = args_()
    groups = [group([1, 1]), group([0, 1]), group([0, 0.5]), group([0, 0])]
    chosen = sort_by_reward_std(args, groups)
    assert chosen == [groups[1], groups[2]]
