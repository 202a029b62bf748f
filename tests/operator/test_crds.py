"""CRD generation: checked-in CRDs are current, structural, and carry the runtime's settings exactly."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from rollout_operator import crdgen
from rollout_operator.api.rolloutjob_types import IMMUTABLE, OPERATOR_OWNED, SECTION_MODELS

from rollout_runtime.config import RolloutConfig, section_fields
from rollout_runtime.contract import RUNTIME_SECTIONS


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in crdgen.all_crds().values()}


def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_checked_in_crds_are_current() -> None:
    stale = crdgen.stale_files(crdgen.default_out_dir())
    assert not stale, f"stale CRDs {stale}: run `python -m rollout_operator.crdgen`"


def test_check_mode_reports_stale_files(tmp_path: Any, capsys: Any) -> None:
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "kuberollout.io_rolloutjobs.yaml").write_text("# edited\n")
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1


def test_names_columns_and_subresources(crds: dict[str, dict[str, Any]]) -> None:
    rj, sgp = crds["RolloutJob"], crds["SGLangPool"]
    assert rj["spec"]["names"]["shortNames"] == ["rj"]
    assert sgp["spec"]["names"]["shortNames"] == ["sgp"]
    for crd in (rj, sgp):
        assert crd["spec"]["names"]["categories"] == ["kuberollout"]
        assert crd["spec"]["versions"][0]["subresources"]["status"] == {}
    columns = {c["name"].upper(): c for c in rj["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert [n for n, c in columns.items() if not c.get("priority")] == [
        "PHASE", "REASON", "POOL", "ROLLOUT", "TOTAL", "COMPLETED", "ABORTED", "AGE"]
    assert columns["COMPLETED"]["type"] == "integer" and columns["AGE"]["type"] == "date"
    # bounded staleness: the reason says WaitingForWeights; -o wide names the version it waits for
    assert columns["REASON"]["jsonPath"] == ".status.reason"
    assert columns["WAITS-FOR"] == {"name": "Waits-For", "type": "integer", "jsonPath": ".status.waitingForWeightVersion",
                                    "description": "Weight version the runtime waits for (maxStaleness)", "priority": 1}
    pool_cols = {c["name"].upper(): c for c in sgp["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert [n for n, c in pool_cols.items() if not c.get("priority")] == ["READY", "REPLICAS", "AVAILABLE", "WEIGHTS",
                                                                          "AGE"]
    assert pool_cols["WEIGHTS"]["jsonPath"] == ".status.weightVersion" and pool_cols["WEIGHTS"]["type"] == "integer"
    assert pool_cols["MODEL"]["priority"] == 1 and pool_cols["ENDPOINT"]["priority"] == 1
    assert sgp["spec"]["versions"][0]["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    assert "scale" not in rj["spec"]["versions"][0]["subresources"]


def _walk(node: dict[str, Any], path: str = "") -> Any:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", ["RolloutJob", "SGLangPool"])
def test_schemas_are_structural(crds: dict[str, dict[str, Any]], kind: str) -> None:
    for path, node in _walk(schema(crds[kind])):
        assert not {"anyOf", "oneOf", "allOf", "$ref", "title", "additionalProperties"} & set(node) or (
            isinstance(node.get("additionalProperties"), dict) and "properties" not in node), path
        typed = "type" in node or node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string")
        assert typed, f"{kind}{path} has no type"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_runtime_sections_come_from_rolloutconfig(crds: dict[str, dict[str, Any]]) -> None:
    spec = schema(crds["RolloutJob"])["properties"]["spec"]
    fields = section_fields()
    for name, (section, key) in fields.items():
        if (section, key) in OPERATOR_OWNED:
            assert key not in spec["properties"][section]["properties"], f"{section}.{key} is operator-owned"
            continue
        node = spec["properties"][section]["properties"][key]
        info = RolloutConfig.model_fields[name]
        assert node.get("description", "").startswith(info.description or ""), key
        default = info.get_default(call_default_factory=True)
        if default is not None and not info.is_required():
            assert node["default"] == default, f"{section}.{key}"
        for meta in info.metadata:
            for attr, openapi in (("gt", "minimum"), ("ge", "minimum"), ("le", "maximum")):
                if getattr(meta, attr, None) is not None:
                    assert node[openapi] == getattr(meta, attr), f"{section}.{key}.{openapi}"
            if getattr(meta, "gt", None) is not None:
                assert node["exclusiveMinimum"] is True
    # Nothing in the sections that RolloutConfig does not know (eval.datasets maps to eval_prompt_data).
    for section in RUNTIME_SECTIONS + ("engine",):
        keys = set(spec["properties"][section]["properties"])
        known = {k for (s, k) in fields.values() if s == section} | ({"datasets"} if section == "eval" else set())
        assert keys <= known, f"spec.{section} has keys RolloutConfig does not: {keys - known}"
    assert spec["properties"]["rollout"]["required"] == ["batchSize"]
    assert spec["properties"]["dataset"]["required"] == ["path"]
    assert set(spec["required"]) == {"dataset", "rollout"}


def test_section_models_roundtrip_through_rolloutconfig() -> None:
    """A spec parsed by the operator's models builds the same config the runtime builds."""
    raw = {"dataset": {"path": "d.jsonl", "inputKey": "prompt", "seed": 7},
           "rollout": {"batchSize": 8, "samplesPerPrompt": 4, "numRollouts": 3, "topP": 0.9},
           "reward": {"type": "boxed_math"}, "eval": {"interval": 2, "datasets": [{"name": "a", "path": "e.jsonl"}]}}
    parsed = {s: SECTION_MODELS[s].model_validate(v).model_dump(by_alias=True, exclude_unset=True)
              for s, v in raw.items()}
    assert parsed == raw
    cfg = RolloutConfig.from_sections(parsed)
    assert (cfg.rollout_batch_size, cfg.n_samples_per_prompt, cfg.rollout_top_p, cfg.rollout_seed) == (8, 4, 0.9, 7)
    assert cfg.eval_prompt_data == ["a", "e.jsonl"]


