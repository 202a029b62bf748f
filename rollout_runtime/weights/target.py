"""What a weight update asks of an SGLang 0.5.23 server, and the request bodies that ask it.

The sequence, per server (sglang/srt/entrypoints/http_server.py, managers/io_struct.py):

1. `POST /pause_generation {"mode": M}`. `abort` aborts every running request (clients get
   `finish_reason.type == "abort"` with their partial output) and waits until they drained;
   `retract` stops decoding and moves running requests back to the waiting queue, freeing their KV
   cache (recomputed after the pause, under the new weights); `in_place` stops decoding and keeps
   the requests with their KV cache. New requests wait at the server's door during the pause.
2. `POST /update_weights_from_disk {"model_path", "load_format", "weight_version", "flush_cache"}`:
   HTTP 200 `{"success": true, ...}`, or 400 with the server's `message` (a missing path, a tensor
   whose shape does not match). The load flushes the cache by default, and a flush is refused while
   requests still hold KV cache: after an `in_place` pause it must be asked not to flush, or the
   call fails after the weights were already swapped.
3. `POST /continue_generation {}`: paused requests continue; their `meta_info.weight_versions`
   records which tokens came from which version.

`GET /model_info` carries the served `weight_version` ("default" for a server's own weights;
there is no `/get_weight_version` route).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from rollout_runtime.contract import weight_version_wire

PauseMode = Literal["retract", "abort", "in_place"]
PAUSE_MODES: Final[tuple[str, ...]] = get_args(PauseMode)

PAUSE_PATH: Final = "/pause_generation"
UPDATE_PATH: Final = "/update_weights_from_disk"
CONTINUE_PATH: Final = "/continue_generation"
MODEL_INFO_PATH: Final = "/model_info"
WORKERS_PATH: Final = "/workers"


@dataclass(frozen=True)
class WeightsTarget:
    """The weights every server should serve: a directory, a format, and the policy version."""

    path: str
    version: int
    load_format: str | None = None
    pause_mode: PauseMode = "retract"

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("weights path: must not be empty")
        if self.version < 0:
            raise ValueError(f"weights version: must be a non-negative integer, got {self.version}")
        if self.pause_mode not in PAUSE_MODES:
            raise ValueError(f"pause mode: {self.pause_mode!r} is not one of {', '.join(PAUSE_MODES)}")

    def pause_body(self) -> dict[str, Any]:
        return {"mode": self.pause_mode}

    def update_body(self, paused: bool) -> dict[str, Any]:
        """`UpdateWeightFromDiskReqInput`; no cache flush after an in_place pause (requests hold it)."""
        body: dict[str, Any] = {
            "model_path": self.path,
            "weight_version": weight_version_wire(self.version),
            "abort_all_requests": False,
            "flush_cache": not (paused and self.pause_mode == "in_place"),
        }
        if self.load_format:
            body["load_format"] = self.load_format
        return body

    def describe(self) -> str:
        fmt = f", load format {self.load_format}" if self.load_format else ""
        return f"version {self.version} from {self.path}{fmt}"
