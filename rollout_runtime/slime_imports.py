"""The `slime` import layer: code written for slime imports `slime.*` and gets this runtime's modules.

Every slime plugin starts with `from slime.utils.types import Sample`, `from slime.utils.http_utils import
post`, `from slime.rollout.sglang_rollout import GenerateState`... A meta-path finder answers those names
with the runtime's own module objects: `sys.modules["slime.utils.types"] is rollout_runtime.types`, so a
`Sample` built by slime-written code *is* a `rollout_runtime.types.Sample` and `isinstance` agrees both
ways. Nothing is copied or installed, and the user's files are not changed.

Why a finder and not a shipped `slime` package: a real slime installation must keep working. The finder
steps aside when another finder on `sys.meta_path` can import `slime` (a real install, an editable
checkout, a `slime/` folder on `sys.path`), and stays out of an import of `slime` that already happened
without it. It is installed by `install()`, which `load_function` (every plugin path the runtime loads)
and `rollout-runtime run` call; importing `rollout_runtime` alone changes no import state.

Names under `slime` that are not part of the rollout layer (the trainer, Ray actors, Megatron code) raise
`ModuleNotFoundError` naming what the layer provides.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types
from typing import Any, Sequence

# slime module -> the runtime module that *is* it (the same object)
MODULES: dict[str, str] = {
    "slime.utils.types": "rollout_runtime.types",
    "slime.utils.http_utils": "rollout_runtime.http_client",
    "slime.utils.mask_utils": "rollout_runtime.mask_utils",
    "slime.utils.misc": "rollout_runtime.misc",
    "slime.utils.async_utils": "rollout_runtime.async_utils",
    "slime.utils.processing_utils": "rollout_runtime.processing_utils",
    "slime.utils.eval_config": "rollout_runtime.eval_config",
    "slime.rollout.base_types": "rollout_runtime.base_types",
    "slime.rollout.sglang_rollout": "rollout_runtime.sglang_rollout",
    "slime.rollout.data_source": "rollout_runtime.data_source",
    "slime.rollout.sft_rollout": "rollout_runtime.sft_rollout",
    "slime.rollout.on_policy_distillation": "rollout_runtime.on_policy_distillation",
}
# slime package -> runtime package; its submodules map name for name (rm_hub.math_utils, filter_hub.base_types...)
PACKAGES: dict[str, str] = {
    "slime.rollout.rm_hub": "rollout_runtime.rm_hub",
    "slime.rollout.filter_hub": "rollout_runtime.filter_hub",
}
# Plain namespace packages that only hold the modules above.
NAMESPACES = ("slime", "slime.utils", "slime.rollout")

_MARK = "__kuberollout_slime_layer__"


def _not_provided(fullname: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(
        f"No module named {fullname!r}: kuberollout's slime import layer provides the rollout modules "
        f"({', '.join(provided())}); slime's trainer-side modules are not part of a rollout runtime", name=fullname)


def target_of(fullname: str) -> str | None:
    """The runtime module a slime name stands for, or None for a namespace / unknown name."""
    if fullname in MODULES:
        return MODULES[fullname]
    for pkg, target in PACKAGES.items():
        if fullname == pkg or fullname.startswith(pkg + "."):
            return target + fullname[len(pkg):]
    return None


def provided() -> list[str]:
    return sorted([*MODULES, *(p + ".*" for p in PACKAGES)])


class SlimeAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `slime.*` names listed above and loads them as the runtime's existing module objects."""

    def __init__(self) -> None:
        self._original_specs: dict[str, Any] = {}

    # ------------------------------------------------------------------ finder
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "slime" and not fullname.startswith("slime."):
            return None
        if fullname == "slime":
            if self._real_slime_findable():
                return None
        elif not getattr(sys.modules.get("slime"), _MARK, False):
            return None  # a real slime (or another layer) owns the package: not ours to answer
        if fullname in NAMESPACES:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        runtime_name = target_of(fullname)
        if runtime_name is None:
            raise _not_provided(fullname)
        try:
            module = importlib.import_module(runtime_name)
        except ModuleNotFoundError as exc:
            if exc.name == runtime_name:  # e.g. slime.rollout.rm_hub.ifbench: no runtime counterpart
                raise _not_provided(fullname) from None
            raise
        return importlib.machinery.ModuleSpec(fullname, self, is_package=hasattr(module, "__path__"))

    def _real_slime_findable(self) -> bool:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            try:
                if finder.find_spec("slime", None) is not None:
                    return True
            except (ImportError, ValueError):
                continue
        return False

    # ------------------------------------------------------------------ loader
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        runtime_name = target_of(spec.name)
        if runtime_name is None:
            return None  # a namespace: a fresh module, filled in by exec_module
        module = importlib.import_module(runtime_name)
        # The import system sets module.__spec__ to our alias spec next; exec_module puts the original back.
        self._original_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__spec__.name if module.__spec__ is not None else module.__name__
        if name in self._original_specs:
            module.__spec__ = self._original_specs.pop(name)
            return
        module.__path__ = []
        module.__doc__ = f"{name}: kuberollout's slime import layer (rollout_runtime.slime_imports)"
        setattr(module, _MARK, True)


_FINDER: SlimeAliasFinder | None = None
_LOCK = threading.Lock()


def install() -> bool:
    """Put the finder first on sys.meta_path (idempotent). False when a real `slime` is already imported."""
    global _FINDER
    with _LOCK:
        if _FINDER is not None and _FINDER in sys.meta_path:
            return True
        existing = sys.modules.get("slime")
        if existing is not None and not getattr(existing, _MARK, False):
            return False
        _FINDER = SlimeAliasFinder()
        sys.meta_path.insert(0, _FINDER)
        return True


def uninstall() -> None:
    """Remove the finder and the `slime` names it loaded (the runtime modules themselves stay)."""
    global _FINDER
    with _LOCK:
        if _FINDER is not None and _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        _FINDER = None
        if getattr(sys.modules.get("slime"), _MARK, False):
            for name in [n for n in sys.modules if n == "slime" or n.startswith("slime.")]:
                del sys.modules[name]
