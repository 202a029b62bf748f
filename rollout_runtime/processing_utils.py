"""Tokenizers, multimodal processors and images for SGLang: slime's `processing_utils`.

`load_processor` returns None for a text-only model (Hugging Face hands back a tokenizer there), which is
how slime code tells the two apart. Images go to SGLang as `data:image/png;base64,...` strings in
`image_data`, encoded here once per image.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
from typing import Any

from rollout_runtime.misc import load_tokenizer

__all__ = ["load_tokenizer", "load_processor", "build_processor_kwargs", "encode_image_for_rollout_engine",
           "process_vision_info", "open_image"]

log = logging.getLogger(__name__)


@functools.cache
def _processor(name_or_path: str, kwargs: tuple[tuple[str, Any], ...]) -> Any:
    from transformers import AutoProcessor, PreTrainedTokenizerBase, ProcessorMixin

    try:
        proc = AutoProcessor.from_pretrained(name_or_path, **dict(kwargs))
    except (OSError, ValueError) as exc:
        log.debug("no processor at %s: %s", name_or_path, exc)
        return None
    if isinstance(proc, PreTrainedTokenizerBase) or not isinstance(proc, ProcessorMixin):
        return None
    return proc


def load_processor(name_or_path: str, **kwargs: Any) -> Any:
    """The multimodal processor of a checkpoint, or None for a text-only model (loaded once per path)."""
    kwargs.setdefault("trust_remote_code", True)
    return _processor(name_or_path, tuple(sorted(kwargs.items())))


def build_processor_kwargs(multimodal_inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Processor keyword arguments: text as plain lists, media outputs as tensors (as slime calls processors)."""
    forced = {"return_tensors": "pt"}
    out = dict(multimodal_inputs) if multimodal_inputs else {}
    out["text_kwargs"] = {**out.get("text_kwargs", {}), "return_tensors": None, "return_mm_token_type_ids": False}
    for key in ("audio_kwargs", "images_kwargs", "videos_kwargs"):
        out[key] = {**out.get(key, {}), **forced}
    return out


def open_image(item: Any) -> Any:
    """A PIL image from a PIL image, a path, a `data:` URI or a bare base64 string."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return item
    if isinstance(item, dict):
        item = item.get("image") or item.get("path") or item.get("url")
    if isinstance(item, (bytes, bytearray)):
        return Image.open(io.BytesIO(item))
    if not isinstance(item, str):
        raise TypeError(f"cannot read an image from {type(item).__name__}")
    if item.startswith("data:"):
        return Image.open(io.BytesIO(base64.b64decode(item.split(",", 1)[1])))
    try:
        return Image.open(item)
    except (FileNotFoundError, OSError):
        return Image.open(io.BytesIO(base64.b64decode(item)))


def encode_image_for_rollout_engine(image: Any) -> str:
    """An image as SGLang's `image_data` entry: RGB, PNG, base64 `data:` URI."""
    image = open_image(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def process_vision_info(prompt: list[dict[str, Any]], processor: Any = None) -> dict[str, Any]:
    """{"images": [...], "videos": None} from the image parts of chat messages (slime's generic fallback)."""
    images = [open_image(part.get("image")) for msg in prompt if isinstance(msg.get("content"), list)
              for part in msg["content"] if isinstance(part, dict) and part.get("type") == "image"
              and part.get("image") is not None]
    return {"images": images or None, "videos": None}
