"""An aiohttp server speaking SGLang's native HTTP protocol (sglang 0.5.23) over a :class:`Backend`.

Both kuberollout engines (simulated and dev) are this server with a different backend, so the
protocol details clients depend on are implemented once:

* ``POST|PUT /generate``: ``text`` or ``input_ids`` (single or batch, ``n`` > 1), the contract gate for
  ``sampling_params``, stop strings / stop token ids / EOS / ``max_new_tokens`` / ``min_new_tokens`` /
  ``ignore_eos``, trimming (``no_stop_trim``), logprobs as ``[logprob, token_id, text|None]``, SSE
  streaming with cumulative chunks and ``data: [DONE]``, finish reasons stop/length/abort.
* ``POST /abort_request`` (rid prefix match or ``abort_all``); a running request stops between tokens
  and its client gets HTTP 200 with the partial output and ``finish_reason.type == "abort"``. A client
  disconnect aborts its request too.
* ``/health``, ``/health_generate``, ``/ready``, ``/model_info``, ``/server_info`` (and the ``/get_*``
  aliases), ``/v1/loads``, ``/v1/models``, ``/flush_cache``, ``/update_weight_version``,
  ``/get_weight_version``, ``/pause_generation``, ``/continue_generation``, ``/metrics``.

Not implemented (SGLang features no kuberollout test needs): constrained decoding, penalties,
``logit_bias``, ``top_logprobs_num`` values, multimodal inputs, sessions, weight updates.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Self

from aiohttp import web

from .backend import Backend, RequestState
from .params import (
    ContractError,
    GenerateItem,
    RequestValueError,
    SamplingParams,
    parse_generate,
)

try:  # orjson is ~5x faster than json for our response sizes; optional.
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads
except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads


log = logging.getLogger(__name__)

SGLANG_VERSION = "0.5.23"
JSON_CT = "application/json"
FLUSH_OK_TEXT = (
    "Cache flushed.\nPlease check backend logs for more details. "
    "(When there are running or waiting requests, the operation will not be performed.)\n"
)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type=JSON_CT)


def _error(message: str, status: int = 400, *, contract: bool = False) -> web.Response:
    """SGLang's two 400 shapes: contract gate ``{"error": str}``, others ``{"error": {"message"}}``."""
    if contract:
        return _json({"error": message}, status)
    return _json({"error": {"message": message}}, status)


class _Generation:
    """Output accumulated for one request while the backend produces tokens."""

    __slots__ = ("finish", "out_ids", "out_lps", "state", "versions")

    def __init__(self, state: RequestState, weight_version: str) -> None:
        self.state = state
        self.out_ids: list[int] = []
        self.out_lps: list[float] = []
        self.finish: dict[str, Any] | None = None
        # (weight_version, first output index generated under it): more than one entry means the
        # weights changed mid-request, reported as meta_info.weight_versions like SGLang does.
        self.versions: list[tuple[str, int]] = [(weight_version, 0)]


