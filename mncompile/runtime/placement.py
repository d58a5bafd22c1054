"""Which devices each ready network trains on (the paper's Appendix D), and a schedule simulator.

Pure functions: no torch, no ray; the Ray engine calls `place` whenever devices free up, and
`bench/schedule_sim.py` calls `simulate` to predict training time on 1..N devices.

The policy (MotherNets, Appendix D "Parallel training"): queue every network that is ready to
train and hand out the free devices.

- More ready networks than free devices (or as many): one device each for the first
  `len(free)` networks in queue order; the rest wait for the next round.
- Fewer ready networks than free devices: split the free devices equally among the ready
  networks (each trains data-parallel on its share); when the split is not exact, the
  `len(free) % len(ready)` devices left over go one each to the *first* networks in queue order.

>>> place(["a", "b", "c", "d"], [0, 1])
{'a': (0,), 'b': (1,)}
>>> place(["mother"], range(8))
{'mother': (0, 1, 2, 3, 4, 5, 6, 7)}
>>> place(["a", "b", "c"], range(8))
{'a': (0, 1, 2), 'b': (3, 4, 5), 'c': (6, 7)}
>>> place(["a", "b", "c"], range(8), gpus_per_model=4)
{'a': (0, 1, 2, 3), 'b': (4, 5, 6, 7)}

Why the remainder goes to the first networks rather than staying idle: the paper asks for the
idle devices to be divided "equally", which an integer split can only do up to one device; an
idle device does no work at all, while under any data-parallel scaling where more devices are
not slower (the model below with alpha < 1) the extra device shortens that network's training.
Queue order decides who gets it, so a caller that wants the extra devices on its largest
networks queues them first: the simulator's callers in `bench/schedule_sim.py` do, and the Ray
engine queues each batch of networks that become ready together largest first (by forward MACs).

Devices are handed out in contiguous runs of `free` *in the order given* (nothing is sorted).
The ids are labels and say nothing about where a device is: the Ray engine's are slot numbers
0..N-1 of its own bookkeeping, and Ray, not the id, decides which machine and which GPU or CPU a
task or trainer worker gets (a trainer packs its workers onto as few machines as Ray can). A
caller whose ids do name physical devices can list each machine's devices next to each other,
so that a share that fits on one machine gets devices of one machine.

The simulator's scaling model: a network that needs `t` seconds on one device needs

    t / (d * efficiency(d)),   efficiency(d) = 1 / (1 + alpha * (d - 1))

on `d` devices, i.e. `t * (1 + alpha * (d - 1)) / d`: the work splits over `d` devices and each
extra device adds a fraction `alpha` of the one-device time in communication (synchronising the
gradients). The paper attributes snapshot ensembles' poor scaling to exactly this overhead, which
grows with the number of GPUs (Keuper & Pfreundt, 2016). That paper shows communication bounding
data-parallel scaling but gives no single constant, so alpha is an assumption: `DEFAULT_ALPHA` =
0.1, a moderate overhead, gives 59 % efficiency (a 4.7x speedup) on 8 devices; alpha = 0 is
perfect scaling, and alpha >= 1 makes extra devices useless or harmful. Vary it to see how much
a conclusion depends on it (`bench/schedule_sim.py --alpha`).

>>> efficiency(1), round(efficiency(8), 3), round(parallel_seconds(100.0, 8), 2)
(1.0, 0.588, 21.25)
>>> s = simulate([Job("mother", 80.0), Job("a", 30.0, after=("mother",)),
...               Job("b", 20.0, after=("mother",))], devices=4, alpha=0.0)
>>> s.makespan
35.0
>>> s["mother"]
Span(name='mother', start=0.0, end=20.0, devices=(0, 1, 2, 3))
>>> s["a"], s["b"].devices
(Span(name='a', start=20.0, end=35.0, devices=(0, 1)), (2, 3))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: the default communication overhead per extra device (see the module notes)
DEFAULT_ALPHA = 0.1


def _check_names(ready: Sequence[str]) -> list[str]:
    if isinstance(ready, str):
        raise TypeError(f"ready must be a sequence of network names, not the string {ready!r}")
    names = list(ready)
    seen: set[str] = set()
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"network names must be strings, got {n!r}")
        if n in seen:
            raise ValueError(f"network {n!r} is queued twice; each ready network must appear once")
        seen.add(n)
    return names


def _check_devices(free: Iterable[int]) -> list[int]:
    ids = list(free)
    seen: set[int] = set()
    for d in ids:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"device ids must be integers, got {d!r}")
        if d < 0:
            raise ValueError(f"device ids must be >= 0, got {d}")
        if d in seen:
            raise ValueError(f"device {d} is listed as free twice; each free device must appear once")
        seen.add(d)
    return ids


def _check_per_model(gpus_per_model: int | None) -> None:
    if gpus_per_model is None:
        return
    if isinstance(gpus_per_model, bool) or not isinstance(gpus_per_model, int):
        raise TypeError(f"gpus_per_model must be an integer or None, got {gpus_per_model!r}")
    if gpus_per_model < 1:
        raise ValueError(f"gpus_per_model must be at least 1, got {gpus_per_model}")


def shares(ready: int, free: int, gpus_per_model: int | None = None) -> list[int]:
    """How many devices each of the first networks in the queue gets (the rest wait).

    >>> shares(8, 4), shares(1, 8), shares(2, 8), shares(3, 8), shares(0, 8), shares(3, 8, 2)
    ([1, 1, 1, 1], [8], [4, 4], [3, 3, 2], [], [2, 2, 2])
    """
    if ready < 0 or free < 0:
        raise ValueError(f"counts must be >= 0, got {ready} ready and {free} free")
    _check_per_model(gpus_per_model)
    if gpus_per_model is not None:
        return [gpus_per_model] * min(ready, free // gpus_per_model)
    if ready == 0 or free == 0:
        return []
    if ready >= free:
        return [1] * free
    base, extra = divmod(free, ready)
    return [base + 1] * extra + [base] * (ready - extra)


def place(ready: Sequence[str], free: Iterable[int],
          gpus_per_model: int | None = None) -> dict[str, tuple[int, ...]]:
    """The devices each network that starts now trains on; networks left out wait.

    `ready`: the networks ready to train, in queue order (no duplicates). `free`: the free device
    ids, in the order they should be handed out (no duplicates, each >= 0). With
    `gpus_per_model=N` every network that starts gets exactly N devices, and networks that
    cannot get N wait; without it, the Appendix D rule of the module notes (the remainder of an
    uneven split goes to the first networks). The result lists the started networks in queue
    order; it is empty when either input is. Raises ValueError (TypeError) on bad input.

    >>> place(["a", "b"], [4, 5, 6, 7, 0, 1, 2, 3])
    {'a': (4, 5, 6, 7), 'b': (0, 1, 2, 3)}
    >>> place([], [0, 1]), place(["a"], [])
    ({}, {})
    >>> place(["a", "a"], [0])
    Traceback (most recent call last):
    ...
    ValueError: network 'a' is queued twice; each ready network must appear once
    """
    names = _check_names(ready)
    ids = _check_devices(free)
    out: dict[str, tuple[int, ...]] = {}
    at = 0
    counts = shares(len(names), len(ids), gpus_per_model)
    for name, k in zip(names[:len(counts)], counts, strict=True):
        out[name] = tuple(ids[at:at + k])
        at += k
    return out


# ------------------------------------------------------------------------------------ simulation


def efficiency(devices: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Data-parallel efficiency on `devices` devices: 1 / (1 + alpha * (devices - 1)).

    >>> efficiency(1, 0.5), efficiency(3, 0.5), efficiency(4, 0.0)
    (1.0, 0.5, 1.0)
    """
    if devices < 1:
        raise ValueError(f"a network trains on at least one device, got {devices}")
    if not alpha >= 0 or math.isinf(alpha):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    return 1.0 / (1.0 + alpha * (devices - 1))


