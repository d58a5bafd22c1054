"""`--engine ray`: train an ensemble's networks on a Ray cluster, placed by the paper's Appendix D.

The local engine trains each phase's networks in lockstep in one process. This engine keeps the
same phases, checkpoints and results, but hands every network to a Ray cluster of one or many
machines as soon as it is ready:

- At the start, every MotherNet (and every member that is a cluster of its own) is ready. With
  `--method full-data`, every member is.
- When a MotherNet finishes, the driver (this process) hatches its members exactly as the local
  engine does (same tables, same check, same noise seeds) and queues them.
- Whenever networks are queued and devices are free, `placement.place(queue, free,
  gpus_per_model)` decides who starts on how many devices: one each when more networks are
  ready than devices are free, otherwise the free devices split among them (Appendix D).
  A network on one device runs as a Ray task (`train.train_model`, the local training loop); a
  network on d > 1 devices runs as a Ray Train `TorchTrainer` with d workers, data-parallel
  (DistributedDataParallel; NCCL on GPUs, gloo on CPUs).

"Devices" are GPUs when the cluster has GPUs (and `--device` is not `cpu`), otherwise CPU
worker slots: `CPU // CPUS_PER_WORKER` of the cluster, one CPU per worker, read once when the
run starts. Every worker asks for `CPUS_PER_WORKER` CPUs besides its GPU, so a GPU cluster has
`min(GPU, CPU // CPUS_PER_WORKER)` slots. The ids the policy hands out are slot numbers
0..slots-1, the driver's bookkeeping only: they name no machine and no GPU, and Ray picks the
physical GPU or CPU for each task and trainer worker.

Ready networks are queued in batches: those that become ready together (the first phase's
networks; one MotherNet's hatched members; every member with `--method full-data`) join the
queue after the ones already waiting, largest first (forward MACs from plan.json, ties in plan
order), so that the remainder of an uneven split goes to the largest, as `bench/schedule_sim.py`
assumes.

Data-parallel networks need Ray Train v2 (the default since Ray 2.51): Ray Train v1's trainer
reserves one CPU for itself besides its workers, so a network given every slot of a CPU cluster
would wait for ever. `check` refuses v1 (in the driver or on the workers) before anything
trains, unless no network can be data-parallel (one slot, or `--gpus-per-model 1`).

Every network writes its checkpoint after each epoch to `OUT/ckpt/<method>/<phase>/<name>.pt`,
the same file, format and meta data as the local engine, so `--resume` works across engines and
a failed task restarts from its last epoch: a Ray task is retried (`max_retries`), a trainer
restarts its workers (`FailureConfig(max_failures)`) and the task that runs it is retried when
its process or machine is lost, and all continue from that file. A trainer whose workers cannot
be placed gives up after `MAX_RETRIES` further startup timeouts (`controller_failure_limit`;
Ray Train waits 60 s each, RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S). A member that still fails,
or whose checkpoint the driver cannot read, is reported (stderr, `info.failed_members`, status
`training` in results.json) and the ensemble is evaluated without it; a MotherNet that fails is
fatal, as a diverged one is in the local engine. The workers and the driver must see `--out` at the same
path: one machine, or a shared filesystem (NFS, say) on every machine of a cluster.

The driver keeps its copies of the networks on the CPU while the cluster trains (a GPU of the
driver's machine may be one Ray hands to a task): it hatches on the CPU, and moves the members
to `--device` only to evaluate them, once training is over. Hatching copies and scales weights
element by element (and draws its noise on the CPU), so the hatched weights are the same; with
`--noise` the noise's scale (each tensor's standard deviation) is computed on the CPU, which may
differ from a GPU's in the last bit.

Data-parallel training splits each mini-batch of the shared stream (the same permutation and
augmentation as the local engine, drawn on every worker) into d contiguous slices, one per
worker, and scales each worker's summed loss by d / batch, so the averaged gradient is exactly
the full batch's mean gradient. Differences to one process: BatchNorm normalises each slice with
its own statistics (SyncBatchNorm on GPUs), running statistics are averaged over the workers
after each epoch, and a final batch with fewer examples than workers is skipped.

Ray is imported only here, and only when `--engine ray` is asked for.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.runtime.context import Phase, RunContext, Then
from mncompile.runtime.jobs import EpochRecord, Job, ModelResult
from mncompile.runtime.train import Shard

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mncompile.runtime.results import PhaseRecord

INSTALL_HINT = 'pip install "mncompile[ray]"'
#: CPUs per worker (task or trainer worker); on a cluster without GPUs, one worker slot each
CPUS_PER_WORKER = 1
#: how often a failed Ray task is retried, and a failed trainer restarted, before giving up
MAX_RETRIES = 2
#: the first Ray release whose Ray Train is v2 by default (RAY_TRAIN_V2_ENABLED defaults to 1)
TRAIN_V2_DEFAULT_SINCE = (2, 51)
#: how long the check of the workers' Ray Train may wait for a worker, seconds
PROBE_TIMEOUT_S = 120


# ------------------------------------------------------------------------------ ray itself


def import_ray() -> types.ModuleType:
    """The `ray` module with Ray Train for PyTorch, or an MNError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise MNError(f"Ray is not installed: {INSTALL_HINT}",
                      hint="or train with --engine local (the default)") from None
    try:
        import ray.train.torch  # noqa: F401
    except ImportError as err:
        raise MNError(f"Ray Train for PyTorch is not installed ({err}): {INSTALL_HINT}",
                      hint="the extra installs ray[train]") from None
    return ray


