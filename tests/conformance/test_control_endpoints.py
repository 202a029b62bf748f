"""(c) Control endpoints: request structs, defaults, replies and status codes of real sglang 0.5.23.

The request structs and their defaults are read from ``io_struct.py``; the reply bodies and status
codes come from running the real ``http_server`` handlers against a stub tokenizer manager; the
abort rules from running the real ``TokenizerManager.abort_request``. Our engines must match, over
HTTP.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rollout_runtime.engines import routes_control as ours
from tests.conformance import real_sglang
from tests.conformance.stubs import IO, TM, NS, handler, struct_defaults
from tests.engines.helpers import EngineClient


def _ours(table: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    return {k: default for k, (_, default) in table.items()}


@pytest.mark.parametrize("cls, table", [
    ("PauseGenerationReqInput", ours.PAUSE_FIELDS),
    ("ContinueGenerationReqInput", ours.CONTINUE_FIELDS),
    ("UpdateWeightVersionReqInput", ours.UPDATE_WEIGHT_VERSION_FIELDS),
    ("UpdateWeightFromDiskReqInput", ours.UPDATE_WEIGHTS_FROM_DISK_FIELDS),
])
def test_request_structs_match_io_struct(cls: str, table: dict[str, Any]) -> None:
    assert _ours(table) == struct_defaults(cls)


def test_abort_struct_and_pause_modes() -> None:
    real = struct_defaults("AbortReq")
    # BaseReq.rid defaults to None, which AbortReq.__post_init__ turns into "".
    assert _ours(ours.ABORT_FIELDS) == {"rid": "", "abort_all": real["abort_all"]}
    # The other AbortReq fields (finished_reason, abort_message, weight_versions) are internal
    # and ignored by our engines.
    assert set(real) - set(ours.ABORT_FIELDS) == {"finished_reason", "abort_message", "weight_versions"}
    node = next(n for n in ast.walk(ast.parse(real_sglang.source(IO).read_text()))
                if isinstance(n, ast.ClassDef) and n.name == "PauseGenerationReqInput")
    mode = next(s for s in node.body if isinstance(s, ast.AnnAssign) and s.target.id == "mode")  # type: ignore[union-attr]
    assert tuple(ast.literal_eval(mode.annotation.slice)) == ours.PAUSE_MODES  # type: ignore[attr-defined]


class _Manager(NS):
    """The calls a handler makes on the tokenizer manager, recorded."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(calls=[], **kw)

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        self.calls.append(("abort_request", rid, abort_all))

    async def update_weight_version(self, obj: Any) -> None:
        self.calls.append(("update_weight_version", obj.new_version))

    async def pause_generation(self, obj: Any) -> None:
        self.calls.append(("pause_generation", obj.mode))

    async def continue_generation(self, obj: Any) -> None:
        self.calls.append(("continue_generation",))

    async def update_weights_from_disk(self, obj: Any, request: Any) -> tuple[bool, str, int]:
        return self.result


async def test_update_weight_version_aborts_by_default(sim_engine: Any) -> None:
    defaults = struct_defaults("UpdateWeightVersionReqInput")
    tm = _Manager()
    reply = await handler("update_weight_version", tm)(NS(new_version="v9", **{"abort_all_requests": defaults[
        "abort_all_requests"]}), None)
    assert tm.calls[0] == ("abort_request", "", True), "the real default aborts every request"
    url = sim_engine.url
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        running = asyncio.create_task(client.generate(url, {"input_ids": [5, 6], "sampling_params": {
            "max_new_tokens": 50, "ignore_eos": True}}))
        await client.wait_running(url, 1)
        await asyncio.sleep(0.05)
        try:
            assert await client.post(url + "/update_weight_version", {"new_version": "v9"}) == (200, reply.content)
            out = await running
            assert out["meta_info"]["finish_reason"]["type"] == "abort"
            assert out["meta_info"]["completion_tokens"] < 50
            assert (await client.get(url + "/model_info"))[1]["weight_version"] == "v9"
        finally:
            await client.post(url + "/update_weight_version", {"new_version": "default"})


@pytest.mark.parametrize("name, body, call", [
    ("pause_generation", {"mode": "retract"}, NS(mode="retract")),
    ("continue_generation", {}, NS(torch_empty_cache=True)),
])
async def test_pause_and_continue_replies(sim_engine: Any, name: str, body: dict[str, Any], call: Any) -> None:
    reply = await handler(name, _Manager())(call, None)
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        try:
            assert await client.post(sim_engine.url + "/" + name, body) == (reply.status_code, reply.content)
            # The body is required: FastAPI's 400 when it is missing.
            async with session.post(sim_engine.url + "/" + name) as r:
                assert r.status == 400 and (await r.json())["object"] == "error"
        finally:
            await client.post(sim_engine.url + "/continue_generation", {})


async def test_update_weights_from_disk_status(sim_engine: Any, tmp_path: Path) -> None:
    failed = await handler("update_weights_from_disk", _Manager(result=(False, "no", 0)))(NS(), None)
    done = await handler("update_weights_from_disk", _Manager(result=(True, "yes", 0)))(NS(), None)
    assert (failed.status_code, done.status_code) == (400, 200)
    url = sim_engine.url
    async with aiohttp.ClientSession() as session:
        client = EngineClient(session)
        status, body = await client.post(url + "/update_weights_from_disk", {"model_path": str(tmp_path / "nope")})
        assert status == 400 and set(body) == set(failed.content) and body["success"] is False
        assert str(tmp_path / "nope") in body["message"]
        status, body = await client.post(url + "/update_weights_from_disk",
                                         {"model_path": str(tmp_path), "weight_version": "w2"})
        assert status == 200 and set(body) == set(done.content) and body["success"] is True
        assert body["message"].endswith(" Weight version updated to w2.")  # tokenizer_manager.update_weights_from_disk
        status, info = await client.get(url + "/model_info")
        assert info["weight_version"] == "w2" and info["model_path"] == str(tmp_path)
        status, body = await client.post(url + "/update_weights_from_disk", {"load_format": "auto"})
        assert status == 400 and body["object"] == "error"  # model_path is required
        await client.post(url + "/update_weight_version", {"new_version": "default"})


async def test_abort_request_rules(sim_engine: Any) -> None:
    """Real: an empty rid, or a rid the (single) tokenizer does not track, is ignored; a tracked rid
    goes to the scheduler, which aborts every request whose rid starts with it."""
    sent: list[Any] = []
    abort_request = real_sglang.real_function(TM, "abort_request", {
        "logger": NS(warning=lambda *a, **k: None),
        "get_serving": lambda: NS(tokenizer_worker_num=1),
        "AbortReq": lambda rid, abort_all: (rid, abort_all),
    }, cls="TokenizerManager")
    tm = NS(rid_to_state={"tracked": NS(abort_sent=False)}, _dispatch_to_scheduler=sent.append, enable_metrics=False)
    for rid, abort_all in (("", False), ("track", False), ("tracked", False), ("", True)):
        abort_request(tm, rid, abort_all)
    assert sent == [("tracked", False), ("", True)]
    reply = await handler("abort_request", _Manager())(NS(rid="x", abort_all=False), None)
    async with aiohttp.ClientSession() as session:
        async with session.post(sim_engine.url + "/abort_request", json={"rid": "x"}) as r:
            assert (r.status, await r.read()) == (reply.status_code, b"")
