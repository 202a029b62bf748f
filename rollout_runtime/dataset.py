"""Prompt datasets: JSONL or Parquet rows into prompt `Sample`s (slime's `utils/data.Dataset`).

Unlike slime, a bad row is an error that names the file, the row and the key instead of
a skipped line or a bare KeyError: a dataset with the wrong input key would otherwise
train on nothing, silently.
"""

from __future__ import annotations

import json
import logging
import random
import re
from typing import Any

import fsspec

from rollout_runtime.types import Sample

log = logging.getLogger(__name__)

_SLICE = re.compile(r"^(?P<path>.*)@\[(?P<start>-?\d*):(?P<end>-?\d*)\]$")
# slime's MultimodalTypes: media type -> its placeholder in prompt text
PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}


class DatasetError(ValueError):
    """A dataset that cannot be read as configured; says which row, which key and the fix."""


def split_slice(path: str) -> tuple[str, slice | None]:
    m = _SLICE.match(path)
    if not m:
        return path, None
    start = int(m["start"]) if m["start"] else None
    end = int(m["end"]) if m["end"] else None
    return m["path"], slice(start, end)


def read_rows(path: str) -> list[dict[str, Any]]:
    """All rows of a .jsonl or .parquet file (local path or fsspec URL), with optional @[a:b]."""
    real, sl = split_slice(path)
    if real.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fsspec.open(real, "rb") as fh:
            rows = pq.read_table(fh).to_pylist()
    elif real.endswith((".jsonl", ".json")):
        rows = []
        try:
            fh_ctx = fsspec.open(real, "rt", encoding="utf-8")
            with fh_ctx as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DatasetError(f"{real}: line {lineno} is not valid JSON ({exc.msg}); fix or remove the line") from None
                    if not isinstance(row, dict):
                        raise DatasetError(f"{real}: line {lineno} is a {type(row).__name__}, expected a JSON object")
                    rows.append(row)
        except FileNotFoundError:
            raise DatasetError(f"prompt data not found: {real}") from None
    else:
        raise DatasetError(f"{real}: unsupported dataset format; use .jsonl or .parquet")
    return rows[sl] if sl is not None else rows


class Dataset:
    """Prompt samples built from rows; `samples` is the current epoch's order."""

    def __init__(
        self,
        path: str,
        tokenizer: Any,
        max_length: int | None,
        *,
        prompt_key: str = "input",
        label_key: str | None = None,
        tool_key: str | None = "tools",
        metadata_key: str = "metadata",
        seed: int = 42,
        apply_chat_template: bool = False,
        apply_chat_template_kwargs: dict[str, Any] | None = None,
        processor: Any = None,
        multimodal_keys: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.seed = seed
        self.processor = processor
        self.multimodal_keys = multimodal_keys or None
        self.origin_samples: list[Sample] = []
        rows = read_rows(path)
        dropped = 0
        for i, row in enumerate(rows):
            sample = self._row_to_sample(i, row, tokenizer, prompt_key, label_key, tool_key, metadata_key,
                                         apply_chat_template, apply_chat_template_kwargs or {})
            if max_length is not None and _prompt_len(sample.prompt, tokenizer, apply_chat_template_kwargs) > max_length:
                dropped += 1
                continue
            self.origin_samples.append(sample)
        if dropped:
            log.info("%s: dropped %d of %d prompts longer than %d tokens", path, dropped, len(rows), max_length)
        if not self.origin_samples:
            raise DatasetError(f"{path}: no usable prompts ({len(rows)} rows, {dropped} longer than max prompt length)")
        self.samples = self.origin_samples
        self.epoch_id = 0

    def _row_to_sample(self, i: int, row: dict[str, Any], tokenizer: Any, prompt_key: str, label_key: str | None,
                       tool_key: str | None, metadata_key: str, apply_template: bool, template_kwargs: dict[str, Any]) -> Sample:
        where = f"{self.path}: row {i}"
        if prompt_key not in row:
            raise DatasetError(
                f"{where} has no input key {prompt_key!r} (keys: {', '.join(sorted(map(str, row)))}); "
                f"set input_key (dataset.inputKey) to the key that holds the prompt"
            )
        prompt = row[prompt_key]
        if not isinstance(prompt, (str, list)):
            raise DatasetError(f"{where}: {prompt_key!r} must be a string or a list of chat messages, got {type(prompt).__name__}")
        if isinstance(prompt, list):
            for m in prompt:
                if not isinstance(m, dict) or "role" not in m or "content" not in m:
                    raise DatasetError(f"{where}: chat messages in {prompt_key!r} need 'role' and 'content' keys")
        multimodal_inputs = None
        if self.multimodal_keys:
            prompt, multimodal_inputs = build_multimodal_messages(where, row, prompt, self.multimodal_keys)
        metadata = row.get(metadata_key) or {}
        if not isinstance(metadata, dict):
            raise DatasetError(f"{where}: {metadata_key!r} must be an object, got {type(metadata).__name__}")
        metadata = dict(metadata)
        tools = None
        if tool_key and row.get(tool_key) is not None:
            tools = row[tool_key]
            if isinstance(tools, str):
                try:
                    tools = json.loads(tools)
                except json.JSONDecodeError:
                    raise DatasetError(f"{where}: {tool_key!r} is a string but not JSON") from None
            if hasattr(tools, "tolist"):
                tools = tools.tolist()
            if not isinstance(tools, list):
                raise DatasetError(f"{where}: {tool_key!r} must be a list of tool definitions")
            metadata["tools"] = tools
        label = None
        if label_key is not None:
            if label_key not in row:
                raise DatasetError(f"{where} has no label key {label_key!r} (keys: {', '.join(sorted(map(str, row)))}); "
                                   f"set label_key (dataset.labelKey) or remove it")
            label = row[label_key]
        if apply_template:
            if tokenizer is None:
                raise DatasetError("apply_chat_template needs a tokenizer: set hf_checkpoint (dataset.tokenizer)")
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            # A multimodal processor's template knows image parts; a text tokenizer's is used otherwise.
            renderer = self.processor if self.processor is not None and multimodal_inputs else tokenizer
            prompt = renderer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True,
                                                  **template_kwargs)
        return Sample(prompt=prompt, label=label, metadata=metadata, multimodal_inputs=multimodal_inputs)

    def shuffle(self, new_epoch_id: int) -> None:
        """Seeded per-epoch permutation, the same order slime's global-RNG shuffle gives."""
        if self.epoch_id == new_epoch_id and self.samples is not self.origin_samples:
            return
        perm = list(range(len(self.origin_samples)))
        random.Random(self.seed + new_epoch_id).shuffle(perm)
        self.samples = [self.origin_samples[i] for i in perm]
        self.epoch_id = new_epoch_id

    def __len__(self) -> int:
        return len(self.samples)


