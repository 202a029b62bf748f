"""Loading user code and tokenizers by name, with errors that say what to fix."""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Callable


class PluginError(ValueError):
    """A configured dotted path that does not resolve to a callable."""


@functools.cache
def load_function(path: str) -> Callable[..., Any]:
    """`pkg.mod.attr` -> the attribute (slime's load_function, with a clear error)."""
    module_name, _, attr = path.rpartition(".")
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
def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    except OSError as exc:
        raise PluginError(f"cannot load a tokenizer from hf_checkpoint={path!r}: {exc}") from None


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
