"""Generate `crds/*.yaml` from the pydantic API models.

    python -m rollout_operator.crdgen            # write crds/ in the repository
    python -m rollout_operator.crdgen --check    # exit 1 if the checked-in CRDs are stale
    python -m rollout_operator.crdgen --stdout   # print both CRDs

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 schema. The
conversion inlines `$ref`s, turns `X | None` into an optional X (null values are then pruned by
the API server instead of being stored), `int | str` into `x-kubernetes-int-or-string`, open
objects into `x-kubernetes-preserve-unknown-fields`, draft-2020 `exclusiveMinimum: n` into
OpenAPI's `minimum: n, exclusiveMinimum: true`, and drops `title`s. Anything Kubernetes cannot
express raises, so a new model field can never silently produce an invalid CRD.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from rollout_operator.api import rolloutjob_types, sglangpool_types
from rollout_operator.api.crd_info import CrdInfo
from rollout_operator.api.rolloutjob_status import RolloutJobStatus
from rollout_operator.api.sglangpool_status import SGLangPoolStatus
from rollout_runtime.contract import GROUP, VERSION

_KEEP = {
    "type", "description", "default", "enum", "format", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "required", "properties", "items", "additionalProperties", "nullable",
}
_DROP = {"title", "$defs", "examples"}


class SchemaError(ValueError):
    """A model produced JSON Schema that a structural CRD schema cannot express."""


def to_structural(schema: dict[str, Any], defs: dict[str, Any] | None = None, path: str = "",
                  partial: bool = False) -> dict[str, Any]:
    """Convert one pydantic JSON Schema node (and its children) to a structural OpenAPI v3 node."""
    defs = defs if defs is not None else schema.get("$defs", {})
    node = dict(schema)
    # $ref: inline the definition; keys next to the $ref (description, default) win.
    if "$ref" in node:
        ref = node.pop("$ref")
        target = defs[ref.split("/")[-1]]
        merged = dict(target)
        merged.update(node)
        node = merged
    # `X | None`: optional X. Other unions are only allowed as int-or-string.
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node.pop(key) if o.get("type") != "null"]
            if len(options) == 1:
                inner = to_structural(options[0], defs, path)
                outer = {k: v for k, v in node.items() if k != "default" or v is not None}
                inner.update(to_structural(outer, defs, path, partial=True) if outer else {})
                return _order(inner)
            types_ = sorted(o.get("type", "") for o in options)
            if types_ == ["integer", "string"] or any(o.get("x-kubernetes-int-or-string") for o in options):
                node = {k: v for k, v in node.items() if k not in ("type",)}
                node["x-kubernetes-int-or-string"] = True
                break
            raise SchemaError(f"{path or '<root>'}: unions other than `X | None` and int-or-string cannot be "
                              f"expressed in a structural schema: {options}")
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: to_structural(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = to_structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = to_structural(value, defs, f"{path}{{}}")
            # False: unknown fields are pruned by the API server anyway (and rejected by
            # kubectl's strict field validation), and structural schemas forbid it.
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "default":
            if value is not None:
                out[key] = copy.deepcopy(value)
        elif key in _KEEP or key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "uniqueItems":
            raise SchemaError(f"{path}: uniqueItems is not allowed in CRD schemas; use x-kubernetes-list-type: set")
        else:
            raise SchemaError(f"{path or '<root>'}: JSON Schema keyword {key!r} has no CRD equivalent")
    if partial:
        return out
    if "type" not in out and not (out.get("x-kubernetes-preserve-unknown-fields")
                                  or out.get("x-kubernetes-int-or-string")):
        if "properties" in out:
            out["type"] = "object"
        else:
            raise SchemaError(f"{path or '<root>'}: no type (structural schemas need one)")
    if out.get("type") == "object" and "properties" in out and out.get("x-kubernetes-preserve-unknown-fields") is None:
        out.pop("additionalProperties", None)
    return _order(out)


_ORDER = ["description", "type", "format", "enum", "default", "minimum", "exclusiveMinimum", "maximum",
          "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "items", "required",
          "properties", "additionalProperties"]


def _order(node: dict[str, Any]) -> dict[str, Any]:
    """Stable, readable key order (description first, extensions last)."""
    keys = [k for k in _ORDER if k in node] + sorted(k for k in node if k not in _ORDER)
    return {k: node[k] for k in keys}


def model_schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[attr-defined]
    return to_structural(raw, raw.get("$defs", {}))


def build_crd(info: CrdInfo, spec_model: type, status_model: type, description: str) -> dict[str, Any]:
    """The CustomResourceDefinition object for one kind."""
    spec = model_schema(spec_model)
    status = model_schema(status_model)
    root: dict[str, Any] = {
        "description": description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this representation of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if info.root_rules:
        root["x-kubernetes-validations"] = [dict(r) for r in info.root_rules]
    subresources: dict[str, Any] = {"status": {}}
    if info.scale:
        subresources["scale"] = dict(info.scale)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "kuberollout", "app.kubernetes.io/part-of": "kuberollout"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": root},
                "subresources": subresources,
                "additionalPrinterColumns": [c.wire() for c in info.printer_columns],
            }],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """file name -> CRD object, for every kind."""
    pool = build_crd(sglangpool_types.CRD, sglangpool_types.SGLangPoolSpec, SGLangPoolStatus,
                     sglangpool_types.SGLangPool.__doc__ or "")
    job = build_crd(rolloutjob_types.CRD, rolloutjob_types.RolloutJobSpec, RolloutJobStatus,
                    rolloutjob_types.RolloutJob.__doc__ or "")
    return {
        f"{GROUP}_{sglangpool_types.CRD.plural}.yaml": pool,
        f"{GROUP}_{rolloutjob_types.CRD.plural}.yaml": job,
    }


HEADER = "# Generated by `python -m rollout_operator.crdgen` from operator/rollout_operator/api; do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings as literal blocks; no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=False)


def default_out_dir() -> Path:
    """`crds/` at the repository root (this file lives in operator/rollout_operator/)."""
    return Path(__file__).resolve().parents[2] / "crds"


def default_out_dirs() -> list[Path]:
    """The top-level `crds/` and the Helm chart's `crds/`: one generator, so they never disagree."""
    return [default_out_dir(), Path(__file__).resolve().parents[2] / "charts" / "kuberollout" / "crds"]


def stale_files(out_dir: Path) -> list[str]:
    """Names of CRD files that are missing or differ from what the models generate."""
    stale = []
    for name, crd in all_crds().items():
        path = out_dir / name
        if not path.exists() or path.read_text() != render(crd):
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rollout_operator.crdgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: <repo>/crds and <repo>/charts/kuberollout/crds)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale; write nothing")
    parser.add_argument("--stdout", action="store_true", help="print the CRDs as one YAML stream")
    args = parser.parse_args(argv)
    out_dirs = [args.out] if args.out else default_out_dirs()
    if args.stdout:
        sys.stdout.write("---\n".join(render(c) for c in all_crds().values()))
        return 0
    if args.check:
        failed = False
        for out_dir in out_dirs:
            stale = stale_files(out_dir)
            if stale:
                print(f"stale CRDs in {out_dir}: {', '.join(stale)}; run `python -m rollout_operator.crdgen`",
                      file=sys.stderr)
                failed = True
            else:
                print(f"CRDs in {out_dir} are up to date")
        return 1 if failed else 0
    for out_dir in out_dirs:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, crd in all_crds().items():
            (out_dir / name).write_text(render(crd))
            print(f"wrote {out_dir / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