class EngineServer:
    """SGLang-protocol HTTP server around one backend.

    Use as ``async with EngineServer(backend, port=0) as srv: srv.url``. ``recorded`` holds the last
    ``record_requests`` ``/generate`` bodies exactly as received (parsed JSON), for tests that check
    what a client sent.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        weight_version: str = "default",
        served_model_name: str | None = None,
        record_requests: int = 256,
        extra_server_args: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.host = host
        self.port = port
        self.weight_version = weight_version
        self.served_model_name = served_model_name or backend.served_model_name
        self.recorded: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(0, record_requests))
        self.extra_server_args = dict(extra_server_args or {})
        self.active: set[RequestState] = set()
        self.stopping = False
        self.started_at = time.time()
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._runner: web.AppRunner | None = None
        # Counters for /metrics and /v1/loads.
        self.num_requests_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.num_aborted_total = 0
        self.app = self._make_app()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.backend.start()
        # handler_cancellation: a client disconnect cancels the handler, which aborts the request.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self.started_at = time.time()
        log.info("SGLang-protocol engine listening on %s", self.url)

    async def stop(self) -> None:
        self.stopping = True
        for st in list(self.active):
            st.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.backend.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ app

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        r = app.router
        r.add_post("/generate", self.handle_generate)
        r.add_put("/generate", self.handle_generate)
        r.add_post("/abort_request", self.handle_abort)
        r.add_get("/health", self.handle_health)
        r.add_get("/health_generate", self.handle_health_generate)
        r.add_get("/ready", self.handle_ready)
        for path in ("/model_info", "/get_model_info"):
            r.add_get(path, self.handle_model_info)
        for path in ("/server_info", "/get_server_info"):
            r.add_get(path, self.handle_server_info)
        r.add_get("/v1/loads", self.handle_loads)
        r.add_get("/v1/models", self.handle_models)
        r.add_route("*", "/flush_cache", self.handle_flush_cache)
        r.add_post("/update_weight_version", self.handle_update_weight_version)
        r.add_get("/get_weight_version", self.handle_get_weight_version)
        r.add_post("/pause_generation", self.handle_pause)
        r.add_post("/continue_generation", self.handle_continue)
        r.add_get("/metrics", self.handle_metrics)
        return app

    # ------------------------------------------------------------------ /generate

    async def handle_generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = loads(raw)
        except ValueError as e:
            return _error(f"Invalid JSON body: {e}", contract=True)
        if self.recorded.maxlen:
            self.recorded.append(body)
        try:
            req = parse_generate(body)
        except ContractError as e:
            return _error(str(e), contract=True)
        except RequestValueError as e:
            return _error(str(e))
        if self.stopping:
            return _error("The server is shutting down.", 503)
        if not self._unpaused.is_set():
            await self._unpaused.wait()
        if req.stream:
            return await self._stream(request, req.items, req.is_batch)
        try:
            if not req.is_batch:
                return _json(await self.run_item(req.items[0]))
            results = await asyncio.gather(*(self.run_item(it) for it in req.items))
            return _json(results)
        except RequestValueError as e:
            return _error(str(e))
        except Exception as e:
            # SGLang's HTTPException shape for server-side failures.
            log.exception("generation failed")
            return _json(
                {"object": "error", "message": str(e), "type": "InternalServerError", "param": None, "code": 500}, 500
            )

    async def _stream(self, request: web.Request, items: list[GenerateItem], is_batch: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def emit(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + dumps(obj) + b"\n\n")

        async def one(item: GenerateItem) -> None:
            async def on_chunk(chunk: dict[str, Any]) -> None:
                if is_batch:
                    chunk["index"] = item.index
                await emit(chunk)

            final = await self.run_item(item, on_chunk=on_chunk)
            if is_batch:
                final["index"] = item.index
            await emit(final)

        try:
            await asyncio.gather(*(one(it) for it in items))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - reported in-band, as SGLang does
            await emit({"error": {"message": str(e), "type": "invalid_request_error", "code": 400, "retryable": False}})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def run_item(
        self,
        item: GenerateItem,
        on_chunk: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        *,
        track: bool = True,
    ) -> dict[str, Any]:
        """Generate for one item and return its SGLang response object."""
        codec = self.backend.codec
        input_ids = item.input_ids if item.input_ids is not None else codec.encode(item.text or "", True)
        if not input_ids:
            raise RequestValueError("The input is empty after tokenization.")
        if len(input_ids) >= self.backend.context_length:
            raise RequestValueError(
                f"The input ({len(input_ids)} tokens) is longer than the model's context length "
                f"({self.backend.context_length} tokens)."
            )
        state = RequestState(item, input_ids)
        g = _Generation(state, self.weight_version)
        p = item.params
        if track:
            self.active.add(state)
            self.num_requests_total += 1
            self.prompt_tokens_total += len(input_ids)
        try:
            if p.max_new_tokens == 0:
                g.finish = {"type": "length", "length": 0}
            else:
                await self._drive(g, on_chunk)
        finally:
            if track:
                self.active.discard(state)
                self.generation_tokens_total += len(g.out_ids)
            if g.finish is None:
                # Cancelled (client gone) or failed: make sure the backend lets go of it.
                state.abort()
        if g.finish.get("type") == "abort" and track:
            self.num_aborted_total += 1
        return await self._result(g, final=True)

    async def _drive(self, g: _Generation, on_chunk: Callable[[dict[str, Any]], Awaitable[None]] | None) -> None:
        state = g.state
        p = state.params
        codec = self.backend.codec
        if p.ignore_eos:
            stop_tokens: frozenset[int] = frozenset()
        elif p.stop_token_ids:
            stop_tokens = codec.eos_token_ids | p.stop_token_ids
        else:
            stop_tokens = codec.eos_token_ids
        max_new, min_new = p.max_new_tokens, p.min_new_tokens
        out_ids, out_lps = g.out_ids, g.out_lps
        gen = self.backend.generate(state)
        try:
            async for ids, lps in gen:
                n0 = len(out_ids)
                cut = len(ids)
                finish: dict[str, Any] | None = None
                for k, tid in enumerate(ids):
                    pos = n0 + k + 1
                    if tid in stop_tokens and pos >= min_new:
                        cut, finish = k + 1, {"type": "stop", "matched": tid}
                        break
                    if pos >= max_new:
                        cut, finish = k + 1, {"type": "length", "length": max_new}
                        break
                new_ids = ids if cut == len(ids) else ids[:cut]
                if p.stop and n0 + cut >= min_new:
                    hit = self._scan_stop_strings(out_ids, new_ids, p, min_new)
                    if hit is not None:
                        j, matched = hit
                        new_ids = new_ids[: j + 1]
                        finish = {"type": "stop", "matched": matched}
                if self.weight_version != g.versions[-1][0]:
                    g.versions.append((self.weight_version, n0))
                out_ids.extend(new_ids)
                out_lps.extend(lps[: len(new_ids)] if len(new_ids) < len(lps) else lps)
                if finish is not None:
                    g.finish = finish
                    return
                if state.aborted:
                    break
                if on_chunk is not None:
                    await on_chunk(await self._result(g, final=False))
            if state.aborted:
                g.finish = {"type": "abort", "message": state.abort_message, "status_code": None, "err_type": None}
                if state.abort_message != "Aborted":
                    g.finish = {"type": "abort", "message": state.abort_message}
            elif g.finish is None:
                # The backend ran out without a finish condition: report it as a length finish.
                g.finish = {"type": "length", "length": len(out_ids)}
        finally:
            await gen.aclose()

    def _scan_stop_strings(
        self, out_ids: list[int], new_ids: list[int], p: SamplingParams, min_new: int
    ) -> tuple[int, str] | None:
        """First position in ``new_ids`` where a stop string appears in the decoded tail, like
        SGLang's check on the last ``stop_str_max_len + 1`` tokens; None if no stop string appears."""
        codec = self.backend.codec
        skip = p.skip_special_tokens
        window = max(len(s) for s in p.stop) + 1
        ctx = out_ids[-window:]
        text = codec.decode(ctx + new_ids, skip)
        if not any(s in text for s in p.stop):
            return None
        seq = out_ids[-window:] + []
        base = len(out_ids)
        for j, tid in enumerate(new_ids):
            seq.append(tid)
            if base + j + 1 < min_new:
                continue
            tail = codec.decode(seq[-window:], skip)
            for s in p.stop:
                if s in tail:
                    return j, s
        return None

    async def _result(self, g: _Generation, *, final: bool) -> dict[str, Any]:
        state, item = g.state, g.state.item
        p = state.params
        codec = self.backend.codec
        out_ids = g.out_ids
        finish = g.finish if final else None
        skip = p.skip_special_tokens
        if finish is not None and finish["type"] == "stop" and not p.no_stop_trim:
            matched = finish.get("matched")
            if isinstance(matched, str):
                text = codec.decode(out_ids, skip)
                idx = text.find(matched)
                if idx >= 0:
                    text = text[:idx]
            else:
                text = codec.decode(out_ids[:-1], skip)
        else:
            text = codec.decode(out_ids, skip)
        meta: dict[str, Any] = {
            "id": state.rid,
            "finish_reason": finish,
            "prompt_tokens": len(state.input_ids),
            "weight_version": self.weight_version,
            "completion_tokens": len(out_ids),
            "cached_tokens": 0,
            "reasoning_tokens": 0,
        }
        if item.return_logprob:
            if item.return_text_in_logprobs:
                tt = codec.token_text
                meta["output_token_logprobs"] = [[lp, t, tt(t)] for lp, t in zip(g.out_lps, out_ids)]
            else:
                meta["output_token_logprobs"] = [[lp, t, None] for lp, t in zip(g.out_lps, out_ids)]
            meta["output_token_logprobs_length"] = len(out_ids)
            start = item.logprob_start_len
            if start >= 0 and final:
                ilps = await self.backend.input_logprobs(state, start)
                ids = state.input_ids[start:]
                if item.return_text_in_logprobs:
                    tt = codec.token_text
                    meta["input_token_logprobs"] = [[lp, t, tt(t)] for lp, t in zip(ilps, ids)]
                else:
                    meta["input_token_logprobs"] = [[lp, t, None] for lp, t in zip(ilps, ids)]
            else:
                meta["input_token_logprobs"] = []
            if item.top_logprobs_num > 0:
                meta["output_top_logprobs"] = [None] * len(out_ids)
                meta["input_top_logprobs"] = []
        if len(g.versions) > 1:
            bounds = [start for _, start in g.versions[1:]] + [len(out_ids)]
            meta["weight_versions"] = [
                {"version": v, "start": start, "end": end} for (v, start), end in zip(g.versions, bounds, strict=True)
            ]
        if final:
            meta["e2e_latency"] = time.perf_counter() - state.created
        out: dict[str, Any] = {"text": text, "output_ids": list(out_ids) if not final else out_ids, "meta_info": meta}
        if item.return_prompt_token_ids:
            out["prompt_token_ids"] = state.input_ids
        return out

    # ------------------------------------------------------------------ control endpoints

    def abort(self, rid: str | None = None, abort_all: bool = False) -> int:
        """Abort matching in-flight requests (rid prefix match, or all); returns how many."""
        n = 0
        for st in list(self.active):
            if abort_all or (rid and st.rid.startswith(rid)):
                st.abort()
                n += 1
        return n

    async def handle_abort(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body: Any = {}
        if raw:
            try:
                body = loads(raw)
            except ValueError:
                return _error("Invalid JSON body", contract=True)
        if not isinstance(body, dict):
            body = {}
        rid = body.get("rid")
        self.abort(rid if isinstance(rid, str) else None, bool(body.get("abort_all")))
        return web.Response(status=200)

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.stopping else 200)

    async def handle_health_generate(self, request: web.Request) -> web.Response:
        """Like SGLang: run a real 1-token generation (not counted in loads)."""
        if self.stopping:
            return web.Response(status=503)
        codec = self.backend.codec
        first = next((i for i in range(codec.vocab_size) if i not in codec.special_ids), 0)
        item = GenerateItem(
            rid=f"HEALTH_CHECK_{uuid.uuid4().hex}",
            index=0,
            text=None,
            input_ids=[first],
            params=SamplingParams(max_new_tokens=1, temperature=0.0, top_k=1),
        )
        try:
            await asyncio.wait_for(self.run_item(item, track=False), timeout=20.0)
        except Exception:
            log.exception("health_generate failed")
            return web.Response(status=503)
        return web.Response(status=200)

    async def handle_ready(self, request: web.Request) -> web.Response:
        if self.stopping:
            return _json({"status": "not ready"}, 503)
        return _json({"status": "ready"})

    def model_info(self) -> dict[str, Any]:
        b = self.backend
        info: dict[str, Any] = {
            "model_path": b.model_path,
            "served_model_name": self.served_model_name,
            "tokenizer_path": b.codec.name_or_path,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": self.weight_version,
            "load_format": "auto",
            "reasoning_parser": None,
            "tool_call_parser": None,
            "disaggregation_mode": "null",
            "has_image_understanding": False,
            "has_audio_understanding": False,
            "model_type": None,
            "architectures": None,
        }
        info.update(b.model_info())
        return info

    async def handle_model_info(self, request: web.Request) -> web.Response:
        return _json(self.model_info())

    def server_info(self) -> dict[str, Any]:
        b = self.backend
        running, waiting = self.load_counts()
        info: dict[str, Any] = {
            "model_path": b.model_path,
            "tokenizer_path": b.codec.name_or_path,
            "served_model_name": self.served_model_name,
            "host": self.host,
            "port": self.port,
            "tp_size": 1,
            "dp_size": 1,
            "pp_size": 1,
            "ep_size": 1,
            "context_length": b.context_length,
            "weight_version": self.weight_version,
            "disaggregation_mode": "null",
            "incremental_streaming_output": False,
            "skip_server_warmup": True,
            "status": "ready" if not self.stopping else "shutting_down",
            "max_total_num_tokens": b.context_length * 64,
            "max_req_input_len": b.context_length - 1,
            "startup_time": self.started_at,
            "internal_states": [{"num_running_reqs": running, "num_waiting_reqs": waiting}],
            "version": SGLANG_VERSION,
            "frontend": "python",
            "launch_command": "kuberollout engine",
        }
        info.update(b.server_args())
        info.update(self.extra_server_args)
        return info

    async def handle_server_info(self, request: web.Request) -> web.Response:
        return _json(self.server_info())

    def load_counts(self) -> tuple[int, int]:
        """(running, waiting) requests, as /v1/loads reports them."""
        running = sum(1 for s in self.active if s.running)
        return running, len(self.active) - running

    async def handle_loads(self, request: web.Request) -> web.Response:
        running, waiting = self.load_counts()
        b = self.backend
        used = sum(len(s.input_ids) for s in self.active)
        max_tokens = b.context_length * 64
        load = {
            "dp_rank": 0,
            "num_running_reqs": running,
            "num_waiting_reqs": waiting,
            "num_total_reqs": running + waiting,
            "num_used_tokens": used,
            "max_total_num_tokens": max_tokens,
            "token_usage": round(used / max_tokens, 6) if max_tokens else 0.0,
            "gen_throughput": 0.0,
            "cache_hit_rate": 0.0,
            "utilization": 0.0,
            "max_running_requests": self.extra_server_args.get("max_running_requests") or b.server_args().get(
                "max_running_requests"
            ),
        }
        if request.query.get("format") == "prometheus":
            lines = []
            for key, value in load.items():
                if key != "dp_rank" and isinstance(value, (int, float)):
                    lines.append(f"# TYPE sglang_{key} gauge\nsglang_{key}{{dp_rank=\"0\"}} {value}")
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
        return _json(
            {
                "timestamp": datetime.now(UTC).isoformat(),
                "version": SGLANG_VERSION,
                "accelerator": None,
                "num_accelerators": 0,
                "loads": [load],
            }
        )

    async def handle_models(self, request: web.Request) -> web.Response:
        return _json(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.served_model_name,
                        "object": "model",
                        "created": int(self.started_at),
                        "owned_by": "sglang",
                        "root": self.backend.model_path,
                        "parent": None,
                        "max_model_len": self.backend.context_length,
                    }
                ],
            }
        )

    async def handle_flush_cache(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        running, waiting = self.load_counts()
        if running or waiting:
            return web.Response(
                status=400,
                text=f"Cache not flushed because there are pending requests. #queue-req: {waiting}, #running-req: {running}",
            )
        return web.Response(text=FLUSH_OK_TEXT)

    async def handle_update_weight_version(self, request: web.Request) -> web.Response:
        try:
            body = loads(await request.read())
        except ValueError:
            return _error("Invalid JSON body", contract=True)
        new = body.get("new_version") if isinstance(body, dict) else None
        if not isinstance(new, str) or not new:
            return _error("new_version must be a non-empty string")
        if body.get("abort_all_requests"):
            self.abort(abort_all=True)
        self.weight_version = new
        return _json({"success": True, "message": f"Weight version updated to {new}", "new_version": new})

    async def handle_get_weight_version(self, request: web.Request) -> web.Response:
        return _json({"weight_version": self.weight_version})

    async def handle_pause(self, request: web.Request) -> web.Response:
        """Stop admitting requests. ``mode`` "abort" (default) also aborts in-flight ones; other modes
        leave them running (we do not retract or freeze KV state)."""
        raw = await request.read()
        body = loads(raw) if raw else {}
        mode = body.get("mode", "abort") if isinstance(body, dict) else "abort"
        self._unpaused.clear()
        if mode == "abort":
            self.abort(abort_all=True)
        return _json({"success": True, "message": "Generation paused."})

    async def handle_continue(self, request: web.Request) -> web.Response:
        self._unpaused.set()
        return _json({"success": True, "message": "Generation continued."})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        running, waiting = self.load_counts()
        name = self.served_model_name
        rows = [
            ("sglang:num_running_reqs", "gauge", running),
            ("sglang:num_queue_reqs", "gauge", waiting),
            ("sglang:num_requests_total", "counter", self.num_requests_total),
            ("sglang:num_aborted_requests_total", "counter", self.num_aborted_total),
            ("sglang:prompt_tokens_total", "counter", self.prompt_tokens_total),
            ("sglang:generation_tokens_total", "counter", self.generation_tokens_total),
        ]
        lines = []
        for metric, kind, value in rows:
            lines.append(f"# TYPE {metric} {kind}")
            lines.append(f'{metric}{{model_name="{name}"}} {value}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


class EngineHandle:
    """What both engines expose around their `EngineServer`: URL, recorded payloads, abort, lifecycle.

    Subclasses build `self.server` (with their backend) in `__init__`.
    """

    server: EngineServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def recorded_requests(self) -> list[dict[str, Any]]:
        """The last /generate payloads received (parsed JSON, oldest first)."""
        return list(self.server.recorded)

    def clear_recorded(self) -> None:
        self.server.recorded.clear()

    @property
    def weight_version(self) -> str:
        return self.server.weight_version

    @weight_version.setter
    def weight_version(self, value: str) -> None:
        self.server.weight_version = value

    def abort(self, rid: str | None = None, abort_all: bool = False) -> int:
        return self.server.abort(rid, abort_all)

    def load_counts(self) -> tuple[int, int]:
        return self.server.load_counts()

    async def start(self) -> Any:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---------------------------------------------------------------------- running servers


async def _call_stop(value: Any) -> None:
    """Default shutdown: engines and clusters all have an async ``stop()``."""
    await value.stop()


class ServerThread:
    """An asyncio server running in a daemon thread, for synchronous code and tests.

    ``value`` is whatever the async factory returned (an engine or a cluster); ``url`` its URL.
    """

    def __init__(self, factory: Callable[[], Awaitable[Any]],
                 stop: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self._factory = factory
        self._stop_fn = stop or _call_stop
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.value: Any = None
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kuberollout-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("engine failed to start") from self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._stop_event = asyncio.Event()
            try:
                self.value = await self._factory()
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            await self._stop_event.wait()
            await self._stop_fn(self.value)

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    @property
    def url(self) -> str:
        return str(self.value.url)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self._stop_event is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def run_until_signal(start: Callable[[], Awaitable[Any]], stop: Callable[[Any], Awaitable[None]]) -> None:
    """Start something, then wait for SIGINT/SIGTERM and stop it cleanly (CLI entry points)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, done.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread / Windows
            pass
    value = await start()
    try:
        await done.wait()
    finally:
        await stop(value)