def connect(address: str | None, *, quiet: bool = False) -> types.ModuleType:
    """Ray, initialised: an existing connection is kept; else `address` (or RAY_ADDRESS), else a new
    Ray instance on this machine."""
    import logging
    import os

    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address is None:
            # a private instance on this machine, with every CPU (and GPU) it has
            ray.init(address="local", include_dashboard=False, log_to_driver=not quiet,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=address, log_to_driver=not quiet, logging_level=logging.WARNING)
    except (ray.exceptions.RayError, OSError, TimeoutError, RuntimeError, ValueError) as err:
        # RayError: AuthenticationError (RAY_AUTH_MODE=token without the cluster's token), ...
        # OSError: ConnectionError and other socket errors
        where = f"the Ray cluster at '{address}'" if address else "a Ray instance on this machine"
        raise MNError(f"cannot connect to {where}: {err}",
                      hint="start it with `ray start --head` (see docs/ray.md), or leave out --address "
                      "to start Ray on this machine; a cluster with token authentication needs "
                      "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token") from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """What the run trains on: `slots` devices (GPUs, or CPU worker slots) of one kind."""

    slots: int
    use_gpu: bool

    @property
    def kind(self) -> str:
        return "GPU" if self.use_gpu else "CPU worker slot"


def cluster_devices(resources: Mapping[str, float], device: str = "auto") -> Cluster:
    """The devices of a cluster with `resources` (`ray.cluster_resources()`) for `--device`.

    Every worker asks for `CPUS_PER_WORKER` CPUs besides its GPU: a GPU slot needs both.

    >>> cluster_devices({"CPU": 16.0, "GPU": 4.0}), cluster_devices({"CPU": 2.0, "GPU": 4.0})
    (Cluster(slots=4, use_gpu=True), Cluster(slots=2, use_gpu=True))
    >>> cluster_devices({"CPU": 16.0, "GPU": 4.0}, "cpu"), cluster_devices({"CPU": 2.0})
    (Cluster(slots=16, use_gpu=False), Cluster(slots=2, use_gpu=False))
    """
    gpus = int(resources.get("GPU", 0))
    cpu_slots = int(resources.get("CPU", 0)) // CPUS_PER_WORKER
    if device == "cuda" and gpus < 1:
        raise MNError("--device cuda was asked for, but the Ray cluster has no GPU",
                      hint="use --device cpu, or add GPU machines to the cluster")
    if gpus >= 1 and device != "cpu":
        if cpu_slots < 1:
            raise MNError(f"the Ray cluster has {gpus} GPUs but no CPU for the workers that use them "
                          f"(each asks for {CPUS_PER_WORKER})", hint="check `ray status`")
        return Cluster(min(gpus, cpu_slots), True)
    if cpu_slots < 1:
        raise MNError("the Ray cluster has no CPU to train on", hint="check `ray status`")
    return Cluster(cpu_slots, False)