def parallel_seconds(seconds: float, devices: int, alpha: float = DEFAULT_ALPHA) -> float:
    """Time on `devices` devices of work that takes `seconds` on one: seconds / (d * efficiency(d))."""
    return seconds / (devices * efficiency(devices, alpha))


@dataclass(frozen=True)
class Job:
    """A network to train: its time on one device and the jobs that must finish before it starts."""

    name: str
    #: training time on one device (any unit; the makespan comes out in the same unit)
    seconds: float
    #: names of the jobs it waits for (a hatched member waits for its MotherNet)
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Span:
    """When a job ran and on which devices."""

    name: str
    start: float
    end: float
    devices: tuple[int, ...]


@dataclass(frozen=True)
class Schedule:
    """The simulated run: its makespan and every job's span, in the order the jobs started."""

    makespan: float
    timeline: tuple[Span, ...]

    def __getitem__(self, name: str) -> Span:
        for s in self.timeline:
            if s.name == name:
                return s
        raise KeyError(name)

    def busy(self) -> float:
        """Device-time spent training (the sum over jobs of duration x devices)."""
        return sum((s.end - s.start) * len(s.devices) for s in self.timeline)


def _check_jobs(jobs: Sequence[Job]) -> dict[str, Job]:
    by_name: dict[str, Job] = {}
    for j in jobs:
        if j.name in by_name:
            raise ValueError(f"job {j.name!r} is listed twice")
        if not j.seconds >= 0 or math.isinf(j.seconds):
            raise ValueError(f"job {j.name!r} needs a finite time >= 0, got {j.seconds}")
        by_name[j.name] = j
    for j in jobs:
        for d in j.after:
            if d not in by_name:
                raise ValueError(f"job {j.name!r} waits for {d!r}, which is not a job")
    # a cycle would leave jobs waiting for ever: peel off jobs whose waits are all peeled
    left = {j.name: set(j.after) for j in jobs}
    while left:
        done = [n for n, deps in left.items() if not deps]
        if not done:
            raise ValueError(f"jobs wait for each other in a cycle: {sorted(left)}")
        for n in done:
            del left[n]
        for deps in left.values():
            deps.difference_update(done)
    return by_name


