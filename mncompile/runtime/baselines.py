"""The paper's baselines as pipeline methods: bagging, distill, snapshot, fge, treenet.

Every method here is registered with `pipeline.register_method`, so `--method NAME` works from
every generated train.py, `mncompile run` and `mncompile bench`. They share the pipeline's data,
SGD settings (batch, momentum, weight decay from the spec's `train` block), evaluation and
results.json; docs/baselines.md gives each one's reference settings and how it is built here.

- `bagging`: every member from scratch on its own bootstrap sample (seeded per member).
- `distill`: the largest member (the teacher) first, then every other member on
  alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE.
- `snapshot`: one architecture, m cosine cycles from lr0 = 0.2 (per iteration), one snapshot each.
- `fge`: one architecture pre-trained for 80% of the budget, then triangular cycles between
  lr1 = 0.05 and lr2 = 1e-4, one model collected at each cycle's low point.
- `treenet`: plain members only: one trunk (the first shared layers) and one branch per member,
  trained jointly on the sum of the branches' losses.

Phases trained with the ordinary schedule go through `RunContext.train`; the rest (a loss other
than cross-entropy, a learning rate per iteration, a model with several outputs) go through
`fit`, a lockstep loop over the same shared batch stream with the same early stopping,
checkpoints (resumable per epoch) and progress display.

Method options (`--teacher`, `--alpha`, ...) are read from `ctx.info["method_options"]`; see
`add_method_arguments` and `method_options`. This module imports torch lazily, so the option
parser of the `mncompile` command can use `add_method_arguments` without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.runtime.pipeline import Outcome, RunContext, derive_seed, register_method

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mncompile.runtime.train import ModelResult, TrainSettings

#: every method option with its default; `None` means "chosen from the ensemble" (see the docs)
DEFAULTS: dict[str, Any] = {
    "teacher": None,
    "alpha": 0.9,
    "temperature": 4.0,
    "base": None,
    "snapshot_lr": 0.2,
    "cycle_epochs": None,
    "fge_lr1": 0.05,
    "fge_lr2": 1e-4,
    "fge_cycle": 2,
    "pretrain_fraction": 0.8,
    "shared_layers": 3,
}


# ---------------------------------------------------------------------------------- options


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (isinstance(value, int) or math.isfinite(value)) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """The baselines' options, as one argument group (defaults None: `DEFAULTS` apply)."""
    g = p.add_argument_group("baseline methods (see docs/baselines.md)")
    g.add_argument("--teacher", metavar="NAME",
                   help="distill: the member trained first and distilled from (default: the largest)")
    g.add_argument("--alpha", type=_fraction, metavar="A",
                   help="distill: weight of the distillation term (default 0.9)")
    g.add_argument("--temperature", type=_positive(float), metavar="T",
                   help="distill: softmax temperature (default 4)")
    g.add_argument("--base", metavar="NAME",
                   help="snapshot, fge: the one architecture trained (default: the member whose "
                   "parameter count is nearest the ensemble's mean)")
    g.add_argument("--snapshot-lr", type=_positive(float), metavar="LR",
                   help="snapshot: lr0 at the start of every cosine cycle (default 0.2)")
    g.add_argument("--cycle-epochs", type=_positive(int), metavar="N",
                   help="snapshot: epochs per cycle (default: max_epochs split into m cycles)")
    g.add_argument("--fge-lr1", type=_positive(float), metavar="LR",
                   help="fge: the cycles' high learning rate (default 0.05)")
    g.add_argument("--fge-lr2", type=_positive(float), metavar="LR",
                   help="fge: the cycles' low learning rate, where models are collected (default 1e-4)")
    g.add_argument("--fge-cycle", type=_positive(int), metavar="N",
                   help="fge: epochs per cycle (default 2)")
    g.add_argument("--pretrain-fraction", type=_fraction, metavar="F",
                   help="fge: share of max_epochs spent pre-training (default 0.8)")
    g.add_argument("--shared-layers", type=_positive(int), metavar="N",
                   help="treenet: conv layers in the shared trunk (default 3)")


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of `add_method_arguments` that were given, by their `DEFAULTS` key."""
    return {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}


def options(ctx: RunContext) -> dict[str, Any]:
    """`DEFAULTS` updated with `ctx.info["method_options"]` (unknown keys are an error)."""
    given = dict(ctx.info.get("method_options") or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise MNError(f"unknown method option '{unknown[0]}'", hint="known: " + ", ".join(DEFAULTS))
    return {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}


def _member(ctx: RunContext, name: str | None, option: str) -> str | None:
    if name is not None and name not in ctx.members:
        raise MNError(f"--{option} '{name}' is not a member of the ensemble",
                      hint="members: " + ", ".join(ctx.members))
    return name


def member_params(ctx: RunContext) -> dict[str, int]:
    """Each member's parameter count, as plan.json records it."""
    return {m["name"]: int(m["params"]) for m in ctx.plan["members"]}


