"""Loading pieces of the real sglang 0.5.23 without its GPU stack, for the conformance tests.

sglang is installed with ``pip install --no-deps sglang==0.5.23`` (scripts/test.sh does it): the
package cannot be imported as a whole without torch, CUDA kernels and ~100 dependencies, so the
tests take what they need from its files directly:

* :func:`load_module` loads one source file under a private name (``api_types.py`` needs only
  msgspec; ``sampling_params.py`` needs one torch-only import, the watermarking module, which
  :func:`load_sampling_params` stubs; ``aio_rwlock.py`` and ``weight_versions.py`` are plain);
* :func:`real_function` compiles one function of a server module (an HTTP handler, a tokenizer
  manager method) into a namespace the test supplies, so the real code runs against stub state;
* :func:`struct_fields`, :func:`routes`, :func:`constant` read facts (request structs and their
  defaults, the route table, module constants) from the source with ``ast``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

VERSION = "0.5.23"
INSTALL_HINT = f"pip install --no-deps sglang=={VERSION} msgspec  (scripts/test.sh installs both)"


@lru_cache(maxsize=1)
def root() -> Path:
    """The installed sglang package directory (its ``__init__`` is not executed)."""
    try:
        version = importlib.metadata.version("sglang")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"sglang is not installed: {INSTALL_HINT}")
    if version != VERSION:
        pytest.fail(f"the conformance suite checks sglang {VERSION}, found {version}: {INSTALL_HINT}")
    if importlib.util.find_spec("msgspec") is None:
        pytest.skip(f"msgspec is not installed: {INSTALL_HINT}")
    spec = importlib.util.find_spec("sglang")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0])


def source(rel: str) -> Path:
    return root() / rel


def load_module(rel: str, stubs: dict[str, types.ModuleType] | None = None) -> types.ModuleType:
    """Execute one sglang source file as a private module; ``stubs`` stand in for imports it makes
    (present in ``sys.modules`` only while it loads)."""
    name = "_real_sglang_" + rel.replace("/", "_").removesuffix(".py")
    if name in sys.modules:
        return sys.modules[name]
    stubs = stubs or {}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location(name, source(rel))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def load_api_types() -> types.ModuleType:
    """``sglang/api/v1/api_types.py``: the /generate contract gate (msgspec only)."""
    return load_module("api/v1/api_types.py")


def load_sampling_params() -> types.ModuleType:
    """``sglang/srt/sampling/sampling_params.py`` with its one torch-only import stubbed:
    ``sglang.srt.sampling.watermarking.core`` (``WatermarkRequestConfig``,
    ``normalize_watermark_request``), which only matters for watermark requests."""
    core = types.ModuleType("sglang.srt.sampling.watermarking.core")
    core.WatermarkRequestConfig = dict  # type: ignore[attr-defined]
    core.normalize_watermark_request = lambda w: w  # type: ignore[attr-defined]
    return load_module("srt/sampling/sampling_params.py", {"sglang.srt.sampling.watermarking.core": core})


def load_weight_versions() -> types.ModuleType:
    """``sglang/srt/utils/weight_versions.py`` (needs ``msgspec_utils``, which needs pydantic-core)."""
    utils = load_module("srt/utils/msgspec_utils.py")
    return load_module("srt/utils/weight_versions.py", {"sglang.srt.utils.msgspec_utils": utils})


@lru_cache(maxsize=None)
def _tree(rel: str) -> ast.Module:
    return ast.parse(source(rel).read_text())


def _find(tree: ast.AST, name: str, kinds: tuple[type, ...]) -> Any:
    for node in ast.walk(tree):
        if isinstance(node, kinds) and node.name == name:
            return node
    raise LookupError(f"{name} not found")


def real_function(rel: str, name: str, namespace: dict[str, Any], cls: str | None = None) -> Any:
    """Compile function ``name`` (a method of ``cls`` if given) of ``rel`` without its decorators,
    with ``namespace`` as its globals, and return it."""
    tree = _tree(rel)
    scope = _find(tree, cls, (ast.ClassDef,)) if cls else tree
    fn = _find(scope, name, (ast.FunctionDef, ast.AsyncFunctionDef))
    fn = ast.fix_missing_locations(type(fn)(**{**{f: getattr(fn, f) for f in fn._fields}, "decorator_list": []}))
    module = ast.Module(body=[fn], type_ignores=[])
    ns = dict(namespace)
    exec(compile(module, str(source(rel)), "exec"), ns)  # noqa: S102 - the real sglang source, on purpose
    return ns[name]


def struct_fields(rel: str, cls: str) -> dict[str, Any]:
    """Field name -> default (``...`` when required) of a msgspec/dataclass struct, from the source."""
    node = _find(_tree(rel), cls, (ast.ClassDef,))
    out: dict[str, Any] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            out[stmt.target.id] = ... if stmt.value is None else ast.literal_eval(stmt.value)
    return out


def routes(rel: str, app: str = "app") -> set[tuple[str, str]]:
    """(METHOD, path) of every route decorated on ``app`` (``@app.get``, ``@app.api_route``, ...)."""
    out: set[tuple[str, str]] = set()
    for node in ast.walk(_tree(rel)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for dec in node.decorator_list:
            if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                    and isinstance(dec.func.value, ast.Name) and dec.func.value.id == app and dec.args):
                continue
            first = dec.args[0]
            if not isinstance(first, ast.Constant) or not isinstance(first.value, str):
                continue
            kind = dec.func.attr
            if kind == "api_route":
                methods = next((ast.literal_eval(k.value) for k in dec.keywords if k.arg == "methods"), ["GET"])
            elif kind in ("get", "post", "put", "delete"):
                methods = [kind]
            else:
                continue
            out.update((m.upper(), first.value) for m in methods)
    return out


def constant(rel: str, name: str) -> ast.expr:
    """The expression assigned to module-level ``name``."""
    for stmt in _tree(rel).body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets):
            return stmt.value
    raise LookupError(name)


def class_fields(rel: str, cls: str) -> list[str]:
    """Annotated field names of a class, in order (e.g. ``LoadSnapshot``)."""
    node = _find(_tree(rel), cls, (ast.ClassDef,))
    return [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