def simulate(jobs: Sequence[Job], devices: int | Sequence[int], alpha: float = DEFAULT_ALPHA,
             gpus_per_model: int | None = None) -> Schedule:
    """Simulate training `jobs` on `devices` (a count, or the device ids) with the `place` policy.

    Event-driven: at time 0 and whenever jobs finish, every job whose `after` jobs have all
    finished joins the queue (in the order it became ready, ties in the order of `jobs`), and
    `place(queue, free devices, gpus_per_model)` starts what it can. A running job keeps the
    devices it started with until it finishes: nothing is preempted or resized (data-parallel
    training would need a restart to change its device count), so devices freed while nothing
    waits stay idle. Freed devices return to the free list in the order of `devices`. Time on d
    devices follows `parallel_seconds(job.seconds, d, alpha)`. With one device the makespan is the
    sum of the jobs' times. Because nothing is preempted, more devices are not always faster
    while jobs wait for devices (Graham's list-scheduling anomaly: one more device lets a short
    job start early on a device of its own, and it may end later than if it had waited and then
    shared several); for a MotherNet followed by its members, with at least as many devices as
    members, more devices never slow the run down (alpha < 1). Raises ValueError for duplicate
    jobs, unknown or cyclic `after`, negative times, no devices, or a `gpus_per_model` no job
    could ever get.

    >>> s = simulate([Job("a", 3.0), Job("b", 2.0), Job("c", 1.0)], devices=2, alpha=0.0)
    >>> s.makespan, [(x.name, x.start, x.devices) for x in s.timeline]
    (3.0, [('a', 0.0, (0,)), ('b', 0.0, (1,)), ('c', 2.0, (1,))])
    """
    by_name = _check_jobs(jobs)
    efficiency(1, alpha)  # validates alpha
    _check_per_model(gpus_per_model)
    order = list(range(devices)) if isinstance(devices, int) else _check_devices(devices)
    if not jobs:
        return Schedule(0.0, ())
    if not order:
        raise ValueError("there are jobs to train but no devices")
    if gpus_per_model is not None and gpus_per_model > len(order):
        raise ValueError(f"gpus_per_model={gpus_per_model} but only {len(order)} devices: "
                         "no job could ever start")
    rank = {d: i for i, d in enumerate(order)}
    free = list(order)
    waiting = {j.name: set(j.after) for j in jobs}
    queue: list[str] = []
    running: dict[str, Span] = {}
    spans: list[Span] = []
    now = 0.0

    def enqueue() -> None:
        for j in jobs:
            if j.name in waiting and not waiting[j.name]:
                del waiting[j.name]
                queue.append(j.name)

    enqueue()
    while queue or running:
        started = place(queue, free, gpus_per_model)
        for name, devs in started.items():
            span = Span(name, now, now + parallel_seconds(by_name[name].seconds, len(devs), alpha), devs)
            running[name] = span
            spans.append(span)
        if started:
            queue = [n for n in queue if n not in started]
            taken = {d for devs in started.values() for d in devs}
            free = [d for d in free if d not in taken]
        # finish every job that ends at the next event time (ties finish together)
        now = min(s.end for s in running.values())
        tie = now + 1e-9 * max(1.0, abs(now))  # equal ends computed along different paths
        finished = [n for n, s in running.items() if s.end <= tie]
        # what starts next starts when the last of them ends, never a rounding error before it
        now = max(running[n].end for n in finished)
        for name in finished:
            free.extend(running.pop(name).devices)
            for deps in waiting.values():
                deps.discard(name)
        free.sort(key=rank.__getitem__)
        enqueue()
    return Schedule(max(s.end for s in spans), tuple(spans))