def may_train_data_parallel(slots: int, gpus_per_model: int | None) -> bool:
    """Whether a run on `slots` devices can start a Ray Train trainer (a network on > 1 device).

    >>> may_train_data_parallel(2, None), may_train_data_parallel(1, None), may_train_data_parallel(8, 1)
    (True, False, False)
    """
    return slots > 1 and (gpus_per_model is None or gpus_per_model > 1)


def train_version() -> tuple[bool, str, str | None]:
    """In this process: whether Ray Train is v2, Ray's version, and RAY_TRAIN_V2_ENABLED."""
    import os

    import ray

    flag = os.environ.get("RAY_TRAIN_V2_ENABLED")
    try:
        from ray.train.v2._internal.constants import is_v2_enabled
    except ImportError:
        # before Ray 2.43 there is only v1; a Ray without the flag after 2.51 has only v2
        return _version(ray.__version__) >= TRAIN_V2_DEFAULT_SINCE, ray.__version__, flag
    return bool(is_v2_enabled()), ray.__version__, flag


def _version(text: str) -> tuple[int, ...]:
    """A version's first three numbers.

    >>> _version("2.51.0"), _version("2.9.3rc1"), _version("3.0.0.dev0")
    ((2, 51, 0), (2, 9, 3), (3, 0, 0))
    """
    import re

    return tuple(int(re.match(r"\d*", part).group() or 0)  # type: ignore[union-attr]
                 for part in text.split(".")[:3])


def _train_v1_error(where: str, version: str, flag: str | None) -> MNError:
    since = ".".join(map(str, TRAIN_V2_DEFAULT_SINCE))
    return MNError(f"Ray Train v1 is active {where} (Ray {version}, RAY_TRAIN_V2_ENABLED="
                   f"{flag if flag is not None else 'unset'}): its trainer asks for one CPU more than "
                   "its workers, so a data-parallel network could wait for ever",
                   hint=f'use Ray >= {since} (pip install -U "mncompile[ray]"), whose default is Ray '
                   "Train v2, and unset RAY_TRAIN_V2_ENABLED (or set it to 1) for the driver and for "
                   "every `ray start`; or train every network on one device: --gpus-per-model 1")


