"""`mncompile plan` through the real entry point: output, JSON schema, sweeps, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mncompile.cli import main
from mncompile.plan import SCHEMA_VERSION

V5_MOTHER = [[[3, 64]] * 2, [[3, 128]] * 2, [[3, 256]] * 2, [[3, 512]] * 2, [[3, 512]] * 2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_v5_one_mothernet_is_the_positionwise_minimum(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "plan", "examples/v5.mnet", "--clusters", "1")
    assert rc == 0
    lines = out.splitlines()
    start = lines.index("  net mothernet1 plain {")
    assert lines[start:lines.index("  }", start) + 1] == [
        "  net mothernet1 plain {",
        "    block { 3:64 x2 }",
        "    block { 3:128 x2 }",
        "    block { 3:256 x2 }",
        "    block { 3:512 x2 }",
        "    block { 3:512 x2 }",
        "    dense 512",
        "  }",
    ]
    for name in ("vgg13", "vgg16", "vgg16a", "vgg16b", "vgg19"):
        assert name in out
    assert "total edit distance: 15" in out
    assert "estimated training cost: 0.450 x independent training" in out
    assert "an estimate" in out
    rc, out, _ = run(capsys, "plan", "examples/v5.mnet", "--clusters", "1", "--json")
    doc = json.loads(out)
    assert doc["clusters"][0]["mother"]["blocks"] == V5_MOTHER
    assert doc["clusters"][0]["mother"]["dense"] == [512]
    assert doc["clusters"][0]["mother"]["stem"] is None


def test_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "plan", "examples/r10.mnet", "--clusters", "3", "--seed", "2", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    # plan.json's keys, and the hatching warnings (none: every r10 member hatches exactly at g = 3)
    assert set(doc) == {"schema_version", "ensemble", "input", "classes", "g", "seed",
                        "total_distance", "arch_classes", "clusters", "members", "cost", "warnings"}
    assert doc["warnings"] == []
    assert (doc["schema_version"], doc["ensemble"], doc["input"], doc["classes"], doc["g"],
            doc["seed"]) == (SCHEMA_VERSION, "r10", [3, 32, 32], 10, 3, 2)
    assert doc["arch_classes"] == [{"family": "residual", "rank": 2, "clusters": 3,
                                    "nets": [m["name"] for m in doc["members"]]}]
    assert [c["index"] for c in doc["clusters"]] == [0, 1, 2]
    for c in doc["clusters"]:
        assert set(c) == {"index", "family", "rank", "distance", "members", "mother"}
        m = c["mother"]
        assert set(m) == {"name", "family", "stem", "blocks", "dense", "params", "macs"}
        assert m["name"] == f"mothernet{c['index'] + 1}" and len(m["stem"]) == 2
        assert c["distance"] == sum(r["distance"] for r in doc["members"] if r["cluster"] == c["index"])
        for r in doc["members"]:
            if r["cluster"] == c["index"]:
                assert m["params"] <= r["params"] and m["macs"] <= r["macs"]
    assert doc["total_distance"] == sum(c["distance"] for c in doc["clusters"])
    assert sorted(n for c in doc["clusters"] for n in c["members"]) == sorted(
        r["name"] for r in doc["members"])
    cost = doc["cost"]
    assert cost["estimate"] is True and "estimate" in cost["note"]
    assert cost["total"] == cost["mothers"] + cost["hatched"]
    assert cost["ratio"] == round(cost["total"] / cost["independent"], 6)
    assert cost["independent"] == sum(r["macs"] for r in doc["members"]) * cost["max_epochs"]
    rc, again, _ = run(capsys, "plan", "examples/r10.mnet", "--clusters", "3", "--seed", "2", "--json")
    assert again == out  # deterministic


def test_sweep_on_v25(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "plan", "examples/v25.mnet", "--clusters", "sweep")
    assert rc == 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["g"])
    rows = [line.split() for line in lines[header + 2:header + 2 + 25]]
    assert [int(r[0]) for r in rows] == list(range(1, 26))
    assert rows[-1][1] == "0" and rows[-1][-1] == "1.000"
    assert float(rows[0][-1]) < 1.0
    assert "estimate" in out
    rc, out, _ = run(capsys, "plan", "examples/v25.mnet", "--clusters", "sweep", "--json")
    doc = json.loads(out)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["ensemble"] == "v25"
    assert [r["g"] for r in doc["sweep"]] == list(range(1, 26))
    assert doc["sweep"][-1]["total_distance"] == 0 and doc["sweep"][-1]["cost_ratio"] == 1.0
    assert [r["total_distance"] for r in doc["sweep"]] == [int(r[1]) for r in rows]


@pytest.mark.parametrize("value, message", [
    ("0", "at least 1 cluster"),
    ("6", "at most 5 clusters"),
    ("-2", "at least 1 cluster"),
    ("abc", "whole number or 'sweep'"),
    ("1.5", "whole number or 'sweep'"),
])
def test_bad_clusters(capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    rc, out, err = run(capsys, "plan", "examples/v5.mnet", "--clusters", value)
    assert rc == 2 and out == ""
    assert message in err and "--clusters" in err and "Traceback" not in err
    assert "help:" in err


def test_bad_seed_and_restarts(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--seed", "-1"], ["--seed", "x"], ["--restarts", "0"]):
        rc, out, err = run(capsys, "plan", "examples/v5.mnet", *argv)
        assert rc == 2 and out == "" and argv[0] in err


def test_too_few_clusters_for_the_classes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "mixed.mnet"
    spec.write_text("""ensemble mixed { input 3x8x8 classes 2
      net p plain { block { 3:4 } } net q plain { block { 3:8 } }
      net r residual { stem 3:4 block { 3:4 } } }""")
    rc, out, err = run(capsys, "plan", str(spec), "--clusters", "1")
    assert rc == 2 and "2 architecture classes" in err and "from 2 to 3" in err
    rc, out, _ = run(capsys, "plan", str(spec))
    assert rc == 0 and "g = 2 MotherNets" in out
    assert "(plain, 2-D input)" in out and "(residual, 2-D input)" in out


def test_bad_spec_is_positioned(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "bad.mnet"
    spec.write_text("ensemble e { input 8 classes 2\n net a mlp { dense 0 } }\n")
    rc, _, err = run(capsys, "plan", str(spec))
    assert rc == 2 and f"{spec}:2:" in err


def test_console_script_lists_plan() -> None:
    res = subprocess.run([sys.executable, "-m", "mncompile.cli", "--help"], capture_output=True,
                         text=True, check=True)
    assert "plan" in res.stdout
    res = subprocess.run([sys.executable, "-m", "mncompile.cli", "plan", "examples/mlp.mnet",
                          "--clusters", "9"], capture_output=True, text=True)
    assert res.returncode == 2 and "at most 5 clusters" in res.stderr
