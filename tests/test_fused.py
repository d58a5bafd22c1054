"""Fused lockstep groups (runtime/fused.py): one fused step equals K unfused steps.

The property: for random ensembles of every family and input rank, with per-member learning
rates, momenta and weight decays, `fit(..., fuse=True)` leaves every tensor of every member
(weights, BN statistics, SGD momentum buffers) within 1e-5 relative of `fit(..., fuse=False)`,
in float32 on the CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from mncompile.formats.ensemble_file import NetDescription, net_tensors
from mncompile.runtime import fused as fused_module
from mncompile.runtime.checkpoint import load_checkpoint
from mncompile.runtime.data import load_dataset
from mncompile.runtime.fuse_rule import CPU_RULE, choose_fuse
from mncompile.runtime.fused import FusedGroup, describe_module, fusable, group_key
from mncompile.runtime.jobs import Job, TrainSettings
from mncompile.runtime.nets import build_net
from mncompile.runtime.progress import Progress
from mncompile.runtime.train import fit
from mncompile.shapes import max_pools

TOLERANCE = 1e-5
BATCH = 8


WIDTHS = st.integers(3, 12)
KERNELS = st.sampled_from([1, 3, 5])


@st.composite
def descriptions(
    draw: st.DrawFn, family: str, shape: tuple[int, ...], classes: int, blocks: int
) -> NetDescription:
    """A random net of `family` with `blocks` blocks (widths of 3 or more: see `ensembles`)."""
    dense = tuple(draw(st.lists(st.integers(2, 16), max_size=2)))
    if family == "mlp":
        return NetDescription("mlp", shape, classes, None, (), dense)
    stem = (draw(KERNELS), draw(WIDTHS)) if family in ("residual", "dense") else None
    out = []
    for _ in range(blocks):
        n = draw(st.integers(1, 2))
        if family == "residual":
            w = draw(WIDTHS)
            out.append(tuple((draw(KERNELS), w) for _ in range(n)))
        else:
            out.append(tuple((draw(KERNELS), draw(WIDTHS)) for _ in range(n)))
    return NetDescription(family, shape, classes, stem, tuple(out), dense)


@st.composite
def ensembles(draw: st.DrawFn) -> tuple[list[NetDescription], list[TrainSettings], float]:
    """2-4 nets of one family with the same number of blocks (one fused group), their settings,
    and the padding the group may add (`fused.WASTE`)."""
    family = draw(st.sampled_from(["plain", "residual", "dense", "mlp"]))
    rank = draw(st.sampled_from([0, 1, 2] if family == "mlp" else [1, 2]))
    c = draw(st.integers(1, 3))
    shape = (
        (draw(st.integers(4, 24)),)
        if rank == 0
        else (c, draw(st.sampled_from([8, 12, 16])))
        if rank == 1
        else (c, *([draw(st.sampled_from([6, 8]))] * 2))
    )
    pools = max_pools(shape) if rank else 0
    most = {"plain": pools, "dense": pools + 1, "residual": 2, "mlp": 0}[family]
    blocks = draw(st.integers(1, max(1, min(2, most)))) if family != "mlp" else 0
    classes = draw(st.integers(2, 5))
    descs = [draw(descriptions(family, shape, classes, blocks)) for _ in range(draw(st.integers(2, 4)))]
    # a convolution of a single weight per filter feeds a BatchNorm, which makes its output
    # invariant to that weight's scale: its gradient is zero but for rounding, and a relative
    # error of rounding noise says nothing. Real nets never have one; these draws are skipped.
    assume(
        all(
            math.prod(dims[1:]) >= 2
            for d in descs
            for key, dims in net_tensors(d).items()
            if key.endswith("conv.weight") or key.endswith("conv1.weight") or key.endswith("conv2.weight")
        )
    )
    order = draw(st.sampled_from(["shared", "member"]))
    runs = [
        TrainSettings(
            batch=BATCH,
            lr=draw(st.sampled_from([0.01, 0.05, 0.1])),
            momentum=draw(st.sampled_from([0.0, 0.9])),
            weight_decay=draw(st.sampled_from([0.0, 5e-4])),
            max_epochs=2,
            patience=0,
            order=order,
        )
        for _ in descs
    ]
    # how much padding a position may add: none (a part per member: the CPU's rule for 2-D nets),
    # equal shapes only (its rule for the others), CUDA's, or every member padded to the largest
    return descs, runs, draw(st.sampled_from([0.0, 1.0, 1.5, math.inf]))


def train(
    descs: list[NetDescription], runs: list[TrainSettings], fuse: bool, steps: int = 2, **kwargs: object
) -> tuple[list[nn.Module], list[Job]]:
    data = load_dataset(
        "synthetic", descs[0].input, descs[0].classes, seed=0, train_size=BATCH * steps, test_size=4
    )
    torch.manual_seed(0)
    models = [build_net(d, f"m{i}") for i, d in enumerate(descs)]
    jobs = [Job(f"m{i}", m, s) for i, (m, s) in enumerate(zip(models, runs, strict=True))]
    fit(jobs, data, seed=0, device="cpu", progress=Progress(quiet=True), fuse=fuse, **kwargs)  # type: ignore[arg-type]
    return models, jobs


def with_momenta(
    descs: list[NetDescription], runs: list[TrainSettings], fuse: bool, steps: int
) -> tuple[list[nn.Module], list[torch.Tensor]]:
    """The members after training, and each one's SGD momentum buffers (read from its checkpoint)
    as one vector (empty without momentum)."""
    buffers = []
    with tempfile.TemporaryDirectory() as tmp:
        models, jobs = train(descs, runs, fuse, steps, checkpoint_dir=tmp)
        for i, (model, job) in enumerate(zip(models, jobs, strict=True)):
            copy_ = copy.deepcopy(model)
            s = job.settings
            opt = torch.optim.SGD(
                copy_.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
            )
            load_checkpoint(Path(tmp) / f"m{i}.pt", copy_, opt)
            bufs = [
                opt.state[p]["momentum_buffer"].flatten()
                for p in copy_.parameters()
                if "momentum_buffer" in opt.state.get(p, {})
            ]
            assert len(bufs) in (0, len(list(copy_.parameters())))
            buffers.append(torch.cat(bufs) if bufs else torch.zeros(0))
    return models, buffers


def assert_momenta_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    """Momentum buffers, per member, within TOLERANCE of that member's whole buffer.

    Not per tensor: some gradients are zero but for rounding (the scale of a BatchNorm whose
    every consumer is another BatchNorm, as a DenseNet stem's), and the relative error of
    rounding noise says nothing.
    """
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        if x.numel():
            assert float((x - y).norm() / (x.norm() + 1e-12)) <= TOLERANCE


def assert_close(a: list[nn.Module], b: list[nn.Module]) -> float:
    worst = 0.0
    for ma, mb in zip(a, b, strict=True):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert list(sa) == list(sb)
        for key in sa:
            x, y = sa[key], sb[key]
            if not x.dtype.is_floating_point:
                assert torch.equal(x, y), key
                continue
            rel = float((x - y).norm() / (x.norm() + 1e-12))
            assert rel <= TOLERANCE, f"{key}: {rel:.3g}"
            worst = max(worst, rel)
    return worst


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(ensembles())
def test_a_fused_step_equals_the_unfused_steps(
    case: tuple[list[NetDescription], list[TrainSettings], float],
) -> None:
    descs, runs, waste = case
    assert len({group_key(d) for d in descs}) == 1
    runs = [dataclasses.replace(s, max_epochs=1) for s in runs]
    unfused, ubuf = with_momenta(descs, runs, fuse=False, steps=1)
    with mock.patch.dict(fused_module.WASTE, cpu_bounds(waste)):
        fused, fbuf = with_momenta(descs, runs, fuse=True, steps=1)
    assert_close(unfused, fused)
    assert_momenta_close(ubuf, fbuf)


def cpu_bounds(waste: float) -> dict[str, float]:
    """fused.WASTE with every CPU bound `waste`: the groups the CPU keeps unfused fused too."""
    return {k: waste for k in fused_module.WASTE if k.startswith("cpu")}


FIXED = {
    "plain": [
        NetDescription("plain", (1, 24), 4, None, (((5, 8),), ((3, 12), (3, 12))), (16,)),
        NetDescription("plain", (1, 24), 4, None, (((7, 12), (3, 8)), ((3, 16),)), ()),
    ],
    "residual": [
        NetDescription("residual", (2, 16), 4, (3, 8), (((3, 8),), ((3, 12), (3, 12))), (6,)),
        NetDescription("residual", (2, 16), 4, (5, 6), (((3, 8), (5, 8)), ((3, 8),)), ()),
        NetDescription("residual", (2, 16), 4, (3, 4), (((3, 6),), ((3, 6),)), (5, 7)),
    ],
    "dense": [
        NetDescription("dense", (2, 8, 8), 4, (3, 8), (((3, 4), (3, 4)), ((3, 6),)), (6,)),
        NetDescription("dense", (2, 8, 8), 4, (5, 6), (((3, 2),), ((5, 4), (3, 4))), (3, 3)),
    ],
    "mlp": [
        NetDescription("mlp", (2, 8), 4, None, (), (8,)),
        NetDescription("mlp", (2, 8), 4, None, (), (16, 4)),
        NetDescription("mlp", (2, 8), 4, None, (), ()),
    ],
}


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("waste", [1.0, math.inf])
@pytest.mark.parametrize("order", ["shared", "member"])
@pytest.mark.parametrize("family", sorted(FIXED))
def test_epochs_of_fused_steps_stay_with_the_unfused(
    family: str, order: str, waste: float, uniform: bool
) -> None:
    """Three epochs of two steps: momentum and BN statistics carried across the epochs' pack and unpack;
    members with settings of their own (the per-member step) or one setting for all (torch's foreach)."""
    descs = FIXED[family]
    if uniform:
        runs = [
            TrainSettings(
                batch=BATCH, lr=0.05, momentum=0.9, weight_decay=5e-4, max_epochs=3, patience=0, order=order
            )
        ] * len(descs)
        unfused, ubuf = with_momenta(descs, runs, False, 2)
        with mock.patch.dict(fused_module.WASTE, cpu_bounds(waste)):
            fused, fbuf = with_momenta(descs, runs, True, 2)
        assert_close(unfused, fused)
        assert_momenta_close(ubuf, fbuf)
        return
    runs = [
        TrainSettings(
            batch=BATCH,
            lr=0.02 * (i + 1),
            momentum=0.9 if i != 1 else 0.0,
            weight_decay=5e-4 * i,
            max_epochs=3,
            patience=0,
            order=order,
        )
        for i in range(len(descs))
    ]
    unfused, ubuf = with_momenta(descs, runs, False, 2)
    with mock.patch.dict(fused_module.WASTE, cpu_bounds(waste)):
        fused, fbuf = with_momenta(descs, runs, True, 2)
    assert_close(unfused, fused)
    assert_momenta_close(ubuf, fbuf)


CUDA_LIKE = {
    "plain": [
        NetDescription("plain", (3, 8, 8), 4, None, (((3, 8),), ((3, 12), (3, 12))), (16,)),
        NetDescription("plain", (3, 8, 8), 4, None, (((5, 12), (3, 8)), ((3, 16),)), ()),
    ],
    "residual": [
        NetDescription("residual", (3, 8, 8), 4, (3, 8), (((3, 8),), ((3, 12), (3, 12))), (6,)),
        NetDescription("residual", (3, 8, 8), 4, (5, 6), (((3, 8), (5, 8)), ((3, 8),)), ()),
    ],
    "dense": FIXED["dense"],
    "mlp": FIXED["mlp"],
}


@pytest.mark.parametrize("order", ["shared", "member"])
@pytest.mark.parametrize("family", sorted(CUDA_LIKE))
def test_the_cuda_path_bf16_autocast_channels_last_trains_fused_as_unfused(family: str, order: str) -> None:
    """What a CUDA run does differently, on the CPU: bf16 autocast, channels_last images, CUDA's
    padding bound. Fused and unfused then agree to bf16 rounding: the change 4 steps make to the
    weights within 10 % (7 % measured for residual nets, 0-0.4 % for the others), where a learning
    rate 1.5x off already fails every case, and a member mixed up with another or a dtype dropped
    would be off by far more."""
    from mncompile.runtime import train as train_module

    def autocast(device: torch.device) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def prepare(x: torch.Tensor, device: torch.device) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    descs = CUDA_LIKE[family]
    runs = [TrainSettings(batch=BATCH, lr=0.05, momentum=0.9, weight_decay=5e-4, max_epochs=2, patience=0,
                          order=order)] * len(descs)
    out = {}
    with mock.patch.object(train_module, "_autocast", autocast), \
            mock.patch.object(train_module, "prepare_input", prepare), \
            mock.patch.dict(fused_module.WASTE, cpu_bounds(fused_module.WASTE["cuda"])):
        for fuse in (False, True):
            with mock.patch.object(FusedGroup, "forward", autospec=True,
                                   side_effect=FusedGroup.forward) as forward:
                models, _ = train(descs, runs, fuse, steps=2)
            assert forward.called is fuse
            out[fuse] = models
    torch.manual_seed(0)  # the members as train() builds them: their initial weights
    init = [build_net(d, f"m{i}") for i, d in enumerate(descs)]
    for a, b, c in zip(out[False], out[True], init, strict=True):
        va, vb, v0 = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b, c))
        assert torch.isfinite(vb).all() and vb.dtype == torch.float32
        # the training's change of the weights, fused against unfused
        assert float((va - vb).norm() / (va - v0).norm()) < 0.1


