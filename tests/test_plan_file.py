"""plan.json as the runtime reads it (mncompile.formats.plan_file): every generated plan, and damaged ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mncompile.diagnostics import MNError
from mncompile.formats.plan_file import read_plan

GENERATED = Path(__file__).resolve().parent.parent / "generated"


@pytest.mark.parametrize("folder", sorted(p.name for p in GENERATED.iterdir() if (p / "plan.json").is_file()))
def test_every_generated_plan_reads_with_its_numbers(folder: str) -> None:
    data = json.loads((GENERATED / folder / "plan.json").read_text())
    plan = read_plan(data, "plan.json")
    assert plan.member_names == tuple(m["name"] for m in data["members"])
    assert plan.input == tuple(data["input"]) and plan.classes == data["classes"] and plan.g == data["g"]
    for c, raw in zip(plan.clusters, data["clusters"], strict=True):
        assert c.mother.name == raw["mother"]["name"] and c.mother.macs == raw["mother"]["macs"]
        assert list(c.members) == raw["members"] and c.family == raw["family"]
    assert plan.member(data["members"][0]["name"]).params == data["members"][0]["params"]
    # every net's layers, members and MotherNets alike, and the plan's identity
    for raw in [*data["members"], *(c["mother"] for c in data["clusters"])]:
        net = plan.nets[raw["name"]]
        assert (net.family, net.dense) == (raw["family"], tuple(raw["dense"]))
        assert [[list(layer) for layer in b] for b in net.blocks] == raw["blocks"]
        assert net.stem == (tuple(raw["stem"]) if raw["stem"] is not None else None)
    assert plan.digest == read_plan(json.loads(json.dumps(data, indent=4)), "p").digest
    assert plan.digest != read_plan({**data, "seed": 99}, "p").digest


def _plan() -> dict[str, Any]:
    return json.loads((GENERATED / "mlp" / "plan.json").read_text())


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: d.pop("members"), "is not a plan this mncompile can read (KeyError"),
    (lambda d: d.update(schema_version=7), "has schema_version 7"),
    (lambda d: d["clusters"][0]["members"].pop(), "every member must be in exactly one cluster"),
    (lambda d: d.update(input=[0]), "invalid input shape"),
    (lambda d: d["members"][0].update(params="many"), "ValueError"),
    (lambda d: d["members"][0].update(dense=["wide"]), "is not a whole number"),
    (lambda d: d["members"][0].update(blocks=[[[3]]]), "a layer is [kernel, filters]"),
])
def test_a_damaged_plan_is_one_message_naming_the_file(damage: Any, message: str) -> None:
    data = _plan()
    damage(data)
    with pytest.raises(MNError, match="'gen/plan.json'") as err:
        read_plan(data, "gen/plan.json")
    assert message in err.value.message
    with pytest.raises(MNError, match="not a JSON object"):
        read_plan([1, 2], "gen/plan.json")