def require_train_v2(ray: Any) -> None:
    """Refuse Ray Train v1, in this process or on the cluster's workers (which run the trainers)."""
    v2, version, flag = train_version()
    if not v2:
        raise _train_v1_error("in this process", version, flag)
    probe = ray.remote(num_cpus=0, max_retries=0)(train_version).remote()
    try:
        v2, version, flag = ray.get(probe, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(probe, force=True)
        raise MNError(f"the Ray cluster ran no task within {PROBE_TIMEOUT_S} s",
                      hint="check `ray status`; every machine needs mncompile installed") from None
    except ray.exceptions.RayError as err:
        raise MNError(f"a Ray worker cannot run mncompile: {_describe(err)}",
                      hint='every machine of the cluster needs pip install "mncompile[ray]"') from None
    if not v2:
        raise _train_v1_error("on the Ray workers", version, flag)


# ------------------------------------------------------------------------------ on the workers


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _user_error(err: MNError) -> dict[str, Any]:
    return {"error": err.message + (f" ({err.hint})" if err.hint else ""),
            "retried": " (a user error: not retried)"}


def train_task(task: Mapping[str, Any], job: Job, data: Any, batch_hook: Any) -> dict[str, Any]:
    """A Ray task: train one job on one device with the one epoch loop, checkpointed every epoch.

    The job (its model with the driver's initial weights, its hooks) arrives pickled. It always
    resumes from its checkpoint when one exists: a fresh run starts with an empty checkpoint
    folder, so a checkpoint found here is this run's (a retry, or `--resume`). A user error
    (MNError) is returned, not raised, so that Ray does not retry it.
    """
    from mncompile.runtime.progress import Progress
    from mncompile.runtime.train import fit

    try:
        result = fit([job], data, seed=task["seed"], device="cuda" if task["use_gpu"] else "cpu",
                     checkpoint_dir=task["ckpt_dir"], resume=True,
                     progress=Progress(quiet=task["quiet"], bars=False), phase=task["phase"],
                     batch_hook=batch_hook)[job.name]
    except MNError as err:
        return _user_error(err)
    return {"result": result, "state": _cpu_state(job.model)}


class RayShard(Shard):
    """One worker of a data-parallel trainer: its contiguous slice of every batch (see the module notes)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def split(self, x: torch.Tensor, y: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, float | None] | None:
        import torch

        if len(y) < self.world:  # every worker needs an example of the batch
            return None
        xs, ys = torch.tensor_split(x, self.world)[self.rank], torch.tensor_split(y, self.world)[self.rank]
        # DDP averages the workers' gradients: scaled so, the gradient is the whole batch's mean
        return xs, ys, self.world * len(ys) / len(y)

    def reduce(self, totals: torch.Tensor, seconds: float) -> tuple[torch.Tensor, float]:
        import torch
        import torch.distributed as dist

        totals = totals.clone()
        dist.all_reduce(totals)
        longest = torch.tensor([seconds], dtype=torch.float64, device=totals.device)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        return totals, float(longest)

    def end_epoch(self, model: nn.Module) -> None:
        import torch.distributed as dist

        for b in model.buffers():  # BatchNorm running statistics: the workers' average
            if b.is_floating_point():
                dist.all_reduce(b)
                b /= self.world

    def agree(self, val: tuple[float, float, float], device: torch.device) -> tuple[float, float, float]:
        import torch
        import torch.distributed as dist

        t = torch.tensor(val[:2], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return float(t[0]), float(t[1]), val[2]

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def saved(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def data_parallel_loop(config: Mapping[str, Any]) -> None:
    """Ray Train's `train_loop_per_worker`: one job, data-parallel over the trainer's workers.

    The one epoch loop (`train.fit`) with this worker's `RayShard` and the model wrapped in
    DistributedDataParallel. Rank 0 writes the checkpoint; after a restart every worker goes on
    from it.
    """
    import dataclasses
    import inspect

    import ray
    import ray.train
    import ray.train.torch
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from mncompile.runtime.progress import Progress
    from mncompile.runtime.train import fit

    task, job = config["task"], config["job"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    model = job.model.to(device)
    data = ray.get(config["data"]).to(device)
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # buffers (BatchNorm statistics) stay per worker while training and are averaged per epoch
    no_sync: dict[str, Any] = ({"forward_sync_buffers": False}
               if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else {"broadcast_buffers": False})
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  **no_sync)
    fit([dataclasses.replace(job, model=model, forward=lambda _, x: ddp(x))], data, seed=task["seed"],
        device=device, checkpoint_dir=task["ckpt_dir"], resume=True,
        progress=Progress(quiet=task["quiet"] or rank != 0, bars=False), phase=task["phase"],
        shard=RayShard(rank, world))


def fit_task(task: Mapping[str, Any], job_ref: list[Any], data_ref: list[Any], workers: int, use_gpu: bool,
             storage: str) -> dict[str, Any]:
    """A Ray task (no resources of its own) that runs one job's `TorchTrainer` to the end.

    `job_ref` and `data_ref` each hold one object reference, which the workers fetch. Ray Train
    v1 (this worker's environment may differ from the driver's) is a user error, returned.
    """
    import ray

    v2, version, flag = train_version()
    if not v2:
        return _user_error(_train_v1_error("on a Ray worker", version, flag))
    from ray.train.v2.api.config import FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.torch.torch_trainer import TorchTrainer  # ray.train.torch's, with Train v2

    try:
        from ray.train.v2.api.config import LoggingConfig  # type: ignore[attr-defined]

        logging: dict[str, Any] = {"logging_config": LoggingConfig(log_level="WARNING")}
    except ImportError:  # Ray 2.51 has no LoggingConfig yet
        logging = {}
    resources = {"CPU": CPUS_PER_WORKER, **({"GPU": 1} if use_gpu else {})}
    # worker failures: restarts from the checkpoint; startup timeouts (workers that cannot be
    # placed): a few more tries, then an error, not a wait for ever (Ray's default: no limit)
    failure = FailureConfig(max_failures=MAX_RETRIES, controller_failure_limit=MAX_RETRIES)
    job = ray.get(job_ref[0])
    trainer = TorchTrainer(
        data_parallel_loop,
        train_loop_config={"task": dict(task), "job": job, "data": data_ref[0]},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=f"{task['phase']}-{job.name}", storage_path=storage,
                             failure_config=failure, **logging),
    )
    trainer.fit()
    return {"checkpoint": str(Path(task["ckpt_dir"]) / f"{job.name}.pt")}


# ------------------------------------------------------------------------------ on the driver


def largest_first(jobs: Sequence[Any], macs: Mapping[str, int]) -> list[Any]:
    """`jobs` (anything with a `name`) by forward MACs, largest first; ties keep their order.

    >>> J = types.SimpleNamespace
    >>> [j.name for j in largest_first([J(name="a"), J(name="b"), J(name="c"), J(name="d")],
    ...                                {"a": 10, "b": 30, "c": 10, "d": 20})]
    ['b', 'd', 'a', 'c']
    """
    return sorted(jobs, key=lambda j: -macs.get(j.name, 0))


@dataclass
class _Job:
    """A job queued on the cluster: the phase it belongs to, and what its task needs besides."""

    job: Job
    phase: str
    batch_hook: Any = None
    #: made by the phase's `Then` from a finished job
    follows: bool = False

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def data_parallel(self) -> bool:
        """Only plain cross-entropy jobs on the shared data can be split over several workers."""
        return self.job.plain and self.job.data is None and self.batch_hook is None


@dataclass
class _Running:
    job: _Job
    devices: tuple[int, ...]
    start: float


@dataclass
class Placement:
    """One network's run on the cluster, for results.json's info.ray.placements."""

    name: str
    phase: str
    devices: tuple[int, ...]
    workers: int
    start: float
    end: float | None = None
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "phase": self.phase, "workers": self.workers,
                "devices": list(self.devices), "start": round(self.start, 3),
                "end": None if self.end is None else round(self.end, 3), "status": self.status}


@dataclass
class Scheduler:
    """The driver's event loop for one run: queue ready jobs, place them, collect them as they finish."""

    ctx: RunContext
    cluster: Cluster
    gpus_per_model: int | None
    ray: Any
    queue: list[_Job] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = list(range(self.cluster.slots))
        self.running: dict[Any, _Running] = {}
        self.t0 = time.perf_counter()
        self.macs = self.ctx.plan.macs
        self._data: dict[int, Any] = {}
        self.storage = str(self.ctx.ckpt_dir("ray"))
        ray = self.ray
        self._task = ray.remote(num_cpus=CPUS_PER_WORKER, num_gpus=1 if self.cluster.use_gpu else 0,
                                max_retries=MAX_RETRIES, retry_exceptions=True)(train_task)
        # retried when its process or machine is lost; a trainer's own failures are its FailureConfig's
        self._fit = ray.remote(num_cpus=0, max_retries=MAX_RETRIES)(fit_task)

    def say(self, text: str) -> None:
        if not self.ctx.progress.quiet:
            print(f"[ray] {text}", file=self.ctx.progress.stream, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def submit(self, jobs: Sequence[_Job]) -> None:
        """Queue jobs that became ready together: after those waiting, largest first."""
        self.queue.extend(largest_first(jobs, self.macs))

    def _data_ref(self, job: Job) -> Any:
        data = job.data if job.data is not None else self.ctx.dataset
        if id(data) not in self._data:
            self._data[id(data)] = self.ray.put(data.to("cpu"))
        return self._data[id(data)]

    def _start(self) -> None:
        from mncompile.runtime.placement import place

        started = place([j.name for j in self.queue], self.free, self.gpus_per_model)
        if not started:
            return
        for queued in [j for j in self.queue if j.name in started]:
            devices = started[queued.name]
            # every worker needs an example of each batch: no more workers than the batch size
            if not queued.data_parallel:  # hooks or data of its own: one device
                devices = devices[:1]
            workers = min(len(devices), queued.job.settings.batch)
            self.queue.remove(queued)
            self.free = [d for d in self.free if d not in devices]
            task = {"phase": queued.phase, "seed": self.ctx.seed,
                    "ckpt_dir": str(self.ctx.ckpt_dir(queued.phase)), "quiet": self.ctx.progress.quiet,
                    "use_gpu": self.cluster.use_gpu}
            job = queued.job
            if workers == 1:
                ref = self._task.remote(task, job, self._data_ref(job), queued.batch_hook)
                how = f"1 {self.cluster.kind}"
            else:
                # in lists, so that Ray passes the references on instead of their values
                ref = self._fit.remote(task, [self.ray.put(job)], [self._data_ref(job)], workers,
                                       self.cluster.use_gpu, self.storage)
                how = f"{workers} {self.cluster.kind}s, data-parallel"
            self.running[ref] = _Running(queued, tuple(devices), self.elapsed())
            self.placements.append(Placement(job.name, queued.phase, tuple(devices), workers, self.elapsed()))
            self.say(f"{queued.phase}: {job.name} started on {how}")

    def next_done(self) -> tuple[_Job, ModelResult | None]:
        """Start what the policy allows, wait for one job to finish; it and its result (None: failed)."""
        self._start()
        if not self.running:
            names = ", ".join(j.name for j in self.queue)
            raise MNError(f"no network can start: {names} wait, but all {self.cluster.slots} "
                          f"{self.cluster.kind}s are free",
                          hint="lower --gpus-per-model to at most the cluster's device count")
        done, _ = self.ray.wait(list(self.running), num_returns=1)
        ref = done[0]
        run = self.running.pop(ref)
        self.free = sorted([*self.free, *run.devices])
        rec = next(p for p in reversed(self.placements) if p.name == run.job.name)
        rec.end = self.elapsed()
        try:
            reply = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            retried = (f" after {MAX_RETRIES} retries" if rec.workers == 1 else
                       f" (data-parallel: its trainer restarts up to {MAX_RETRIES} times)")
            reply = {"error": _describe(err), "retried": retried}
        result: ModelResult | None = None
        if "checkpoint" in reply:  # data-parallel: the weights come back in the checkpoint
            try:
                result = self._load(run.job.job, Path(reply["checkpoint"]))
            except MNError as err:  # left out, or the run stops, as on any failure
                reply = {"error": err.message + (f" ({err.hint})" if err.hint else ""),
                         "retried": " (it trained, but the driver cannot read its checkpoint)"}
        elif "error" not in reply:
            result = reply["result"]
            run.job.job.model.load_state_dict(reply["state"])
        if result is None:
            rec.status = "failed"
            self._failed(run.job, reply["error"], reply.get("retried", ""))
            return run.job, None
        rec.status = result.status
        self.say(f"{run.job.phase}: {run.job.name} {result.status} after {result.epochs} epochs "
                 f"({rec.end - rec.start:.1f}s on {len(run.devices)} {self.cluster.kind}"
                 f"{'s' if len(run.devices) > 1 else ''})")
        return run.job, result

    def _load(self, job: Job, path: Path) -> ModelResult:
        from mncompile.runtime.checkpoint import load_checkpoint
        from mncompile.runtime.train import history_from

        meta = load_checkpoint(path, job.model)
        history = history_from(meta, f"checkpoint {path}")
        try:
            return ModelResult(job.name, str(meta["status"]), meta["message"], history)
        except KeyError as err:
            raise MNError(f"checkpoint {path} has damaged meta data ({err})") from None

    def _failed(self, job: _Job, error: str, retried: str) -> None:
        """Report a failed job; `retried` (' after 2 retries', say) says what Ray tried."""
        self.failed[job.name] = error
        print(f"warning: {job.phase}: {job.name} failed on Ray{retried}: {error}", file=sys.stderr,
              flush=True)

    def failed_result(self, job: _Job) -> ModelResult:
        """A failed job's record: its checkpointed epochs, status 'training', the error."""
        from mncompile.runtime.checkpoint import checkpoint_path, load_checkpoint
        from mncompile.runtime.train import history_from

        history: list[EpochRecord] = []
        path = checkpoint_path(self.ctx.ckpt_dir(job.phase), job.name)
        try:
            history = history_from(load_checkpoint(path), str(path)) if path.is_file() else []
        except MNError:
            pass
        return ModelResult(job.name, "training", f"failed on Ray: {self.failed[job.name]}", history)

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.running)

    def cancel(self) -> None:
        for ref in list(self.running):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - cancelling what already ended is harmless
                pass
        self.running.clear()


def _describe(err: BaseException) -> str:
    """One line on what went wrong in a Ray task or trainer: the innermost error Ray wraps."""
    import re

    for _ in range(8):  # RayTaskError.cause, a trainer's worker or controller failure, ...
        failures = getattr(err, "worker_failures", None)
        inner = (next(iter(failures.values()), None) if isinstance(failures, Mapping) else None) \
            or getattr(err, "controller_failure", None) or getattr(err, "cause", None)
        if not isinstance(inner, BaseException):
            break
        err = inner
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # a traceback in the text ends with the exception's own line, "SomeError: message"
    named = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)]
    line = named[-1] if named else lines[0] if lines else ""
    return line if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", line) \
        else f"{type(err).__name__}: {line}".rstrip(": ")