def test_cross_field_and_immutability_rules(crds: dict[str, dict[str, Any]]) -> None:
    root = schema(crds["RolloutJob"])
    spec = root["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "has(self.poolRef) != has(self.endpoint)" in rules
    assert any("metadata.name" in r["rule"] for r in root["x-kubernetes-validations"])
    for name in IMMUTABLE:
        section, key = section_fields()[name]
        node = spec["properties"][section]["properties"][key]
        assert {"rule": "self == oldSelf"}.items() <= node["x-kubernetes-validations"][0].items(), key
        assert "immutable" in node["x-kubernetes-validations"][0]["message"]


def test_reward_type_and_plugin_paths_are_validated_by_the_schema(crds: dict[str, dict[str, Any]]) -> None:
    from rollout_runtime.rm_hub import BUILTIN_RM_TYPES

    spec = schema(crds["RolloutJob"])["properties"]["spec"]
    rm_rule = spec["properties"]["reward"]["properties"]["type"]["x-kubernetes-validations"][0]
    for name in BUILTIN_RM_TYPES:
        assert name in rm_rule["rule"]
    assert spec["properties"]["rollout"]["properties"]["customGenerateFunctionPath"]["pattern"]
    assert spec["properties"]["filters"]["properties"]["dynamicSampling"]["pattern"]


def test_to_structural_conversions() -> None:
    raw = {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}], "default": None,
                  "title": "A", "description": "d"},
            "q": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "m": {"type": "object", "additionalProperties": True},
            "s": {"type": "object", "additionalProperties": {"type": "string"}},
            "r": {"$ref": "#/$defs/R", "description": "outer"},
        },
        "$defs": {"R": {"type": "object", "title": "R", "description": "inner", "properties": {"x": {"type": "boolean"}}}},
    }
    out = crdgen.to_structural(raw)
    assert out["properties"]["a"] == {"description": "d", "type": "integer", "minimum": 0, "exclusiveMinimum": True}
    assert out["properties"]["q"] == {"x-kubernetes-int-or-string": True}
    assert out["properties"]["m"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert out["properties"]["s"]["additionalProperties"] == {"type": "string"}
    assert out["properties"]["r"]["description"] == "outer"
    with pytest.raises(crdgen.SchemaError):
        crdgen.to_structural({"anyOf": [{"type": "string"}, {"type": "boolean"}]})


def test_rendered_yaml_parses_back(crds: dict[str, dict[str, Any]]) -> None:
    for crd in crds.values():
        assert yaml.safe_load(crdgen.render(crd)) == crd
