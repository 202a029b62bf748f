"""Regenerate the vendored lists of slime's command-line flags (run by hand, never by tests).

Two files come out of it:

- `rollout_runtime/slime_flags.json`: every flag a slime launch script may carry (slime's own, Megatron's,
  `--sglang-<ServerArgs field>` and `--router-*`), with its attribute name, arity and type. `RolloutConfig`
  accepts the ones it does not declare as plain attributes (slime's retool example reads
  `args.context_parallel_size * args.max_tokens_per_gpu`), while a flag in neither list stays an error.
- `tests/slime/data/slime_rollout_flags.json`: slime's rollout-relevant flags (the groups below), which
  tests/slime/test_flag_table.py keeps docs/slime.md's flag table in sync with.

Inputs are source trees, read without installing them:

    python scripts/gen_slime_flags.py --slime SLIME_CHECKOUT --megatron MEGATRON_CHECKOUT \
        --sglang SGLANG_WHEEL_DIR   # the unpacked `pip download sglang==0.5.23 --no-deps` wheel

slime's `arguments.py` is read with `ast` (importing it needs SGLang and a GPU stack); Megatron's parser is
built for real (only its `typing.override` import needs a shim on Python 3.11); SGLang's ServerArgs fields are
read with `ast` from `sglang/srt/arg_groups/fields/*.py`; the router's flags come from the installed
sglang-router's own `RouterArgs.add_cli_args(use_router_prefix=True)`.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RUNTIME_OUT = REPO / "rollout_runtime" / "slime_flags.json"
TESTS_OUT = REPO / "tests" / "slime" / "data" / "slime_rollout_flags.json"

# slime/utils/arguments.py helper functions whose flags are rollout-relevant, and the rollout-side extras
ROLLOUT_GROUPS = {
    "add_rollout_arguments": "rollout",
    "add_fault_tolerance_arguments": "fault tolerance",
    "add_data_arguments": "data",
    "add_eval_arguments": "eval",
    "add_reward_model_arguments": "reward model",
    "add_rollout_buffer_arguments": "rollout buffer",
    "add_network_arguments": "network",
}
ROLLOUT_EXTRA = {
    # cluster group: engine sizing
    "--rollout-num-gpus": "cluster", "--rollout-num-gpus-per-engine": "cluster",
    # debug group: what replaces or records a rollout
    "--debug-rollout-only": "debug", "--debug-train-only": "debug", "--save-debug-rollout-data": "debug",
    "--load-debug-rollout-data": "debug", "--dump-details": "debug",
    # slime/backends/sglang_utils/arguments.py: the router and engine flags the rollout code reads
    "--sglang-router-ip": "sglang", "--sglang-router-port": "sglang", "--sglang-router-request-timeout-secs": "sglang",
    "--sglang-server-concurrency": "sglang", "--sglang-config": "sglang", "--prefill-num-servers": "sglang",
    "--router-policy": "sglang", "--sglang-enable-deterministic-inference": "sglang", "--sglang-dp-size": "sglang",
    "--sglang-speculative-algorithm": "sglang",
}


def _const(node: ast.AST | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _type_name(node: ast.AST | None) -> str:
    if node is None:
        return "str"
    if isinstance(node, ast.Name) and node.id in ("int", "float", "str"):
        return node.id
    if isinstance(node, ast.Attribute) and node.attr == "loads":
        return "json"
    return "str"


def _entry(flags: list[str], kw: dict[str, ast.AST], group: str) -> tuple[str, dict[str, Any]] | None:
    long = [f for f in flags if f.startswith("--")]
    if not long:
        return None
    action = kw.get("action")
    action_name = _const(action) or (action.attr if isinstance(action, ast.Attribute) else None)
    nargs = _const(kw.get("nargs"))
    dest = _const(kw.get("dest")) or long[0][2:].replace("-", "_")
    if action_name in ("store_true", "store_false"):
        kind = action_name
    elif action_name == "BooleanOptionalAction":
        kind = "bool_optional"
    elif action_name == "append":
        kind = "append"
    elif nargs in ("+", "*"):
        kind = "nargs"
    else:
        kind = "value"
    default = _literal(kw.get("default"))
    if default is None and kind in ("store_true", "store_false"):
        default = kind == "store_false"
    return long[0], {"dest": dest, "kind": kind, "type": _type_name(kw.get("type")), "group": group, "default": default}


def _literal(node: ast.AST | None) -> Any:
    try:
        value = ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None
    return value if isinstance(value, (int, float, str, bool, list, type(None))) else None


def slime_flags(slime: Path) -> dict[str, dict[str, Any]]:
    """add_argument / reset_arg calls in slime's arguments.py, each tagged with its enclosing add_* function."""
    out: dict[str, dict[str, Any]] = {}
    for rel in ("slime/utils/arguments.py", "slime/backends/sglang_utils/arguments.py"):
        tree = ast.parse((slime / rel).read_text())

        def visit(node: ast.AST, group: str) -> None:
            for child in ast.iter_child_nodes(node):
                g = child.name if isinstance(child, ast.FunctionDef) else group
                if isinstance(child, ast.Call):
                    fn = child.func
                    name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                    args = child.args[1:] if name == "reset_arg" else child.args
                    if name in ("add_argument", "reset_arg"):
                        flags = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                        entry = _entry(flags, {k.arg: k.value for k in child.keywords if k.arg}, g)
                        if entry and not (rel.endswith("sglang_utils/arguments.py") and g == "new_add_argument_wrapper"):
                            out[entry[0]] = entry[1]
                visit(child, g)

        visit(tree, "")
    return out


