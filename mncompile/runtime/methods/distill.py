"""`--method distill` (KD): the teacher (a member) first, then every other member distilled from it.

The teacher trains with the MotherNet settings; each student then trains on
alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE, with the
teacher's logits computed once per batch of the shared stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mncompile.runtime.context import Outcome, Phase, RunContext
from mncompile.runtime.jobs import Job
from mncompile.runtime.methods.options import largest_member, member_option, options, require_ok

if TYPE_CHECKING:
    import torch
    from torch import nn

HELP = "the largest member first, every other member distilled from it"


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


@dataclass
class TeacherLogits:
    """The batch hook: the (eval-mode) teacher's logits of a batch, without gradients."""

    teacher: nn.Module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            return self.teacher(x).float()


@dataclass
class KDLoss:
    """A student's loss against the batch hook's teacher logits."""

    alpha: float
    temperature: float

    def __call__(self, out: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return distillation_loss(out, teacher, y, self.alpha, self.temperature)


def run(ctx: RunContext) -> Outcome:
    """Train the teacher with the MotherNet settings, then the others on the KD loss."""
    opts = options(ctx)
    teacher_name = member_option(ctx, opts["teacher"], "teacher") or largest_member(ctx)
    alpha, temp = float(opts["alpha"]), float(opts["temperature"])
    teacher = ctx.build(teacher_name)
    records = ctx.engine.run(ctx, Phase("teacher", [Job(teacher_name, teacher, ctx.mother_settings,
                                                        required=True)]))
    require_ok(records[0].models, "teacher", "lower --lr; nothing can be distilled from it")
    students = {m: ctx.build(m) for m in ctx.members if m != teacher_name}
    if students:
        teacher.eval()
        kd = KDLoss(alpha, temp)
        jobs = [Job(m, model, ctx.mother_settings, loss=kd,
                    extra={"teacher": teacher_name, "alpha": alpha, "temperature": temp})
                for m, model in students.items()]
        records += ctx.engine.run(ctx, Phase("students", jobs, batch_hook=TeacherLogits(teacher)))
    members = {m: teacher if m == teacher_name else students[m] for m in ctx.members}
    info = {"teacher": teacher_name, "alpha": alpha, "temperature": temp}
    return Outcome(records, members, {"distill": info})