class RayEngine:
    """`--engine ray`: every phase's jobs on a Ray cluster, placed by Appendix D (module notes)."""

    name = "ray"

    def __init__(self, options: Mapping[str, Any]) -> None:
        if options.get("sequential"):
            raise MNError("--sequential is an option of the local engine",
                          hint="drop --sequential: with --engine ray every network trains on its own")
        self.ray = connect(options.get("address"), quiet=bool(options.get("quiet")))
        self.cluster = cluster_devices(self.ray.cluster_resources(), options.get("device") or "auto")
        per_model = options.get("gpus_per_model")
        if per_model is not None and per_model > self.cluster.slots:
            raise MNError(f"--gpus-per-model {per_model}, but the Ray cluster has {self.cluster.slots} "
                          f"{self.cluster.kind}{'s' if self.cluster.slots != 1 else ''}",
                          hint=f"use at most {self.cluster.slots}, or auto")
        if may_train_data_parallel(self.cluster.slots, per_model):
            require_train_v2(self.ray)
        self.gpus_per_model = per_model
        self.placements: list[Placement] = []
        self._failed: dict[str, str] = {}
        self._t0: float | None = None

    @property
    def failed(self) -> Mapping[str, str]:
        return self._failed

    def info(self) -> dict[str, Any]:
        return {"slots": self.cluster.slots, "device": "cuda" if self.cluster.use_gpu else "cpu",
                "gpus_per_model": self.gpus_per_model or "auto",
                "placements": [p.to_dict() for p in self.placements]}

    def run(self, ctx: RunContext, phase: Phase, then: Then | None = None) -> list[PhaseRecord]:
        """Queue the phase's jobs; as each finishes, queue what `then` makes of it; wait for all."""
        from mncompile.runtime.results import PhaseRecord

        s = Scheduler(ctx, self.cluster, self.gpus_per_model, self.ray)
        if self._t0 is None:
            self._t0 = s.t0
            per = "auto (Appendix D)" if self.gpus_per_model is None else self.gpus_per_model
            s.say(f"{self.cluster.slots} {self.cluster.kind}{'s' if self.cluster.slots != 1 else ''}; "
                  f"{per} per network")
        s.t0 = self._t0  # placements' times count from the run's first phase
        start = s.elapsed()
        s.submit([_Job(j, phase.name, phase.batch_hook) for j in phase.jobs])
        first: dict[str, ModelResult] = {}
        follow: dict[str, ModelResult] = {}
        made: list[Job] = []
        before = after = 0.0  # seconds spent in `then.make` before and after the first phase ended
        first_done: float | None = None
        try:
            while s.busy:
                queued, result = s.next_done()
                if queued.follows:
                    follow[queued.name] = result if result is not None else s.failed_result(queued)
                    continue
                if result is None:
                    if queued.job.required:
                        raise MNError(f"'{queued.name}' failed on Ray: {s.failed[queued.name]}",
                                      hint=f"the method cannot go on without it ({phase.name}); "
                                      "see the error above")
                    result = s.failed_result(queued)
                    ok = False
                else:
                    ok = True
                first[queued.name] = result
                if len(first) == len(phase.jobs):
                    first_done = s.elapsed()
                if then is None or not ok:
                    continue
                jobs, seconds = then.make(queued.job, result)
                if first_done is None:
                    before += seconds
                else:
                    after += seconds
                made.extend(jobs)
                s.submit([_Job(j, then.phase, follows=True) for j in jobs])
        finally:
            s.cancel()
            self._failed.update(s.failed)
            self.placements.extend(s.placements)
        end = s.elapsed()
        first_done = end if first_done is None else first_done
        ordered = {j.name: first[j.name] for j in phase.jobs}
        records = [PhaseRecord(phase.name, first_done - start - before, ordered)]
        if then is not None and made:
            rank = {name: i for i, name in enumerate(then.order)}
            names = sorted((j.name for j in made), key=lambda n: rank.get(n, len(rank)))
            records.append(PhaseRecord(then.between, before + after, {}))
            records.append(PhaseRecord(then.phase, end - first_done - after, {n: follow[n] for n in names}))
        return records