def test_the_group_really_runs_fused() -> None:
    """Guard against a fusion that silently falls back to the unfused path."""
    descs = [
        NetDescription("plain", (1, 16), 3, None, (((3, 4),), ((5, 6), (3, 6))), (8,)),
        NetDescription("plain", (1, 16), 3, None, (((5, 6), (3, 4)), ((3, 8),)), ()),
    ]
    runs = [TrainSettings(batch=BATCH, lr=0.05, max_epochs=1, patience=0)] * 2
    calls = []
    original = FusedGroup.forward

    def spy(self: FusedGroup, x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return original(self, x)

    FusedGroup.forward = spy  # type: ignore[method-assign]
    try:
        unfused, _ = train(descs, runs, fuse=False)
        fused, _ = train(descs, runs, fuse=True)
    finally:
        FusedGroup.forward = original  # type: ignore[method-assign]
    assert len(calls) == 2  # one fused forward per batch
    assert_close(unfused, fused)


FORWARD = [
    [
        NetDescription("dense", (2, 8, 8), 4, (3, 8), (((3, 4), (3, 4)), ((3, 6),)), (6,)),
        NetDescription("dense", (2, 8, 8), 4, (5, 6), (((3, 2),), ((5, 4), (3, 4))), (3, 3)),
    ],
    # a member merged with a wider one, then passed through a layer it lacks (a segment wider
    # than its members' channels reach)
    [
        NetDescription("dense", (1, 8), 3, (3, 8), (((3, 8), (3, 1)),), ()),
        NetDescription("dense", (1, 8), 3, (3, 6), (((3, 6),),), (4,)),
    ],
    [
        NetDescription("residual", (2, 16), 4, (3, 8), (((3, 8),), ((3, 12), (3, 12))), (6,)),
        NetDescription("residual", (2, 16), 4, (5, 6), (((3, 8), (5, 8)), ((3, 8),)), ()),
        NetDescription("residual", (2, 16), 4, (3, 4), (((3, 6),), ((3, 6),)), (5, 7)),
    ],
]


@torch.no_grad()
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("waste", [0.0, 1.0, 1.5, math.inf])
@pytest.mark.parametrize("case", range(len(FORWARD)))
def test_the_forward_pass_equals_each_members(case: int, waste: float, shared: bool) -> None:
    torch.manual_seed(1)
    descs = FORWARD[case]
    members = [build_net(d) for d in descs]
    group = FusedGroup(descs, shared_input=shared, waste=waste)
    group.pack(members, [None] * len(members))
    x = torch.randn(6, *descs[0].input)
    out = group(x if shared else x.unsqueeze(1).expand(6, len(descs), *x.shape[1:]).contiguous())
    for i, m in enumerate(members):
        ref = m(x)
        assert float((out[:, i] - ref).norm() / ref.norm()) <= TOLERANCE


def test_members_that_stop_leave_the_group_and_the_rest_train_on() -> None:
    descs = [
        NetDescription("mlp", (6,), 3, None, (), (8,)),
        NetDescription("mlp", (6,), 3, None, (), (4, 4)),
        NetDescription("mlp", (6,), 3, None, (), ()),
    ]
    runs = [
        TrainSettings(batch=BATCH, lr=0.05, max_epochs=4, patience=0),
        TrainSettings(batch=BATCH, lr=0.05, max_epochs=4, patience=1, tolerance=10.0),  # stops after 1
        TrainSettings(batch=BATCH, lr=0.05, max_epochs=2, patience=0),
    ]
    unfused, uj = train(descs, runs, fuse=False)
    fused, fj = train(descs, runs, fuse=True)
    assert_close(unfused, fused)


def test_resume_of_a_fused_run_is_bit_identical(tmp_path: Path) -> None:
    descs = [
        NetDescription("residual", (2, 12), 3, (3, 4), (((3, 4),), ((3, 6),)), ()),
        NetDescription("residual", (2, 12), 3, (3, 6), (((5, 6), (3, 6)), ((3, 4),)), (5,)),
    ]
    four = [TrainSettings(batch=BATCH, lr=0.05, max_epochs=4, patience=0, momentum=0.9)] * 2
    straight, _ = train(descs, four, fuse=True)
    # the same run cut after epoch 2 (a run of max_epochs 2 would change the cosine schedule:
    # stop it with an exception from the progress bar instead)
    data = load_dataset(
        "synthetic", descs[0].input, descs[0].classes, seed=0, train_size=BATCH * 2, test_size=4
    )

    class Stop(Exception):
        pass

    class Cut(Progress):
        def epoch(self, name: str, epoch: int, *args: object, **kwargs: object) -> None:
            super().epoch(name, epoch, *args, **kwargs)  # type: ignore[arg-type]
            if epoch == 3 and name == "m0":  # both have saved epoch 2
                raise Stop

    torch.manual_seed(0)
    models = [build_net(d, f"m{i}") for i, d in enumerate(descs)]
    jobs = [Job(f"m{i}", m, s) for i, (m, s) in enumerate(zip(models, four, strict=True))]
    with pytest.raises(Stop):
        fit(jobs, data, seed=0, device="cpu", progress=Cut(quiet=True), fuse=True, checkpoint_dir=tmp_path)
    torch.manual_seed(0)
    models = [build_net(d, f"m{i}") for i, d in enumerate(descs)]
    jobs = [Job(f"m{i}", copy.deepcopy(m), s) for i, (m, s) in enumerate(zip(models, four, strict=True))]
    fit(
        jobs,
        data,
        seed=0,
        device="cpu",
        progress=Progress(quiet=True),
        fuse=True,
        checkpoint_dir=tmp_path,
        resume=True,
    )
    for a, job in zip(straight, jobs, strict=True):
        for key, value in a.state_dict().items():
            assert torch.equal(value, job.model.state_dict()[key]), key


def test_hooked_jobs_train_unfused() -> None:
    """A job with a hook of its own (a cyclic learning rate, a loss) is never put in a group."""
    descs = FIXED["mlp"][:2]
    runs = [TrainSettings(batch=BATCH, lr=0.05, max_epochs=1, patience=0)] * 2
    data = load_dataset(
        "synthetic", descs[0].input, descs[0].classes, seed=0, train_size=BATCH * 2, test_size=4
    )
    calls = []
    original = FusedGroup.forward

    def spy(self: FusedGroup, x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return original(self, x)

    models = [build_net(d) for d in descs]
    jobs = [Job("a", models[0], runs[0], lr=lambda it: 0.05), Job("b", models[1], runs[1])]
    assert not fusable(jobs[0]) and fusable(jobs[1])
    with mock.patch.object(FusedGroup, "forward", spy):
        fit(jobs, data, seed=0, device="cpu", progress=Progress(quiet=True), fuse=True)
    assert calls == []  # one fusable net is no group


def test_other_modules_train_unfused() -> None:
    plain = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    assert describe_module(plain) is None
    net = build_net(NetDescription("mlp", (6,), 3, None, (), (4,)))
    assert describe_module(net) is not None
    net.head.fc1 = nn.Linear(6, 5)  # no longer the net its description names
    assert describe_module(net) is None


DENSE_1D = [
    NetDescription("dense", (2, 16), 4, (3, 8), (((3, 4), (3, 4)), ((3, 6),)), (6,)),
    NetDescription("dense", (2, 16), 4, (5, 6), (((3, 2),), ((5, 4), (3, 4))), ()),
]
SLOWER = {"dense": DENSE_1D, "mlp": FIXED["mlp"]}


def test_choose_fuse_is_a_fixed_rule() -> None:
    cpu = torch.device("cpu")
    assert choose_fuse("auto", torch.device("cuda"))[0] is True
    assert choose_fuse("on", cpu)[0] is True
    assert choose_fuse("off", torch.device("cuda"))[0] is False
    assert choose_fuse("auto", "mps")[0] is False
    # on the CPU, auto is on where two nets of one lockstep phase would fuse there (fused.WASTE)
    assert choose_fuse("auto", cpu, [FIXED["plain"]]) == (True, f"auto: on ({CPU_RULE})")
    assert choose_fuse("auto", cpu, [FIXED["mlp"], FIXED["residual"]])[0] is True
    for measured_slower in ("dense", "mlp"):
        on, why = choose_fuse("auto", cpu, [SLOWER[measured_slower]])
        assert on is False and why.startswith("auto: off, no two nets that train together"), why
    flat = [NetDescription("plain", (2, 8, 8), 3, None, (((3, 4),), ((3, 6),)), (8,))] * 2
    assert choose_fuse("auto", cpu, [flat])[0] is False
    assert choose_fuse("auto", torch.device("cuda"), [flat])[0] is True
    # two plain nets of different block counts: no group of two; nor two nets of different phases
    three_blocks = NetDescription("plain", (1, 24), 4, None, (((3, 4),), ((3, 4),), ((3, 4),)), ())
    assert group_key(three_blocks) != group_key(FIXED["plain"][0])
    assert choose_fuse("auto", cpu, [[FIXED["plain"][0], three_blocks]])[0] is False
    assert choose_fuse("auto", cpu, [[FIXED["plain"][0]], [FIXED["plain"][1]]])[0] is False
    assert choose_fuse("auto", cpu, [])[0] is False


def test_the_nets_each_method_trains_together(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from mncompile.runtime.methods import METHODS

    def ctx(order: str, shared: str = "") -> SimpleNamespace:
        (tmp_path / "shared.py").write_text(f"SHARED = {{{shared}}}\nNOT_SHARED = {{}}\n", encoding="utf-8")
        clusters = [("mother1", ["a", "b"]), ("mother2", ["c"])]
        return SimpleNamespace(clusters=clusters, members=["a", "b", "c"],
                               hatched_settings=SimpleNamespace(order=order), folder=tmp_path)

    def lockstep(method: str, order: str = "shared", shared: str = "") -> list[list[str]]:
        return METHODS[method].lockstep(ctx(order, shared))  # type: ignore[arg-type]

    assert lockstep("mothernets") == [["mother1", "c"], ["a", "b"]]
    assert lockstep("mothernets", "bootstrap") == [["mother1", "c"]]
    assert lockstep("full-data") == [["a", "b", "c"]]
    # a shared cluster trains as one joint model; one that shared.py does not share, as mothernets does
    assert lockstep("shared-mothernets", shared="'mother1': None") == [["mother1", "c"]]
    assert lockstep("shared-mothernets", "member") == [["mother1", "c"], ["a", "b"]]
    for hooked in ("snapshot", "fge", "distill", "treenet", "bagging"):
        assert lockstep(hooked) == []


RUN_SPEC = """ensemble fz { input 1x16 classes 3
    net a plain { block { 3:4 } block { 3:6 } dense 8 }
    net b plain { block { 5:6 3:6 } block { 3:6 } }
    net c plain { block { 3:4 } block { 3:6 } dense 8 } }"""
RUN = [
    "--data",
    "synthetic",
    "--train-size",
    "64",
    "--test-size",
    "16",
    "--batch",
    "16",
    "--max-epochs",
    "2",
    "--hatched-max-epochs",
    "2",
    "--seed",
    "0",
]


@pytest.mark.parametrize(
    "case", ["one net", "bagging"], ids=["a one-net cluster's MotherNet is its member", "own data"]
)
def test_auto_is_off_on_the_cpu_for_a_run_whose_nets_never_train_together(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mncompile.cli import main as cli_main
    from tests.conftest import spec_in

    one = "ensemble fz { input 1x16 classes 3 net a plain { block { 3:4 } } }"
    text = RUN_SPEC if case == "bagging" else one
    spec = spec_in(tmp_path, monkeypatch, text, "fz.mnet")
    method = ["--method", "bagging"] if case == "bagging" else []
    with mock.patch.object(FusedGroup, "forward", side_effect=AssertionError("fused")):
        assert cli_main(["run", str(spec), *RUN, *method, "--quiet", "--out", str(tmp_path / "r")]) == 0
    info = json.loads((tmp_path / "r" / "results.json").read_text())["info"]
    assert info["fuse"] is False, info
    assert info["fuse_rule"].startswith("auto: off, no two nets that train together"), info


def test_a_run_fuses_its_generated_members_records_it_and_a_resume_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mncompile.cli import main as cli_main
    from tests.conftest import spec_in

    spec = spec_in(tmp_path, monkeypatch, RUN_SPEC, "fz.mnet")
    assert cli_main(["run", str(spec), *RUN, "--fuse", "off", "--out", str(tmp_path / "off")]) == 0
    off = json.loads((tmp_path / "off" / "results.json").read_text())
    assert off["info"]["fuse"] is False and off["info"]["fuse_rule"] == "--fuse off"
    assert "fuse" not in json.loads((tmp_path / "off" / "ckpt" / "mothernets" / "run.json").read_text())
    capsys.readouterr()
    # plain nets of 1-D inputs: auto fuses them on the CPU too
    assert cli_main(["run", str(spec), *RUN, "--out", str(tmp_path / "on")]) == 0
    out = capsys.readouterr().out
    assert "fused from epoch 1: a, b, c (largest op 2 of 3 nets)" in out, out
    on = json.loads((tmp_path / "on" / "results.json").read_text())
    assert on["info"]["fuse"] is True and on["info"]["fuse_rule"] == f"auto: on ({CPU_RULE})"
    record = json.loads((tmp_path / "on" / "ckpt" / "mothernets" / "run.json").read_text())
    assert record["fuse"] is True
    # the same training to float32 rounding: the members' final losses agree closely
    for name in ("a", "b", "c"):
        lo, lf = (d["models"][name]["final_train_loss"] for d in (off, on))
        assert abs(lo - lf) <= 1e-4 * max(1.0, abs(lo)), name
    # a resume with --fuse auto keeps the recorded choice; an explicit other one is refused
    assert cli_main(["run", str(spec), *RUN, "--out", str(tmp_path / "on"), "--resume", "--quiet"]) == 0
    again = json.loads((tmp_path / "on" / "results.json").read_text())
    assert again["info"]["fuse"] is True and again["info"]["fuse_rule"].startswith("resumed")
    assert cli_main(["run", str(spec), *RUN, "--out", str(tmp_path / "on"), "--resume", "--fuse", "off"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert cli_main(["run", str(spec), *RUN, "--out", str(tmp_path / "on"), "--resume", "--sequential"]) == 2
    assert "trained its nets in fused groups, and --sequential" in capsys.readouterr().err
    assert (
        cli_main(["run", str(spec), *RUN, "--out", str(tmp_path / "seq"), "--sequential", "--fuse", "on"])
        == 2
    )
    assert "not both" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["2-D", "dense", "mlp"])
def test_on_the_cpu_groups_measured_slower_fused_train_unfused_bit_for_bit(kind: str) -> None:
    """fused.WASTE < 0 for 2-D nets, DenseNets and MLPs on the CPU: such groups are never built there."""
    if kind == "2-D":
        descs = [NetDescription("plain", (2, 8, 8), 3, None, (((3, 4),), ((3, 6),)), (8,))] * 2
    else:
        descs = SLOWER[kind][:2]
    runs = [TrainSettings(batch=BATCH, lr=0.05, max_epochs=1, patience=0)] * 2
    assert fused_module.waste_for(torch.device("cpu"), descs[0].rank, descs[0].family) < 0
    assert fused_module.waste_for(torch.device("cuda"), descs[0].rank, descs[0].family) >= 0
    with mock.patch.object(FusedGroup, "forward", side_effect=AssertionError("fused")):
        fused, _ = train(descs, runs, fuse=True)
    unfused, _ = train(descs, runs, fuse=False)
    for a, b in zip(unfused, fused, strict=True):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key


def test_the_bench_report_says_which_runs_were_fused() -> None:
    from types import SimpleNamespace

    from mncompile.commands.bench import _fused

    def run(fuse: bool | None) -> SimpleNamespace:
        return SimpleNamespace(doc={"info": {} if fuse is None else {"fuse": fuse}})

    assert _fused([run(None), run(False)]) == ""
    assert _fused([run(True), run(True)]) == ", fused groups (--fuse)"
    assert _fused([run(True), run(False), run(None)]) == ", fused groups in 1 of 3 runs"
