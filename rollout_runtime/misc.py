"""Loading user code and tokenizers by name, with errors that say what to fix; slime's small helpers."""

from __future__ import annotations

import base64
import functools
import importlib
import inspect
from collections.abc import Iterable
from typing import Any, Callable

import numpy as np

from rollout_runtime import slime_imports


class PluginError(ValueError):
    """A configured dotted path that does not resolve to a callable."""


@functools.cache
def load_function(path: str) -> Callable[..., Any]:
    """`pkg.mod.attr` -> the attribute (slime's load_function, with a clear error)."""
    module_name, _, attr = path.rpartition(".")
    slime_imports.install()  # plugins written for slime import slime.*; see rollout_runtime/slime_imports.py
    if not module_name:
        raise PluginError(f"{path!r} is not a dotted path like my_pkg.my_mod.my_fn")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import {module_name!r} for {path!r}: {exc}; is it on PYTHONPATH?") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PluginError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})") from None


@functools.cache
def accepts_kwarg(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@functools.cache
def _tokenizer(path: str, kwargs: tuple[tuple[str, Any], ...]) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, **dict(kwargs))
    except OSError as exc:
        raise PluginError(f"cannot load a tokenizer from hf_checkpoint={path!r}: {exc}") from None


def load_tokenizer(name_or_path: str, **kwargs: Any) -> Any:
    """`AutoTokenizer.from_pretrained(name_or_path, **kwargs)`, loaded once per path and arguments.

    slime's signature (its plugins call `load_tokenizer(path, trust_remote_code=True)`); remote code is
    trusted by default, as slime's own callers always ask for it.
    """
    kwargs.setdefault("trust_remote_code", True)
    return _tokenizer(name_or_path, tuple(sorted(kwargs.items())))


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class SingletonMeta(type):
    """slime's singleton metaclass (its plugins use it for their own per-process state)."""

    _instances: dict[type, Any] = {}

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls not in cls._instances:
            cls._instances[cls] = super().__call__(*args, **kwargs)
        return cls._instances[cls]

    def clear_instances(cls) -> None:
        cls._instances = {}


def should_run_periodic_action(rollout_id: int, interval: int | None, num_rollout_per_epoch: int | None = None,
                               num_rollout: int | None = None) -> bool:
    """slime's trigger for eval and save after `rollout_id`: every `interval` rollouts, at each epoch's end,
    and after the last rollout."""
    if interval is None:
        return False
    if num_rollout is not None and rollout_id == num_rollout - 1:
        return True
    step = rollout_id + 1
    return step % interval == 0 or (bool(num_rollout_per_epoch) and step % num_rollout_per_epoch == 0)


def decode_int32_meta_array(meta_info: dict[str, Any], keys: str | Iterable[str]) -> list[int] | None:
    """An int32 array from SGLang meta info (base64 bytes or a list) under the first of `keys` present.

    slime returns a torch tensor; we return a list of ints (torch is not a runtime dependency).
    """
    for key in (keys,) if isinstance(keys, str) else keys:
        if key in meta_info:
            value = meta_info[key]
            break
    else:
        return None
    if value is None:
        return None
    if isinstance(value, str):
        value = base64.b64decode(value.encode("ascii"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(value), dtype=np.int32).tolist()
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [int(v) for v in np.asarray(value, dtype=np.int64).reshape(-1)]
