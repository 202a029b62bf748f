"""slime's other flags: what a shared slime launch command line carries besides the rollout settings.

A slime run is one command line for trainer and rollout (`--tensor-model-parallel-size 2
--context-parallel-size 2 --max-tokens-per-gpu 9216 --colocate --sglang-mem-fraction-static 0.7 ...
--rollout-batch-size 32`), and slime plugins read trainer attributes (the retool example sizes its
context as `args.context_parallel_size * args.max_tokens_per_gpu`). `slime_flags.json` lists every flag
slime's parser accepts (slime's own, Megatron's, `--sglang-<ServerArgs field>`, `--router-*`), with its
attribute name, arity, type and default, generated from their sources by scripts/gen_slime_flags.py.
`RolloutConfig` accepts these as plain attributes and answers the rest of them with their defaults, as
slime's argparse namespace does; a flag in neither list is still an error naming the nearest flag.
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

__all__ = ["TrainerFlag", "trainer_flags", "trainer_dests", "trainer_defaults", "add_trainer_flags", "sources"]


@dataclass(frozen=True)
class TrainerFlag:
    flag: str
    dest: str
    kind: str  # store_true | store_false | bool_optional | value | nargs | append
    type: str  # int | float | str | json
    default: Any


@functools.cache
def _load() -> dict[str, Any]:
    return json.loads(resources.files("rollout_runtime").joinpath("slime_flags.json").read_text())


@functools.cache
def trainer_flags() -> dict[str, TrainerFlag]:
    """flag -> TrainerFlag, for every flag of slime's parser."""
    return {flag: TrainerFlag(flag, *spec) for flag, spec in _load()["flags"].items()}


def sources() -> dict[str, str]:
    """Which slime, Megatron, SGLang and sglang-router versions the list was generated from."""
    return dict(_load()["sources"])


@functools.cache
def trainer_dests() -> frozenset[str]:
    return frozenset(f.dest for f in trainer_flags().values())


@functools.cache
def trainer_defaults() -> dict[str, Any]:
    """dest -> default; the first flag of a dest (e.g. `--offload-train`, not `--no-offload-train`) wins."""
    out: dict[str, Any] = {}
    for f in trainer_flags().values():
        out.setdefault(f.dest, f.default)
    return out


def _convert(kind: str) -> Callable[[str], Any]:
    def number(cast: Callable[[str], Any]) -> Callable[[str], Any]:
        def parse(text: str) -> Any:
            try:
                return cast(text)
            except ValueError:
                return text  # Megatron accepts a few symbolic values (e.g. "auto") for numeric flags
        return parse

    return {"int": number(int), "float": number(float), "json": number(json.loads)}.get(kind, str)


def add_trainer_flags(parser: argparse.ArgumentParser) -> None:
    """Add every trainer flag whose option string the parser does not have yet (values typed as slime's are)."""
    taken = set(parser._option_string_actions)
    for f in trainer_flags().values():
        if f.flag in taken:
            continue
        common = {"dest": f.dest, "default": argparse.SUPPRESS}
        if f.kind in ("store_true", "store_false", "bool_optional"):
            value = f.kind == "store_true" or (f.kind == "bool_optional" and not f.flag.startswith("--no-"))
            parser.add_argument(f.flag, action="store_const", const=value, **common)
            negated = "--no-" + f.flag[2:]
            if f.kind == "bool_optional" and negated not in taken and negated not in trainer_flags():
                parser.add_argument(negated, action="store_const", const=False, **common)
        elif f.kind == "nargs":
            parser.add_argument(f.flag, nargs="*", type=_convert(f.type), **common)
        elif f.kind == "append":
            parser.add_argument(f.flag, action="append", type=_convert(f.type), **common)
        else:
            parser.add_argument(f.flag, type=_convert(f.type), **common)
