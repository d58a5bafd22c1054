"""Hatching that is not exact: every reason gets a place and a fix, and check, plan and compile say so.

The reasons come from the real planner (`plan_hatching`, through the compile pipeline where the
MotherNet construction can produce them, directly with a hand-made MotherNet where it cannot);
the fixes the hints propose are applied to the spec and must make the hatching exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mncompile.api import loads
from mncompile.cli import main
from mncompile.commands import hatching
from mncompile.exactness import MORE_CLUSTERS, fix_for, format_warning, not_exact, split_reason, where
from mncompile.ir import Block, Layer, Linear, Net
from mncompile.passes.hatch_plan import plan_hatching

ROOT = Path(__file__).resolve().parent.parent
FALLBACK = fix_for("no known reason")

H = "ensemble e {\n  input 3x16x16\n  classes 3\n"

# (id, spec whose default clustering hatches a member inexactly, member, line of the part the
# reason is about, a start of the reason, a start of the hint, the spec with the hint's first fix)
REACHABLE = [
    ("plain_extra_block",
     H + "  net a plain { block { 3:8 } }\n  net b plain { block { 3:8 } block { 3:16 } }\n}\n",
     "b", 5, "block2: the MotherNet has no block 2", "move the layers of block 2 into block 1",
     H + "  net a plain { block { 3:8 } }\n  net b plain { block { 3:8 3:16 } }\n}\n"),
    ("plain_extra_block_other_fix",
     H + "  net a plain { block { 3:8 } }\n  net b plain { block { 3:8 } block { 3:16 } }\n}\n",
     "b", 5, "block2: the MotherNet has no block 2", "move the layers of block 2 into block 1",
     # the hint's second way: give the other members a block 2 too
     H + "  net a plain { block { 3:8 } block { 3:8 } }\n"
     "  net b plain { block { 3:8 } block { 3:16 } }\n}\n"),
    ("residual_extra_stage",
     H + "  net a residual { stem 3:8 block { 3:8 } }\n"
     "  net b residual { stem 3:8 block { 3:8 } block { 3:16 } }\n}\n",
     "b", 5, "block2: the MotherNet has no stage 2", "move the units of block 2 into block 1, at its width",
     H + "  net a residual { stem 3:8 block { 3:8 } }\n  net b residual { stem 3:8 block { 3:8 3:8 } }\n}\n"),
    ("dense_extra_block",
     "ensemble e {\n  input 1x16\n  classes 3\n  net a dense { stem 3:4 block { 3:2 } }\n"
     "  net b dense {\n    stem 3:4\n    block { 3:2 }\n    block { 3:2 x2 }\n  }\n}\n",
     "b", 8, "transition1: the MotherNet has no transition", "move the layers of block 2 into block 1",
     "ensemble e {\n  input 1x16\n  classes 3\n  net a dense { stem 3:4 block { 3:2 } }\n"
     "  net b dense { stem 3:4 block { 3:2 3:2 x2 } }\n}\n"),
    ("mlp_without_hidden_layer",
     "ensemble e {\n  input 20\n  classes 3\n  net a mlp { }\n  net b mlp { dense 32 }\n}\n",
     "b", 5, "head.fc1: an added identity layer here sees raw inputs",
     "the MotherNet has no hidden layer because a member of the cluster has none",
     "ensemble e {\n  input 20\n  classes 3\n  net a mlp { dense 16 }\n  net b mlp { dense 32 }\n}\n"),
    ("dense_head_cannot_carry",
     "ensemble e {\n  input 1x16\n  classes 3\n  net a dense { stem 3:4 block { 3:2 } }\n"
     "  net b dense { stem 3:4 block { 3:2 } dense 2 }\n}\n",
     "b", 5, "head.fc1: an added identity layer of 2 units cannot carry the MotherNet's 6 channels",
     "the MotherNet has no hidden layer because a member of the cluster has none",
     "ensemble e {\n  input 1x16\n  classes 3\n  net a dense { stem 3:4 block { 3:2 } dense 2 }\n"
     "  net b dense { stem 3:4 block { 3:2 } dense 2 }\n}\n"),
]


def _tables(text: str) -> dict[str, object]:
    return dict(hatching.tables_for(loads(text, "spec.mnet")))


@pytest.mark.parametrize("case", REACHABLE, ids=[c[0] for c in REACHABLE])
def test_each_reachable_reason_has_its_fix_and_the_fix_works(case: tuple[str, ...]) -> None:
    _, text, member, line, reason, hint, fixed = case
    e = loads(text, "spec.mnet")
    warnings = hatching.warnings_for(e, hatching.tables_for(e))
    mine = [w for w in warnings if w.member == member]
    assert mine and {w.member for w in warnings} == {member}
    w = next(w for w in mine if w.reason.startswith(reason))
    assert w.hint.startswith(hint) and w.hint != FALLBACK and w.hint.endswith(MORE_CLUSTERS)
    assert (w.line, w.column is not None) == (line, True)
    assert w.mother == "mothernet1" and w.place == split_reason(w.reason)[0]
    # the change the hint proposes makes every member of the fixed spec hatch exactly
    tables = hatching.tables_for(loads(fixed, "fixed.mnet"))
    assert tables and all(t.exact for t in tables.values()), {m: t.reasons for m, t in tables.items()}


def _net(family: str, stem: tuple[int, int] | None, *blocks: tuple[tuple[int, int], ...],
         dense: tuple[int, ...] = (), name: str = "n") -> Net:
    return Net(name=name, family=family,  # type: ignore[arg-type]
               stem=Layer(kernel=stem[0], filters=stem[1]) if stem else None,
               blocks=tuple(Block(layers=tuple(Layer(kernel=k, filters=f) for k, f in b)) for b in blocks),
               dense=tuple(Linear(width=w) for w in dense))


# reasons that a MotherNet built by the construction never causes (it takes position-wise minima
# and the tail and shortcut rules), but a table can still say: a hand-made MotherNet -> the member
DIRECT = [
    ("kernel_cropped", _net("plain", None, ((5, 4),), name="m"), _net("plain", None, ((3, 4),)),
     "block1.layer1.conv: kernel 3 is smaller than the MotherNet's 5",
     "give block 1, layer 1 a kernel of at least 5"),
    ("identity_replaces_projection", _net("residual", (3, 4), ((3, 8),), name="m"),
     _net("residual", (3, 8), ((3, 8),)),
     "block1.unit1: the member's identity shortcut replaces the MotherNet's projection",
     "the MotherNet changes the width here"),
    ("layer_cannot_carry", _net("plain", None, ((3, 8),), name="m"), _net("plain", None, ((3, 8), (3, 4))),
     "block1.layer2: an added identity layer of 4 units cannot carry the MotherNet's 8 channels",
     "give layer 2 of block 1 at least 8 filters"),
    ("shortcut_cannot_carry", _net("residual", (3, 4), ((3, 16),), name="m"),
     _net("residual", (3, 4), ((3, 16),), ((3, 8),)),
     "block2.unit1.shortcut: 8 channels cannot carry the MotherNet's 16",
     "make block 2 at least 16 wide"),
    ("raw_inputs_in_a_block", _net("plain", None, ((3, 8),), name="m"), _net("plain", None, ((3, 4), (3, 8))),
     "block1.layer1: an added identity layer here sees raw inputs",
     "an identity layer on raw, possibly negative inputs is not exact"),
]


@pytest.mark.parametrize("case", DIRECT, ids=[c[0] for c in DIRECT])
def test_each_other_reason_of_the_planner_has_its_fix(case: tuple[object, ...]) -> None:
    _, mother, member, reason, hint = case
    assert isinstance(mother, Net) and isinstance(member, Net) and isinstance(reason, str)
    t = plan_hatching(mother, member, (3, 16, 16), 3)
    assert not t.exact
    found = [r for r in t.reasons if r.startswith(reason)]
    assert found, t.reasons
    fix = fix_for(found[0])
    assert fix.startswith(str(hint)) and fix != FALLBACK
    # every reason of the table has a fix of its own, never the fallback
    assert all(fix_for(r) != FALLBACK for r in t.reasons), t.reasons
    (w,) = [w for w in not_exact({"n": t}) if w.reason == found[0]]
    assert w.member == "n" and w.mother == "m" and w.line is None


def test_places_in_words() -> None:
    assert [where(p) for p in ("block3", "block2.layer4", "block1.unit2.conv1.weight",
                               "block2.unit1.shortcut", "transition2", "head.fc3", "stem.bn.weight",
                               "head.out.weight", "")] == [
        "block 3", "block 2, layer 4", "block 1, unit 2", "block 2, unit 1 (its shortcut)",
        "the transition after block 2", "hidden layer 3 of the dense head", "the stem", "the head",
        "the net"]
    assert split_reason("block3: a: b") == ("block3", "a: b")


def _spec(tmp_path: Path, text: str, name: str = "spec.mnet") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


TWO = REACHABLE[0][1]


def test_check_warns_on_stderr_and_keeps_its_table(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, TWO)
    assert main(["check", str(spec)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{spec}: ensemble 'e' is valid: 2 nets") and "warning" not in out
    lines = err.splitlines()
    assert lines[0].startswith(f"{spec}:5:31: warning: member 'b' does not hatch exactly from its "
                               "MotherNet 'mothernet1' at block 2: the MotherNet has no block 2")
    assert lines[1].startswith("  = help: move the layers of block 2 into block 1")
    assert lines[2].startswith("note: with the default clustering (one MotherNet per architecture "
                               "class): 1 of 2 hatched members ('b')")
    assert len(lines) == 3
    # the same net alone in its cluster hatches nothing: no warning
    spec = _spec(tmp_path, H + "  net b plain { block { 3:8 } block { 3:16 } }\n}\n", "one.mnet")
    assert main(["check", str(spec)]) == 0
    assert capsys.readouterr().err == ""


def test_check_json_carries_the_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, TWO)
    assert main(["check", "--json", str(spec)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    assert [n["net"] for n in doc["nets"]] == ["a", "b"]
    (w,) = doc["warnings"]
    assert w == {"member": "b", "mother": "mothernet1", "place": "block2", "where": "block 2",
                 "reason": "block2: the MotherNet has no block 2; its 2x max-pool is not an identity",
                 "hint": fix_for(w["reason"]), "line": 5, "column": 31}


@pytest.mark.parametrize("name", ["v5", "r10", "d5", "mlp", "mnist1d", "digits", "wrn6", "v25"])
def test_the_examples_hatch_exactly(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / f"{name}.mnet"
    assert main(["check", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().err == ""


def test_plan_warns_for_its_clusters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, TWO)
    assert main(["plan", str(spec)]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in out and "g = 1 MotherNet" in out
    assert err.startswith(f"{spec}:5:31: warning: member 'b'")
    assert "note: with g = 1 (seed 0): 1 of 2 hatched members ('b')" in err
    assert main(["plan", str(spec), "--json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert err == "" and [w["member"] for w in doc["warnings"]] == ["b"]
    assert out == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    # one net per cluster: nothing is hatched, nothing to warn about
    assert main(["plan", str(spec), "--clusters", "2"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["plan", str(spec), "--clusters", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_compile_check_and_plan_print_the_same_warnings(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    text = REACHABLE[2][1].replace("}\n}\n", "}\n") + "  net c mlp { }\n  net d mlp { dense 8 }\n}\n"
    spec = _spec(tmp_path, text)
    assert main(["check", str(spec)]) == 0
    checked = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert main(["plan", str(spec)]) == 0
    planned = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert main([str(spec), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(out) if line.startswith("hatching: "))
    assert out[head] == "hatching: 2 of 4 tables exact; not exact: b, d"
    compiled = [line[2:] for line in out[head + 1:head + 1 + len(checked)]]
    assert checked == planned == compiled
    assert sum("warning: member 'd'" in line for line in checked) == 2  # two reasons at head.fc1
    assert any(f"{spec}:7:" in line and "[head.fc1]" in line for line in checked)


def test_format_without_a_position_names_the_source() -> None:
    (w,) = not_exact({"b": plan_hatching(_net("plain", None, ((3, 4),), name="m"),
                                         _net("plain", None, ((3, 4),), ((3, 4),), name="b"),
                                         (3, 16, 16), 3)})
    text = format_warning(w, "spec.mnet")
    assert text.startswith("spec.mnet: warning: member 'b' does not hatch exactly from its MotherNet 'm'"
                           " at block 2: ")
    assert text.splitlines()[1] == "  = help: " + w.hint