def largest_member(ctx: RunContext) -> str:
    """The member with the most parameters (the first such in spec order)."""
    params = member_params(ctx)
    return max(ctx.members, key=lambda m: (params[m], -ctx.members.index(m)))


def mean_sized_member(ctx: RunContext) -> str:
    """The member whose parameter count is nearest the members' mean (the first such in spec order)."""
    params = member_params(ctx)
    mean = sum(params.values()) / len(params)
    return min(ctx.members, key=lambda m: (abs(params[m] - mean), ctx.members.index(m)))


def family_of(ctx: RunContext) -> dict[str, str]:
    """Each member's family (mlp, plain, residual, dense), from plan.json's clusters."""
    return {m: str(c["family"]) for c in ctx.plan["clusters"] for m in c["members"]}


# ---------------------------------------------------------------------------------- the loop


@dataclass
class Job:
    """One model trained by `fit`, with what differs from plain cross-entropy training.

    `forward(model, x)` gives the model's output (default `model(x)`); `loss(out, y, aux)` the
    loss, where `aux` is what `fit`'s `batch_hook` returned for this batch; `correct(out, y)`
    the number of right predictions (a float for several outputs); `lr(iteration)` the learning
    rate of a 0-based global iteration (default: `settings.lr_at(epoch)`); `after_step(iteration)`
    runs after that iteration's optimizer step. `extra` names settings beyond `settings` that a
    checkpoint must have been written with to be resumed.
    """

    name: str
    model: nn.Module
    settings: TrainSettings
    forward: Callable[[nn.Module, torch.Tensor], Any] | None = None
    loss: Callable[[Any, torch.Tensor, Any], torch.Tensor] | None = None
    correct: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    lr: Callable[[int], float] | None = None
    after_step: Callable[[int], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _State:
    job: Job
    optimizer: torch.optim.Optimizer
    result: ModelResult
    best: float = -1.0
    stale: int = 0
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0

    @property
    def done(self) -> bool:
        return self.result.status != "training"


def _identity(ctx: RunContext, job: Job) -> dict[str, Any]:
    return {**job.settings.to_dict(), **job.extra, "seed": ctx.seed}


def _restore(ctx: RunContext, st: _State, path: Any) -> None:
    from mncompile.runtime.checkpoint import load_checkpoint
    from mncompile.runtime.train import STATUSES, EpochRecord

    meta = load_checkpoint(path, st.job.model, st.optimizer)
    if meta.get("identity") != _identity(ctx, st.job):
        old, new = meta.get("identity") or {}, _identity(ctx, st.job)
        diff = ", ".join(f"{k} {old.get(k)} -> {new[k]}" for k in new if old.get(k) != new[k])
        raise MNError(f"checkpoint {path} was written with other settings ({diff})",
                      hint="resume with the options it was trained with, or delete it to start over")
    try:
        st.result.history = [EpochRecord(**r) for r in meta["history"]]
        st.best, st.stale = float(meta["best"]), int(meta["stale"])
        st.result.status, st.result.message = str(meta["status"]), meta["message"]
    except (KeyError, TypeError) as e:
        raise MNError(f"checkpoint {path} has damaged meta data ({e})", hint="delete it to retrain") from e
    if st.result.status not in STATUSES:
        raise MNError(f"checkpoint {path} has inconsistent meta data", hint="delete it to retrain")


def _end_epoch(st: _State, epoch: int, lr: float, seconds: float) -> None:
    """The standard loop's bookkeeping: divergence, then early stopping on training accuracy."""
    from mncompile.runtime.train import record_epoch

    loss = st.loss_sum / max(st.seen, 1)
    acc = st.correct / max(st.seen, 1)
    record_epoch(st, st.job.settings, epoch, lr, loss, acc, None, seconds)


def fit(ctx: RunContext, jobs: Sequence[Job], phase: str,
        batch_hook: Callable[[torch.Tensor], Any] | None = None) -> dict[str, ModelResult]:
    """Train `jobs` in lockstep over the run's shared batch stream; checkpointed per epoch.

    The stream of epoch e is `batches(data, batch, epoch_generator(ctx.seed, e))`, the one the
    standard loop uses. `batch_hook(x)`, when given, runs once per batch before the jobs' steps;
    its result reaches every job's `loss` (distillation computes the teacher's logits there).
    """
    import torch
    import torch.nn.functional as F

    from mncompile.runtime.checkpoint import checkpoint_path, save_checkpoint
    from mncompile.runtime.data import batches, num_batches
    from mncompile.runtime.train import ModelResult, epoch_generator

    sizes = {j.settings.batch for j in jobs}
    if len(sizes) != 1:
        raise ValueError(f"jobs trained in lockstep must share one batch size, got {sorted(sizes)}")
    batch, dev = sizes.pop(), ctx.device
    data = ctx.dataset.to(dev)
    n_batches = num_batches(data, batch)
    states: list[_State] = []
    for job in jobs:
        job.model.to(dev)
        s = job.settings
        opt = torch.optim.SGD(job.model.parameters(), lr=s.lr, momentum=s.momentum,
                              weight_decay=s.weight_decay)
        st = _State(job, opt, ModelResult(job.name))
        path = checkpoint_path(ctx.ckpt_dir(phase), job.name)
        if ctx.resume and path.is_file():
            _restore(ctx, st, path)
        states.append(st)
    todo = [st for st in states if not st.done]
    if not todo:
        return {st.job.name: st.result for st in states}
    first = min(st.result.epochs for st in todo)
    last = max(st.job.settings.max_epochs for st in todo)
    cuda = dev.type == "cuda"
    ctx.progress.begin(phase, [j.name for j in jobs], last, n_batches, done_epochs=first)
    try:
        for epoch in range(first, last):
            active = [st for st in states if not st.done and st.result.epochs == epoch]
            if not active:
                if all(st.done for st in states):
                    break
                ctx.progress.advance(n_batches)
                continue
            start = time.perf_counter()
            first_lr: dict[str, float] = {}
            sums = {id(st): (torch.zeros((), device=dev, dtype=torch.float64),
                             torch.zeros((), device=dev, dtype=torch.float64)) for st in active}
            for st in active:
                st.job.model.train()
                st.seen = 0
            for step, (x, y) in enumerate(batches(data, batch, epoch_generator(ctx.seed, epoch))):
                it = epoch * n_batches + step
                aux = batch_hook(x) if batch_hook is not None else None
                for st in active:
                    j = st.job
                    lr = j.lr(it) if j.lr is not None else j.settings.lr_at(epoch)
                    first_lr.setdefault(j.name, lr)
                    for group in st.optimizer.param_groups:
                        group["lr"] = lr
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                        out = j.forward(j.model, x) if j.forward is not None else j.model(x)
                    loss = j.loss(out, y, aux) if j.loss is not None else F.cross_entropy(out.float(), y)
                    st.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    st.optimizer.step()
                    with torch.no_grad():
                        loss_sum, right = sums[id(st)]
                        loss_sum += loss.detach().double() * len(y)
                        right += (j.correct(out, y) if j.correct is not None
                                  else (out.argmax(1) == y).sum()).double()
                    st.seen += len(y)
                    if j.after_step is not None:
                        j.after_step(it)
                ctx.progress.advance()
            if cuda:
                torch.cuda.synchronize(dev)
            seconds = time.perf_counter() - start
            for st in active:
                st.loss_sum, st.correct = (float(v) for v in sums[id(st)])
                _end_epoch(st, epoch, first_lr.get(st.job.name, 0.0), seconds)
                rec = st.result.history[-1]
                ctx.progress.epoch(st.job.name, rec.epoch, st.job.settings.max_epochs, lr=rec.lr,
                                   loss=rec.train_loss, acc=rec.train_acc, test_acc=None, seconds=seconds)
                if st.done:
                    ctx.progress.note(f"{st.job.name}: {st.result.status}: {st.result.message}")
                meta = {"identity": _identity(ctx, st.job), "epoch": st.result.epochs,
                        "history": [r.to_dict() for r in st.result.history], "best": st.best,
                        "stale": st.stale, "status": st.result.status, "message": st.result.message}
                save_checkpoint(checkpoint_path(ctx.ckpt_dir(phase), st.job.name), st.job.model,
                                st.optimizer, meta)
    finally:
        ctx.progress.end()
    return {st.job.name: st.result for st in states}


def _phase(name: str, ctx: RunContext, results: Mapping[str, ModelResult]) -> Any:
    from mncompile.runtime.results import PhaseRecord

    return PhaseRecord(name, ctx.phase_seconds(results), dict(results))


def _lockstep_phase(name: str, results: Mapping[str, ModelResult]) -> Any:
    from mncompile.runtime.results import PhaseRecord
    from mncompile.runtime.train import group_seconds

    return PhaseRecord(name, group_seconds(results), dict(results))


def _require_ok(results: Mapping[str, ModelResult], what: str, hint: str) -> None:
    for name, r in results.items():
        if not r.ok:
            raise MNError(f"{what} '{name}' diverged: {r.message}", hint=hint)


# ---------------------------------------------------------------------------------- bagging


def bootstrap_indices(seed: int, member: str, n: int) -> Any:
    """The bootstrap sample of `member`: n indices drawn with replacement, seeded by (seed, member)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(derive_seed(seed, "bootstrap", member))
    return torch.as_tensor(rng.integers(0, n, size=n), dtype=torch.int64)


@register_method("bagging", help="every member from scratch on its own bootstrap sample")
def train_bagging(ctx: RunContext) -> Outcome:
    """BA: each member trained from scratch (MotherNet settings) on a bootstrap sample, one at a time."""
    from mncompile.runtime.results import PhaseRecord
    from mncompile.runtime.train import train_lockstep

    n = len(ctx.dataset.y_train)
    models, results, unique = {}, {}, {}
    for m in ctx.members:
        idx = bootstrap_indices(ctx.seed, m, n)
        unique[m] = len(set(idx.tolist())) / n
        sample = dataclasses.replace(ctx.dataset, x_train=ctx.dataset.x_train[idx],
                                     y_train=ctx.dataset.y_train[idx])
        models[m] = ctx.build(m)
        # every member sees other data, so no batch stream can be shared: one member at a time
        results.update(train_lockstep({m: models[m]}, sample, ctx.mother_settings, seed=ctx.seed,
                                      device=ctx.device, checkpoint_dir=ctx.ckpt_dir("members"),
                                      resume=ctx.resume, progress=ctx.progress, phase=f"members {m}"))
    seconds = sum(r.seconds for r in results.values())
    return Outcome([PhaseRecord("members", seconds, results)], models,
                   {"bagging": {"unique_fraction": unique}})


# ---------------------------------------------------------------------------------- distillation


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      alpha: float, temperature: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels).

    The KL term is summed over classes and averaged over the batch (reduction 'batchmean').

    >>> import torch
    >>> s, t = torch.zeros(1, 2), torch.zeros(1, 2)
    >>> round(float(distillation_loss(s, t, torch.tensor([0]), 0.9, 4.0)), 6)  # KL 0, CE log 2
    0.069315
    """
    import torch.nn.functional as F

    student, teacher = student.float(), teacher.float()
    kl = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(student, labels)


@register_method("distill", help="the largest member first, every other member distilled from it")
def train_distill(ctx: RunContext) -> Outcome:
    """KD: train the teacher (a member) with the MotherNet settings, then the others on the KD loss."""
    import torch

    opts = options(ctx)
    teacher_name = _member(ctx, opts["teacher"], "teacher") or largest_member(ctx)
    alpha, temp = float(opts["alpha"]), float(opts["temperature"])
    teacher = ctx.build(teacher_name)
    t_results = ctx.train({teacher_name: teacher}, ctx.mother_settings, "teacher")
    _require_ok(t_results, "teacher", "lower --lr; nothing can be distilled from it")
    phases = [_phase("teacher", ctx, t_results)]
    students = {m: ctx.build(m) for m in ctx.members if m != teacher_name}
    if students:
        teacher.eval()

        def teacher_logits(x: torch.Tensor) -> torch.Tensor:
            cuda = ctx.device.type == "cuda"
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                return teacher(x).float()

        def kd(out: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return distillation_loss(out, t, y, alpha, temp)

        jobs = [Job(m, model, ctx.mother_settings, loss=kd, extra={"teacher": teacher_name, "alpha": alpha,
                                                                   "temperature": temp})
                for m, model in students.items()]
        results = fit(ctx, jobs, "students", batch_hook=teacher_logits)
        phases.append(_lockstep_phase("students", results))
    members = {m: teacher if m == teacher_name else students[m] for m in ctx.members}
    info = {"teacher": teacher_name, "alpha": alpha, "temperature": temp}
    return Outcome(phases, members, {"distill": info})


# ---------------------------------------------------------------------------------- snapshot, FGE


def snapshot_lr(iteration: int, cycle_iterations: int, lr0: float) -> float:
    """lr0 / 2 * (1 + cos(pi * t / T_cycle)), t = the 0-based iteration within its cycle.

    >>> snapshot_lr(0, 10, 0.2), round(snapshot_lr(5, 10, 0.2), 6), snapshot_lr(10, 10, 0.2)
    (0.2, 0.1, 0.2)
    """
    t = iteration % cycle_iterations
    return lr0 / 2 * (1 + math.cos(math.pi * t / cycle_iterations))


def fge_lr(iteration: int, cycle_iterations: int, lr1: float, lr2: float) -> float:
    """The FGE triangle: with t = ((iteration mod c) + 1) / c, lr1 -> lr2 over the first half, back after.

    (1 - 2t) lr1 + 2t lr2 for t <= 1/2, else (2 - 2t) lr2 + (2t - 1) lr1 (Garipov et al., 2018).

    >>> fge_lr(4, 10, 0.05, 1e-4), fge_lr(9, 10, 0.05, 1e-4)
    (0.0001, 0.05)
    """
    t = (iteration % cycle_iterations + 1) / cycle_iterations
    if t <= 0.5:
        return (1 - 2 * t) * lr1 + 2 * t * lr2
    return (2 - 2 * t) * lr2 + (2 * t - 1) * lr1


def fge_collects(iteration: int, cycle_iterations: int) -> bool:
    """Whether FGE collects a model after `iteration`: at the cycle's midpoint, where lr = lr2."""
    return iteration % cycle_iterations + 1 == max(1, cycle_iterations // 2)


def _base(ctx: RunContext, opts: Mapping[str, Any]) -> str:
    return _member(ctx, opts["base"], "base") or mean_sized_member(ctx)


class _Collector:
    """Saves the model's weights as snapshot k when told; snapshots live beside the checkpoints."""

    def __init__(self, ctx: RunContext, phase: str, base: str, model: nn.Module) -> None:
        self.ctx, self.dir, self.base, self.model = ctx, ctx.ckpt_dir(phase) / "snapshots", base, model
        self.count = 0

    def name(self, k: int) -> str:
        return f"{self.base}@{k}"

    def save(self, k: int) -> None:
        from mncompile.runtime.checkpoint import checkpoint_path, save_checkpoint

        save_checkpoint(checkpoint_path(self.dir, self.name(k)), self.model, None, {"snapshot": k})

    def load(self, count: int, why: str) -> dict[str, nn.Module]:
        from mncompile.runtime.checkpoint import checkpoint_path, load_checkpoint

        out = {}
        for k in range(1, count + 1):
            path = checkpoint_path(self.dir, self.name(k))
            if not path.is_file():
                raise MNError(f"snapshot {k} of '{self.base}' was never taken: {why}",
                              hint="lower the learning rate of the method's cycles")
            model = self.ctx.build(self.base)
            load_checkpoint(path, model)
            out[self.name(k)] = model.to(self.ctx.device)
        return out


def _cycles_settings(ctx: RunContext, lr: float, epochs: int) -> TrainSettings:
    # a fixed budget: the cycles run in full, no early stopping
    return dataclasses.replace(ctx.mother_settings, lr=lr, max_epochs=epochs, patience=0)


def _batches_per_epoch(ctx: RunContext) -> int:
    from mncompile.runtime.data import num_batches

    return num_batches(ctx.dataset, ctx.mother_settings.batch)


@register_method("snapshot", help="one architecture, m cosine cycles from lr 0.2, a snapshot per cycle")
def train_snapshot(ctx: RunContext) -> Outcome:
    """SE: m cosine cycles (per iteration) of one architecture; max_epochs split into the m cycles."""
    opts = options(ctx)
    base, m = _base(ctx, opts), len(ctx.members)
    budget = ctx.mother_settings.max_epochs
    cycle_epochs = int(opts["cycle_epochs"] or max(1, budget // m))
    lr0 = float(opts["snapshot_lr"])
    cycle_its = cycle_epochs * _batches_per_epoch(ctx)
    model = ctx.build(base)
    collector = _Collector(ctx, "cycles", base, model)

    def after(it: int) -> None:
        if (it + 1) % cycle_its == 0:
            collector.save((it + 1) // cycle_its)

    job = Job(base, model, _cycles_settings(ctx, lr0, m * cycle_epochs),
              lr=lambda it: snapshot_lr(it, cycle_its, lr0), after_step=after,
              extra={"method": "snapshot", "cycles": m, "cycle_epochs": cycle_epochs})
    results = fit(ctx, [job], "cycles")
    members = collector.load(m, results[base].message or "training stopped early")
    info = {"base": base, "cycles": m, "cycle_epochs": cycle_epochs, "lr0": lr0,
            "schedule": "cosine per iteration, restarted every cycle"}
    return Outcome([_lockstep_phase("cycles", results)], members, {"snapshot": info})


@register_method("fge", help="one architecture pre-trained, then triangular cycles; a model per low point")
def train_fge(ctx: RunContext) -> Outcome:
    """FGE: pre-train for 80% of max_epochs (the normal schedule), then m triangular cycles."""
    opts = options(ctx)
    base, m = _base(ctx, opts), len(ctx.members)
    budget = ctx.mother_settings.max_epochs
    pre_epochs = max(1, round(float(opts["pretrain_fraction"]) * budget))
    cycle_epochs = int(opts["fge_cycle"])
    lr1, lr2 = float(opts["fge_lr1"]), float(opts["fge_lr2"])
    model = ctx.build(base)
    pre_settings = dataclasses.replace(ctx.mother_settings, max_epochs=pre_epochs)
    pre = ctx.train({base: model}, pre_settings, "pretrain")
    _require_ok(pre, "pre-trained net", "lower --lr")
    cycle_its = cycle_epochs * _batches_per_epoch(ctx)
    name = f"{base}@cycles"
    collector = _Collector(ctx, "cycles", base, model)

    def after(it: int) -> None:
        if fge_collects(it, cycle_its):
            collector.save(it // cycle_its + 1)

    job = Job(name, model, _cycles_settings(ctx, lr1, m * cycle_epochs),
              lr=lambda it: fge_lr(it, cycle_its, lr1, lr2), after_step=after,
              extra={"method": "fge", "cycles": m, "lr2": lr2, "pretrain_epochs": pre_epochs})
    results = fit(ctx, [job], "cycles")
    members = collector.load(m, results[name].message or "training stopped early")
    info = {"base": base, "pretrain_epochs": pre_epochs, "pretrain_stopped_after": pre[base].epochs,
            "cycles": m, "cycle_epochs": cycle_epochs, "lr1": lr1, "lr2": lr2}
    return Outcome([_phase("pretrain", ctx, pre), _lockstep_phase("cycles", results)], members, {"fge": info})


# ---------------------------------------------------------------------------------- TreeNet


def _blocks(model: nn.Module) -> list[Any]:
    out, b = [], 1
    while hasattr(model, f"block{b}"):
        out.append(getattr(model, f"block{b}"))
        b += 1
    return out


def _layers(block: Any) -> list[Any]:
    out, i = [], 1
    while hasattr(block, f"layer{i}"):
        out.append(getattr(block, f"layer{i}"))
        i += 1
    return out


def _shape(layer: Any) -> tuple[int, int]:
    """(kernel, filters) of a generated conv layer (`.conv` then `.bn`)."""
    w = layer.conv.weight
    return int(w.shape[2]), int(w.shape[0])


def _rebuilt(module: nn.Module, in_width: int, kernel: int | None, seed: int) -> nn.Module:
    """A fresh copy of a conv or linear `module` reading `in_width` channels (and `kernel` wide)."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(module, nn.Linear):
            return nn.Linear(in_width, module.out_features, bias=module.bias is not None)
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        k = kernel if kernel is not None else int(module.kernel_size[0])
        # generated convs are 'same' padded: kernel // 2
        return type(module)(in_width, module.out_channels, k, int(module.stride[0]), k // 2,
                            bias=module.bias is not None)


def _retarget_first(branch: nn.Module, in_width: int, seed: int) -> bool:
    """Rebuild the branch's first conv or linear layer to read `in_width` channels; True if it had to."""
    from torch import nn

    for name, module in branch.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            width = module.in_features if isinstance(module, nn.Linear) else module.in_channels
            if width == in_width:
                return False
            parent_name, _, attr = name.rpartition(".")
            parent = branch.get_submodule(parent_name) if parent_name else branch
            setattr(parent, attr, _rebuilt(module, in_width, None, seed))
            return True
    raise AssertionError("a generated net has a conv or linear layer")


@dataclass
class TreeNet:
    """The shared trunk, one branch per member, and what the construction changed."""

    trunk: nn.Sequential
    branches: dict[str, nn.Sequential]
    #: the trunk's layers as (block, layer) positions, 1-based, and which member each came from
    positions: list[tuple[int, int]]
    donors: list[str]
    #: per member, its layers that neither the trunk nor its branch keeps
    dropped: dict[str, list[str]]
    #: members whose first branch layer was rebuilt to read the trunk's width
    retargeted: list[str]

    def module(self) -> nn.Module:
        """One module holding the trunk once and every branch: what is trained."""
        from torch import nn

        branches = nn.ModuleDict({f"b{i}": b for i, b in enumerate(self.branches.values())})
        return nn.ModuleDict({"trunk": self.trunk, "branches": branches})

    def members(self) -> dict[str, nn.Module]:
        """Each member as trunk -> its branch (input -> logits); they share the trunk's weights."""
        from torch import nn

        return {m: nn.Sequential(self.trunk, b) for m, b in self.branches.items()}


def build_treenet(ctx: RunContext, shared_layers: int) -> TreeNet:
    """A TreeNet by module surgery on freshly built members (see docs/baselines.md).

    The trunk follows the position-wise narrowest net: as many blocks as the member with fewest,
    per block as many layers as the member with fewest there, and at each position the layer of
    the member with the fewest filters there (then the smallest kernel), rebuilt to read the
    previous trunk layer's width or to take the smallest kernel there. The trunk is its first
    `shared_layers` layers in (block, layer) order, with the max-pool of every block it finishes.
    Each member's branch is the rest of its own net from the same position on, its first conv
    (or linear) rebuilt when it must read another width.
    """
    from torch import nn

    families = family_of(ctx)
    wrong = [m for m in ctx.members if families.get(m) != "plain"]
    if wrong:
        raise MNError(f"treenet needs plain conv members, but '{wrong[0]}' is {families.get(wrong[0])}",
                      hint="TreeNets are not defined for skip connections (residual, dense) or mlp nets; "
                      "use another --method")
    nets = {m: ctx.build(m, salt="treenet") for m in ctx.members}
    shapes = {m: [[_shape(layer) for layer in _layers(b)] for b in _blocks(net)] for m, net in nets.items()}
    n_blocks = min(len(s) for s in shapes.values())
    per_block = [min(len(s[b]) for s in shapes.values()) for b in range(n_blocks)]
    positions = [(b, i) for b in range(n_blocks) for i in range(per_block[b])]
    if shared_layers > len(positions):
        raise MNError(f"--shared-layers {shared_layers} is more than the {len(positions)} conv layers every "
                      "member has at the same positions", hint=f"use at most {len(positions)}")
    positions = positions[:shared_layers]
    last_b, last_i = positions[-1]

    trunk = nn.Sequential()
    donors: list[str] = []
    width = int(ctx.plan["input"][0])
    for b, i in positions:
        kernel = min(shapes[m][b][i][0] for m in nets)
        donor = min(ctx.members, key=lambda m: (shapes[m][b][i][1], shapes[m][b][i][0], ctx.members.index(m)))
        layer = _layers(_blocks(nets[donor])[b])[i]
        if layer.conv.in_channels != width or _shape(layer)[0] != kernel:
            layer.conv = _rebuilt(layer.conv, width, kernel, derive_seed(ctx.seed, "treenet", f"{b}.{i}"))
        trunk.add_module(f"block{b + 1}_layer{i + 1}", layer)
        donors.append(donor)
        width = _shape(layer)[1]
        if b < last_b and i == per_block[b] - 1:
            trunk.add_module(f"block{b + 1}_pool", _blocks(nets[donor])[b].pool)

    branches: dict[str, nn.Sequential] = {}
    dropped: dict[str, list[str]] = {}
    retargeted: list[str] = []
    for m, net in nets.items():
        blocks = _blocks(net)
        lost = [f"block{b + 1}.layer{i + 1}"
                for b in range(last_b) for i in range(per_block[b], len(shapes[m][b]))]
        if lost:
            dropped[m] = lost
        branch = nn.Sequential()
        for i, layer in enumerate(_layers(blocks[last_b])[last_i + 1:], start=last_i + 2):
            branch.add_module(f"block{last_b + 1}_layer{i}", layer)
        branch.add_module(f"block{last_b + 1}_pool", blocks[last_b].pool)
        for b in range(last_b + 1, len(blocks)):
            branch.add_module(f"block{b + 1}", blocks[b])
        branch.add_module("head", net.get_submodule("head"))
        if _retarget_first(branch, width, derive_seed(ctx.seed, "treenet", m)):
            retargeted.append(m)
        branches[m] = branch
    return TreeNet(trunk, branches, [(b + 1, i + 1) for b, i in positions], donors, dropped, retargeted)


@register_method("treenet", help="plain nets only: a shared trunk of the first layers, one branch per member")
def train_treenet(ctx: RunContext) -> Outcome:
    """TN: trunk and branches trained jointly on the sum of the branches' cross-entropies."""
    import torch
    import torch.nn.functional as F

    opts = options(ctx)
    tree = build_treenet(ctx, int(opts["shared_layers"]))
    for m, lost in tree.dropped.items():
        ctx.progress.note(f"treenet: {m} loses {', '.join(lost)} (the trunk has fewer layers there)")
    model = tree.module()
    branches = list(tree.branches.values())

    def forward(_: nn.Module, x: torch.Tensor) -> torch.Tensor:
        h = tree.trunk(x)
        return torch.stack([b(h) for b in branches])

    def loss(out: torch.Tensor, y: torch.Tensor, _: Any) -> torch.Tensor:
        return sum((F.cross_entropy(o.float(), y) for o in out), torch.zeros((), device=y.device))

    def correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # early stopping watches the branches' mean training accuracy
        return (out.argmax(2) == y).double().sum() / len(branches)

    job = Job("treenet", model, ctx.mother_settings, forward=forward, loss=loss, correct=correct,
              extra={"method": "treenet", "shared_layers": len(tree.positions)})
    results = fit(ctx, [job], "treenet")
    params = sum(p.numel() for p in model.parameters())
    info = {"shared_layers": len(tree.positions), "trunk_positions": [list(p) for p in tree.positions],
            "trunk_donors": tree.donors, "dropped_layers": tree.dropped, "retargeted": tree.retargeted,
            "params": params, "trunk_params": sum(p.numel() for p in tree.trunk.parameters())}
    return Outcome([_lockstep_phase("treenet", results)], tree.members(), {"treenet": info})