def megatron_flags(megatron: Path) -> dict[str, dict[str, Any]]:
    code = f"""
import argparse, json, sys, typing
typing.override = getattr(typing, "override", lambda f: f)
sys.path.insert(0, {str(megatron)!r})
import megatron.training.arguments as A
p = A.add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False, conflict_handler="resolve"))
out = {{}}
for a in p._actions:
    long = [o for o in a.option_strings if o.startswith("--")]
    if not long:
        continue
    name = type(a).__name__
    kind = {{"_StoreTrueAction": "store_true", "_StoreFalseAction": "store_false", "_AppendAction": "append",
            "BooleanOptionalAction": "bool_optional"}}.get(name)
    if kind is None:
        kind = "nargs" if a.nargs in ("+", "*") or isinstance(a.nargs, int) and a.nargs > 1 else "value"
    t = getattr(a.type, "__name__", "str")
    d = a.default if isinstance(a.default, (int, float, str, bool, list, type(None))) else None
    try:
        json.dumps(d)
    except (TypeError, ValueError):
        d = None
    for o in long:
        out[o] = {{"dest": a.dest, "kind": kind, "type": t if t in ("int", "float", "str") else "str", "group": "megatron",
                  "default": d}}
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sglang_flags(sglang: Path) -> dict[str, dict[str, Any]]:
    """`--sglang-<field>` for each CLI field of SGLang's ServerArgs namespaces (slime prefixes them all)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((sglang / "sglang" / "srt" / "arg_groups" / "fields").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            name = node.target.id
            ann = node.annotation
            if name.startswith("_") or not (isinstance(ann, ast.Subscript) and getattr(ann.value, "id", "") == "A"):
                continue
            elts = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
            meta = elts[1] if len(elts) > 1 else None
            kw = {k.arg: k.value for k in meta.keywords} if isinstance(meta, ast.Call) else {}
            if _const(kw.get("no_cli")):
                continue
            cli = _const(kw.get("cli_name")) or "--" + name.replace("_", "-")
            typ = ast.unparse(elts[0])
            kind = "store_true" if typ == "bool" else "nargs" if typ.startswith(("List", "list", "Optional[List")) else "value"
            t = "int" if "int" in typ else "float" if "float" in typ else "str"
            out["--sglang-" + cli.lstrip("-")] = {"dest": "sglang_" + name, "kind": kind, "type": t, "group": "sglang",
                                                  "default": _literal(node.value)}
    return out


def router_flags() -> dict[str, dict[str, Any]]:
    from sglang_router.launch_router import RouterArgs

    parser = argparse.ArgumentParser()
    RouterArgs.add_cli_args(parser, use_router_prefix=True, exclude_host_port=True)
    out = {}
    for a in parser._actions:
        for o in a.option_strings:
            if o.startswith("--") and o != "--help":
                name = type(a).__name__
                kind = {"_StoreTrueAction": "store_true", "_StoreFalseAction": "store_false"}.get(name) or (
                    "nargs" if a.nargs in ("+", "*") else "value")
                t = getattr(a.type, "__name__", "str")
                d = a.default if isinstance(a.default, (int, float, str, bool, list, type(None))) else None
                out[o] = {"dest": a.dest, "kind": kind, "type": t if t in ("int", "float", "str") else "str",
                          "group": "router", "default": d}
    return out


def _head(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slime", type=Path, required=True)
    ap.add_argument("--slime-commit", default=None, help="when --slime is not a git checkout")
    ap.add_argument("--megatron", type=Path, required=True)
    ap.add_argument("--megatron-commit", default=None)
    ap.add_argument("--sglang", type=Path, required=True)
    ns = ap.parse_args()
    import sglang_router

    slime = slime_flags(ns.slime)
    every: dict[str, dict[str, Any]] = {}
    for part in (megatron_flags(ns.megatron), sglang_flags(ns.sglang), router_flags(), slime):
        every.update(part)  # slime's own definitions (incl. its reset_arg overrides) win
    sources = {
        "slime": ns.slime_commit or _head(ns.slime),
        "megatron": ns.megatron_commit or _head(ns.megatron),
        "sglang": "0.5.23",
        "sglang_router": getattr(sglang_router, "__version__", "0.3.2"),
    }
    lines = [f"  {json.dumps(f)}: {json.dumps([e['dest'], e['kind'], e['type'], e['default']])}" for f, e in sorted(every.items())]
    RUNTIME_OUT.write_text('{"sources": ' + json.dumps(sources) + ',\n "flags": {\n' + ",\n".join(lines) + "\n}}\n")
    rollout = {f: {"group": ROLLOUT_GROUPS[e["group"]], "dest": e["dest"]} for f, e in slime.items()
               if e["group"] in ROLLOUT_GROUPS}
    for flag, group in ROLLOUT_EXTRA.items():
        rollout[flag] = {"group": group, "dest": every[flag]["dest"]}
    TESTS_OUT.parent.mkdir(parents=True, exist_ok=True)
    TESTS_OUT.write_text(json.dumps({"source": f"THUDM/slime@{sources['slime']}",
                                     "flags": dict(sorted(rollout.items()))}, indent=1) + "\n")
    print(f"{len(every)} flags -> {RUNTIME_OUT}; {len(rollout)} rollout-relevant -> {TESTS_OUT}")


if __name__ == "__main__":
    main()
