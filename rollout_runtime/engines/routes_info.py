"""Health and information routes, as ``http_server`` and ``v1_loads`` of sglang 0.5.23 serve them.

* ``GET /health`` and ``GET /health_generate`` are one handler (``http_server.health_generate``):
  it submits a one-token generation (``input_ids=[0]``, rid ``HEALTH_CHECK_<hex>``), then checks
  once a second whether *any* output arrived since it started; 200 (empty body) as soon as one
  did, 503 after ``SGLANG_HEALTH_CHECK_TIMEOUT`` (20) seconds. The generation goes through the
  normal path, so it waits behind a pause and behind a weight update: a paused or updating server
  fails its health checks after 20 s, and a failed check marks the server unhealthy (``/ready``
  503) until one passes. ``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false`` makes ``/health`` a
  plain 200.
* ``GET /ready``: 200 or 503 with an empty body; 503 while paused (``TokenizerManager.is_ready``).
* ``/model_info`` (and deprecated ``/get_model_info``): ``weight_version`` is where the served
  version is read (there is no ``/get_weight_version`` route). ``/server_info`` (and
  ``/get_server_info``): server arguments plus ``max_req_input_len``. ``/v1/models``:
  ``max_model_len`` is the context length in effect.
* ``/v1/loads``: the core keys of ``load_snapshot.LoadSnapshot`` (no ``num_total_reqs``), plus the
  ``disaggregation`` and ``queues`` sections unless ``include=core``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .core import EngineCore
from .generation import serve
from .params import GenerateItem, GenerateRequest
from .wire import HEALTH_CHECK_RID_PREFIX, SGLANG_VERSION, health_check_timeout, http_exception, json_response

#: ``health_generate`` sleeps this long between checks for output.
HEALTH_POLL_S = 1.0
LOAD_SECTIONS = frozenset({"core", "memory", "spec", "lora", "disagg", "queues", "all"})


def _env_false(name: str) -> bool:
    return os.environ.get(name, "true").lower() in ("false", "0", "no", "n")


class InfoRoutes:
    """Health, readiness, model/server info, loads, models and metrics of one engine."""

    def __init__(self, core: EngineCore, host: str, port_of: Any, extra_server_args: dict[str, Any]) -> None:
        self.core = core
        self.host = host
        self._port_of = port_of
        self.extra_server_args = extra_server_args

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/health", self.handle_health)
        router.add_get("/health_generate", self.handle_health)
        router.add_get("/ready", self.handle_ready)
        for path in ("/model_info", "/get_model_info"):
            router.add_get(path, self.handle_model_info)
        for path in ("/server_info", "/get_server_info"):
            router.add_get(path, self.handle_server_info)
        router.add_get("/v1/loads", self.handle_loads)
        router.add_get("/v1/models", self.handle_models)
        router.add_get("/v1/models/{model:.*}", self.handle_model)
        router.add_get("/metrics", self.handle_metrics)

    # ------------------------------------------------------------------ health

    async def handle_health(self, request: web.Request) -> web.Response:
        core = self.core
        if core.stopping:
            return web.Response(status=503)
        if request.path == "/health" and _env_false("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION"):
            return web.Response(status=200)
        item = GenerateItem(rid=f"{HEALTH_CHECK_RID_PREFIX}_{uuid.uuid4().hex}", index=0, text=None, input_ids=[0],
                            sampling={"max_new_tokens": 1, "temperature": 0.0})
        task = asyncio.ensure_future(serve(core, GenerateRequest([item], False, False), count=False))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        tic = time.time()
        deadline = tic + health_check_timeout()
        try:
            while time.time() < deadline:
                await asyncio.sleep(HEALTH_POLL_S)
                if core.last_receive > tic:
                    core.healthy = True
                    return web.Response(status=200)
            core.healthy = False
            return web.Response(status=503)
        finally:
            task.cancel()

    async def handle_ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.core.is_ready() else 503)

    # ------------------------------------------------------------------ info

    def model_info(self) -> dict[str, Any]:
        core = self.core
        info: dict[str, Any] = {
            "model_path": core.model_path,
            "served_model_name": core.served_model_name,
            "tokenizer_path": core.codec.name_or_path,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": core.served_version,
            "load_format": core.load_format,
            "reasoning_parser": None,
            "tool_call_parser": None,
            "disaggregation_mode": "null",
            "has_image_understanding": False,
            "has_audio_understanding": False,
            "model_type": None,
            "architectures": None,
        }
        info.update(core.backend.model_info())
        return info

    async def handle_model_info(self, request: web.Request) -> web.Response:
        return json_response(self.model_info())

    def server_info(self) -> dict[str, Any]:
        core = self.core
        b = core.backend
        max_running = self.extra_server_args.get("max_running_requests") or b.server_args().get("max_running_requests")
        info: dict[str, Any] = {
            "model_path": b.model_path,
            "tokenizer_path": core.codec.name_or_path,
            "served_model_name": b.served_model_name,
            "host": self.host,
            "port": self._port_of(),
            "tp_size": 1,
            "dp_size": 1,
            "pp_size": 1,
            "ep_size": 1,
            "allow_auto_truncate": core.allow_auto_truncate,
            "weight_version": core.initial_weight_version,
            "load_format": "auto",
            "disaggregation_mode": "null",
            "incremental_streaming_output": False,
            "skip_server_warmup": True,
            "launch_command": "kuberollout engine",
            "status": "ready",
            "max_total_num_tokens": core.context_length * 64,
            "max_req_input_len": core.context_length - 6,
            "startup_time": core.started_at,
            "internal_states": [{"world_size": 1, "startup_time": core.started_at,
                                 "effective_max_running_requests_per_dp": max_running, "last_gen_throughput": 0.0}],
            "version": SGLANG_VERSION,
            "frontend": "python",
        }
        info.update(b.server_args())
        info.update(self.extra_server_args)
        return info

    async def handle_server_info(self, request: web.Request) -> web.Response:
        return json_response(self.server_info())

    def _card(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": int(time.time()), "owned_by": "sglang", "root": model,
                "parent": None, "max_model_len": self.core.context_length}

    async def handle_models(self, request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [self._card(self.core.served_model_name)]})

    async def handle_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model != self.core.served_model_name:
            return json_response({"error": {"message": f"The model '{model}' does not exist", "type": "invalid_request_error",
                                            "param": "model", "code": "model_not_found"}}, 404)
        return json_response(self._card(model))

    # ------------------------------------------------------------------ loads and metrics

    def load(self, sections: set[str] | None) -> dict[str, Any]:
        """One DP rank's ``LoadSnapshot.to_dict(include)``."""
        core = self.core
        running, waiting = core.load_counts()
        used = sum(len(s.input_ids) + len(s.out_ids) for s in core.active if s.running)
        pending = sum(len(s.input_ids) for s in core.active if not s.running)
        max_tokens = core.context_length * 64
        max_running = self.extra_server_args.get("max_running_requests") or core.backend.server_args().get(
            "max_running_requests") or 0
        load: dict[str, Any] = {
            "timestamp": time.time(),
            "dp_rank": 0,
            "num_running_reqs": running,
            "num_waiting_reqs": waiting,
            "num_waiting_uncached_tokens": pending,
            "num_used_tokens": used,
            "num_total_tokens": used + pending,
            "num_active_tokens": used + pending,
            "num_prealloc_ready_tokens": 0,
            "max_total_num_tokens": max_tokens,
            "max_running_requests": max_running,
            "token_usage": round(used / max_tokens, 4) if max_tokens else 0.0,
            "gen_throughput": 0.0,
            "cache_hit_rate": 0.0,
            "utilization": 0.0,
            "total_prefill_uncached_tokens": core.prompt_tokens_total,
            "total_prefill_busy_us": 0,
            "decode_moments": None,
        }
        if sections is not None and "all" not in sections and sections == {"core"}:
            return load
        if sections is None or "all" in sections or "disagg" in sections:
            load["disaggregation"] = {"mode": "null", "prefill_bootstrap_queue_reqs": 0, "prefill_inflight_queue_reqs": 0,
                                      "decode_prealloc_queue_reqs": 0, "decode_transfer_queue_reqs": 0,
                                      "decode_retracted_queue_reqs": 0, "kv_transfer_speed_gb_s": 0.0,
                                      "kv_transfer_latency_ms": 0.0}
        if sections is None or "all" in sections or "queues" in sections:
            retracted = sum(1 for s in core.active if not s.running and s.retractions)
            load["queues"] = {"waiting": waiting, "grammar": 0, "paused": 0, "retracted": retracted,
                              "prealloc_ready": 0}
        return load

    async def handle_loads(self, request: web.Request) -> web.Response:
        include = request.query.get("include")
        sections = {s.strip() for s in include.split(",")} if include else None
        if sections is not None and not sections <= LOAD_SECTIONS:
            return http_exception(f"Invalid include sections: {sections - LOAD_SECTIONS}. "
                                  f"Valid options: {sorted(LOAD_SECTIONS)}", 400)
        load = self.load(sections)
        if request.query.get("format") == "prometheus":
            return web.Response(text=_prometheus(load), content_type="text/plain")
        return json_response({"timestamp": datetime.now(UTC).isoformat(), "version": SGLANG_VERSION,
                              "accelerator": None, "num_accelerators": 1, "loads": [load]})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        core = self.core
        running, waiting = core.load_counts()
        name = core.served_model_name
        rows = [
            ("sglang:num_running_reqs", "gauge", running),
            ("sglang:num_queue_reqs", "gauge", waiting),
            ("sglang:num_requests_total", "counter", core.num_requests_total),
            ("sglang:num_aborted_requests_total", "counter", core.num_aborted_total),
            ("sglang:prompt_tokens_total", "counter", core.prompt_tokens_total),
            ("sglang:generation_tokens_total", "counter", core.generation_tokens_total),
        ]
        lines = []
        for metric, kind, value in rows:
            lines.append(f"# TYPE {metric} {kind}")
            lines.append(f'{metric}{{model_name="{name}"}} {value}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _prometheus(load: dict[str, Any]) -> str:
    """``v1_loads._format_loads_prometheus`` for one DP rank."""
    prefixes = {"speculative": "spec", "disaggregation": "disagg"}
    lines = []
    for key, value in load.items():
        if key == "dp_rank":
            continue
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                if isinstance(sub_value, (int, float)):
                    name = f"sglang_{prefixes.get(key, key)}_{sub}"
                    lines.append(f'# TYPE {name} gauge\n{name}{{dp_rank="0"}} {sub_value}')
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f'# TYPE sglang_{key} gauge\nsglang_{key}{{dp_rank="0"}} {value}')
    return "\n".join(lines) + "\n"