def build_multimodal_messages(where: str, row: dict[str, Any], prompt: str | list[dict[str, Any]],
                              multimodal_keys: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """slime's rule: each `<image>` (`<video>`, `<audio>`) placeholder in string contents becomes a
    `{"type": "image", "image": item}` part, items taken in order from the row key `multimodal_keys` names;
    counts must match. Returns the messages and `{"images": [...], ...}` (the raw items: paths, URLs, base64),
    or None when the row has no media."""
    media: dict[str, tuple[str, list[Any]]] = {}
    for kind, key in multimodal_keys.items():
        if kind not in PLACEHOLDERS:
            raise DatasetError(f"multimodal_keys: unknown media type {kind!r}; use {', '.join(PLACEHOLDERS)}")
        if row.get(key) is not None:
            items = row[key]
            media[PLACEHOLDERS[kind]] = (kind, list(items) if isinstance(items, (list, tuple)) else [items])
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if not media:
        return messages, None
    remaining = {p: list(items) for p, (_, items) in media.items()}
    pattern = re.compile("(" + "|".join(re.escape(p) for p in media) + ")")
    for message in messages:
        if not isinstance(message["content"], str):
            continue
        parts: list[dict[str, Any]] = []
        for segment in pattern.split(message["content"]):
            if not segment:
                continue
            if segment in media:
                kind = media[segment][0]
                if not remaining[segment]:
                    raise DatasetError(f"{where}: more {segment} placeholders than {kind}s under "
                                       f"{multimodal_keys[kind]!r}")
                item = remaining[segment].pop(0)
                parts.append(item if isinstance(item, dict) else {"type": kind, kind: item})
            else:
                parts.append({"type": "text", "text": segment})
        message["content"] = parts
    for placeholder, left in remaining.items():
        if left:
            kind = media[placeholder][0]
            raise DatasetError(f"{where}: {len(left)} more {kind}(s) under {multimodal_keys[kind]!r} than "
                               f"{placeholder} placeholders in the prompt")
    inputs = {f"{kind}s": [p.get(kind) for m in messages if isinstance(m["content"], list)
                           for p in m["content"] if p.get("type") == kind] or None for kind in multimodal_keys}
    return messages, inputs


def _prompt_len(prompt: str | list[dict[str, Any]], tokenizer: Any, template_kwargs: dict[str, Any] | None) -> int:
    if tokenizer is None:
        raise DatasetError("rollout_max_prompt_len needs a tokenizer to count tokens: set hf_checkpoint")
    if isinstance(prompt, str):
        return len(tokenizer.encode(prompt, add_special_tokens=False))
    ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, **(template_kwargs or {}))
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)
