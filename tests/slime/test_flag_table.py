"""docs/slime.md's flag tables stay in sync with slime's flag list (vendored) and with RolloutConfig."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from rollout_runtime.cli import GROUP_STARTS, field_groups
from rollout_runtime.config import RolloutConfig, parse_cli_flags
from rollout_runtime.slime_flags import trainer_flags

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "slime.md").read_text()
SLIME = json.loads((Path(__file__).parent / "data" / "slime_rollout_flags.json").read_text())


def _table(name: str) -> list[list[str]]:
    body = DOC.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.startswith("| `")]
    return rows


def test_every_slime_rollout_flag_has_one_row_with_a_known_status():
    rows = _table("flag-table")
    flags = [r[0].strip("`") for r in rows]
    assert len(flags) == len(set(flags)), "a flag is listed twice"
    assert set(flags) == set(SLIME["flags"]), (set(flags) ^ set(SLIME["flags"]))
    assert {r[1] for r in rows} <= {"honoured", "differs", "n/a"}
    assert all(r[2] for r in rows if r[1] != "honoured"), "a difference or n/a without its reason"
    counts = Counter(r[1] for r in rows)
    stated = re.search(r"Totals: honoured (\d+), differs (\d+), n/a (\d+)\.", DOC)
    assert stated and tuple(map(int, stated.groups())) == (counts["honoured"], counts["differs"], counts["n/a"])


def test_table_status_agrees_with_rolloutconfig():
    fields = RolloutConfig.model_fields
    for flag, status, _ in _table("flag-table"):
        flag = flag.strip("`")
        dest = SLIME["flags"][flag]["dest"]
        if status == "honoured":
            assert dest in fields, f"{flag} is marked honoured but RolloutConfig has no {dest}"
        if status == "n/a":
            assert dest not in fields, f"{flag} is marked n/a but RolloutConfig has {dest}: say what it does"
        # every slime flag is accepted on the command line in slime's spelling, under slime's attribute name
        spec = trainer_flags()[flag]
        takes_no_value = spec.kind in ("store_true", "store_false", "bool_optional")
        parsed = parse_cli_flags([flag] if takes_no_value else [flag, "1"])
        assert dest in parsed, f"{flag} is not accepted"


def test_own_settings_table_lists_every_field_slime_lacks():
    slime_dests = {v["dest"] for v in SLIME["flags"].values()}
    ours = {r[0].strip("`") for r in _table("own-table")}
    assert ours == {f for f in RolloutConfig.model_fields if f not in slime_dests}


def test_slime_flag_snapshot_names_its_source_and_matches_the_runtime_list():
    assert re.fullmatch(r"THUDM/slime@[0-9a-f]{40}", SLIME["source"])
    runtime = trainer_flags()
    for flag, spec in SLIME["flags"].items():
        assert flag in runtime and runtime[flag].dest == spec["dest"], flag


def test_help_groups_cover_every_field():
    assert set(GROUP_STARTS) <= set(RolloutConfig.model_fields)
    groups = field_groups()
    assert set(groups) == set(RolloutConfig.model_fields) and "other" not in groups.values()


def test_run_help_lists_every_flag_with_group_default_and_description(capsys):
    from rollout_runtime.cli import main

    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for group in set(field_groups().values()):
        assert f"\n{group}:\n" in text, group
    for name, info in RolloutConfig.model_fields.items():
        assert "--" + name.replace("_", "-") in text, name
    flat = " ".join(text.split())
    assert "Requests in flight per engine; the semaphore is this times the engine count. (default: 512)" in flat
    assert "--rollout-batch-size SIZE Prompt groups per rollout. (default: required)" in flat
    assert f"{len(trainer_flags())} known" in flat  # and it says the rest of a slime command line is accepted
