"""Loading user code and tokenizers by name, with errors that say what to fix."""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path
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


#: Where the tokenizer is configured, as the user wrote it (slime flag; RolloutJob field).
TOKENIZER_SETTING = "hf_checkpoint (dataset.tokenizer in a RolloutJob)"


@functools.cache
def load_tokenizer(path: str) -> Any:
    """The tokenizer at a local folder or a Hugging Face repo id, or a PluginError that says which and what to check.

    transformers treats anything that is not an existing folder as a repo id, so a mistyped or
    unmounted path used to fail with "Repo id must be in the form 'repo_name'...".
    """
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    is_path = path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path
    folder_hint = ("a folder holding tokenizer.json or tokenizer_config.json, mounted in the pod in a cluster "
                   "(spec.runtime.volumes and volumeMounts)")
    if is_path and not folder.is_dir():
        raise PluginError(f"{TOKENIZER_SETTING} {path!r}: no such local directory; give {folder_hint}, or a "
                          f"Hugging Face repo id such as Qwen/Qwen3-8B")
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    except (OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if folder.is_dir():
            raise PluginError(f"{TOKENIZER_SETTING} {path!r}: the directory holds no tokenizer that loads ({detail}); "
                              f"it needs tokenizer.json or tokenizer_config.json") from None
        raise PluginError(f"{TOKENIZER_SETTING} {path!r}: no such local directory, and no Hugging Face repo by that "
                          f"id could be loaded ({detail}); check the repo id, and the network and HF_TOKEN for a "
                          f"private repo, or give {folder_hint}") from None


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
