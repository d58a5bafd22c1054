"""`--threads auto|N`: the rule, its record, and that a run leaves torch's thread count as it found it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mncompile.cli import main as cli_main
from mncompile.runtime.threads import ONE_THREAD_MACS, choose_threads, forward_macs, largest_net_macs
from tests.conftest import spec_in

SPEC = """ensemble th { input 1x16 classes 3
    net a plain { block { 3:4 } dense 8 }
    net b plain { block { 5:6 } dense 8 } }"""
RUN = ["--data", "synthetic", "--train-size", "64", "--test-size", "16", "--batch", "16", "--max-epochs", "1",
       "--hatched-max-epochs", "1", "--quiet"]


def test_forward_macs_counts_convolutions_and_linear_layers() -> None:
    net = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 10, 5))
    # conv: 4 outputs x 10 positions, each 2 x 3 MACs; linear: 5 outputs x 40 inputs
    assert forward_macs(net, (2, 10)) == 4 * 10 * 2 * 3 + 5 * 40
    grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False)
    assert forward_macs(grouped, (4, 5, 5)) == 8 * 25 * 2 * 9
    small = nn.Sequential(nn.Flatten(), nn.Linear(20, 3))
    assert largest_net_macs([lambda: small, lambda: net], (2, 10)) == 4 * 10 * 2 * 3 + 5 * 40


def test_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    now = torch.get_num_threads()
    asked: list[int] = []

    def macs(n: int):  # noqa: ANN202
        def count() -> int:
            asked.append(n)
            return n
        return count

    assert choose_threads(3, torch.device("cpu"), macs(1), 128) == (3, "--threads")
    assert choose_threads("auto", torch.device("cuda"), macs(1), 128)[0] == now
    assert asked == []  # the nets are not looked at where the rule does not need them
    small, why = choose_threads("auto", torch.device("cpu"), macs(ONE_THREAD_MACS // 128), 128)
    assert small == 1 and "at most 2 G" in why
    big, why = choose_threads("auto", torch.device("cpu"), macs(ONE_THREAD_MACS // 128 + 1), 128)
    assert big == now and "above 2 G" in why
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads("auto", torch.device("cpu"), macs(1), 128) == (now, "OMP_NUM_THREADS")


def test_a_run_records_its_threads_and_puts_torch_s_count_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    spec = spec_in(tmp_path, monkeypatch, SPEC, "th.mnet")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []
    import mncompile.runtime.pipeline as pipeline

    real = pipeline._train_and_evaluate

    def spy(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        seen.append(torch.get_num_threads())
        return real(*a, **kw)

    monkeypatch.setattr(pipeline, "_train_and_evaluate", spy)
    try:
        assert cli_main(["run", str(spec), *RUN, "--out", str(tmp_path / "auto")]) == 0
        assert torch.get_num_threads() == 2
        doc = json.loads((tmp_path / "auto" / "results.json").read_text())
        assert doc["info"]["threads"] == 1 and seen == [1]  # tiny nets: one thread
        assert doc["info"]["threads_rule"].startswith("auto: the largest net's step is")
        assert cli_main(["run", str(spec), *RUN, "--threads", "2", "--out", str(tmp_path / "two")]) == 0
        assert json.loads((tmp_path / "two" / "results.json").read_text())["info"]["threads"] == 2
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for bad, says in (("0", "from 1 to"), ("many", "expected auto or a number")):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["run", str(spec), *RUN, "--threads", bad, "--out", str(tmp_path / "bad")])
        assert exit_.value.code == 2
        assert says in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
