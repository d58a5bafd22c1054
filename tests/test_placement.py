"""The Appendix D placement policy (`place`) and the schedule simulator built on it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mncompile.runtime.placement import (
    DEFAULT_ALPHA,
    Job,
    efficiency,
    parallel_seconds,
    place,
    shares,
    simulate,
)

NETS = [f"n{i}" for i in range(8)]

# ---------------------------------------------------------------------------------- place: the paper


def test_more_ready_than_free_one_device_each() -> None:
    assert place(NETS, [0, 1, 2, 3]) == {"n0": (0,), "n1": (1,), "n2": (2,), "n3": (3,)}


def test_as_many_ready_as_free() -> None:
    assert place(NETS[:4], [4, 5, 6, 7]) == {"n0": (4,), "n1": (5,), "n2": (6,), "n3": (7,)}


def test_one_ready_gets_every_free_device() -> None:
    assert place(["mother"], range(8)) == {"mother": tuple(range(8))}


def test_two_ready_split_four_and_four() -> None:
    assert place(["a", "b"], range(8)) == {"a": (0, 1, 2, 3), "b": (4, 5, 6, 7)}


def test_remainder_goes_to_the_first_networks_in_queue_order() -> None:
    assert place(["a", "b", "c"], range(8)) == {"a": (0, 1, 2), "b": (3, 4, 5), "c": (6, 7)}
    assert place(["c", "b", "a"], range(8)) == {"c": (0, 1, 2), "b": (3, 4, 5), "a": (6, 7)}
    # five members on eight devices (the bench's V5 / D5 at 8 GPUs): three get two
    assert [len(d) for d in place(NETS[:5], range(8)).values()] == [2, 2, 2, 1, 1]


def test_devices_are_handed_out_in_the_order_given() -> None:
    assert place(["a", "b"], [7, 3, 5, 1]) == {"a": (7, 3), "b": (5, 1)}
    assert place(NETS, [9, 2]) == {"n0": (9,), "n1": (2,)}


def test_result_keeps_queue_order() -> None:
    assert list(place(["z", "a", "m"], range(5))) == ["z", "a", "m"]


# ---------------------------------------------------------------------------------- gpus_per_model


def test_gpus_per_model_fixes_the_share() -> None:
    assert place(["a", "b", "c"], range(8), gpus_per_model=2) == {
        "a": (0, 1), "b": (2, 3), "c": (4, 5)}
    assert place(["a", "b", "c"], range(8), gpus_per_model=3) == {"a": (0, 1, 2), "b": (3, 4, 5)}
    assert place(["a"], range(8), gpus_per_model=1) == {"a": (0,)}


def test_gpus_per_model_networks_that_cannot_get_n_wait() -> None:
    assert place(["a", "b"], range(3), gpus_per_model=4) == {}
    assert place(["a", "b"], range(5), gpus_per_model=4) == {"a": (0, 1, 2, 3)}


# ---------------------------------------------------------------------------------- empty and bad


@pytest.mark.parametrize("per", [None, 1, 3])
def test_empty_inputs(per: int | None) -> None:
    assert place([], [], per) == {}
    assert place([], [0, 1], per) == {}
    assert place(["a", "b"], [], per) == {}


def test_duplicate_names() -> None:
    with pytest.raises(ValueError, match="'a' is queued twice"):
        place(["a", "b", "a"], [0, 1])


def test_duplicate_devices() -> None:
    with pytest.raises(ValueError, match="device 1 is listed as free twice"):
        place(["a"], [0, 1, 1])


@pytest.mark.parametrize("per", [0, -2])
def test_gpus_per_model_below_one(per: int) -> None:
    with pytest.raises(ValueError, match="gpus_per_model must be at least 1"):
        place(["a"], [0], gpus_per_model=per)


def test_other_bad_input() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        place(["a"], [-1])
    with pytest.raises(TypeError, match="not the string"):
        place("ab", [0, 1])
    with pytest.raises(TypeError, match="integers"):
        place(["a"], [0.5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="integer or None"):
        place(["a"], [0], gpus_per_model=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counts"):
        shares(-1, 2)


# ---------------------------------------------------------------------------------- place: properties

names = st.lists(st.text(min_size=1, max_size=4), unique=True, max_size=12)
device_ids = st.lists(st.integers(0, 63), unique=True, max_size=20)


@settings(max_examples=300, deadline=None)
@given(names, device_ids)
def test_auto_mode_properties(ready: list[str], free: list[int]) -> None:
    got = place(ready, free)
    used = [d for devs in got.values() for d in devs]
    assert len(used) == len(set(used))                       # no device twice
    assert set(used) <= set(free)                            # only free devices
    assert all(len(devs) >= 1 for devs in got.values())      # a started network has a device
    assert len(got) == min(len(ready), len(free))            # as many start as can
    assert list(got) == ready[:len(got)]                     # the first in queue order start
    if ready and free:
        assert len(used) == len(free)                        # nothing idle while a network is ready
        sizes = [len(devs) for devs in got.values()]
        assert max(sizes) - min(sizes) <= 1                  # equal up to one device ...
        assert sizes == sorted(sizes, reverse=True)          # ... the extra ones to the first
    assert place(list(ready), list(free)) == got             # deterministic


@settings(max_examples=200, deadline=None)
@given(names, device_ids, st.integers(1, 6))
def test_fixed_mode_properties(ready: list[str], free: list[int], per: int) -> None:
    got = place(ready, free, gpus_per_model=per)
    used = [d for devs in got.values() for d in devs]
    assert len(used) == len(set(used)) and set(used) <= set(free)
    assert all(len(devs) == per for devs in got.values())
    assert len(got) == min(len(ready), len(free) // per)
    assert list(got) == ready[:len(got)]


# ---------------------------------------------------------------------------------- scaling model


def test_efficiency_model() -> None:
    assert efficiency(1) == 1.0
    assert efficiency(5, 0.25) == pytest.approx(0.5)
    assert parallel_seconds(80.0, 4, 0.0) == 20.0
    assert parallel_seconds(80.0, 4, 0.1) == pytest.approx(80.0 * 1.3 / 4)
    assert DEFAULT_ALPHA == 0.1
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            efficiency(2, bad)
    with pytest.raises(ValueError, match="at least one device"):
        efficiency(0)


# ---------------------------------------------------------------------------------- simulate


def mothernets_jobs(mother: float, members: list[float]) -> list[Job]:
    return [Job("mother", mother)] + [Job(f"m{i}", t, after=("mother",)) for i, t in enumerate(members)]


def test_mothernets_schedule_by_hand() -> None:
    s = simulate(mothernets_jobs(40.0, [30.0, 20.0, 10.0]), devices=8, alpha=0.0)
    assert s["mother"].devices == tuple(range(8)) and s["mother"].end == 5.0
    assert [s[f"m{i}"].devices for i in range(3)] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert s.makespan == pytest.approx(5.0 + 10.0)


def test_running_job_keeps_its_devices_and_freed_devices_go_to_the_queue() -> None:
    s = simulate([Job("a", 4.0), Job("b", 1.0), Job("c", 1.0), Job("d", 1.0)], devices=2, alpha=0.0)
    assert s["a"] == s["a"].__class__("a", 0.0, 4.0, (0,))
    assert (s["b"].devices, s["c"].devices, s["d"].devices) == ((1,), (1,), (1,))
    assert s["d"].end == 3.0 and s.makespan == 4.0


def test_late_ready_jobs_wait_for_their_dependencies() -> None:
    jobs = [Job("x", 2.0), Job("y", 5.0, after=("x",)), Job("z", 1.0, after=("x", "y"))]
    s = simulate(jobs, devices=3, alpha=0.0)
    assert s["y"].start == s["x"].end and s["z"].start == s["y"].end
    assert s["y"].devices == (0, 1, 2)


def test_gpus_per_model_in_the_simulator() -> None:
    s = simulate(mothernets_jobs(8.0, [4.0, 4.0, 4.0]), devices=4, alpha=0.0, gpus_per_model=2)
    assert s["mother"].devices == (0, 1) and s["mother"].end == 4.0
    assert s["m2"].start == 6.0 and s.makespan == 8.0
    with pytest.raises(ValueError, match="no job could ever start"):
        simulate([Job("a", 1.0)], devices=2, gpus_per_model=3)


def test_simulate_empty_and_bad() -> None:
    assert simulate([], devices=0).makespan == 0.0
    with pytest.raises(ValueError, match="no devices"):
        simulate([Job("a", 1.0)], devices=0)
    with pytest.raises(ValueError, match="listed twice"):
        simulate([Job("a", 1.0), Job("a", 2.0)], devices=1)
    with pytest.raises(ValueError, match="not a job"):
        simulate([Job("a", 1.0, after=("b",))], devices=1)
    with pytest.raises(ValueError, match="cycle"):
        simulate([Job("a", 1.0, after=("b",)), Job("b", 1.0, after=("a",))], devices=1)
    with pytest.raises(ValueError, match="finite time"):
        simulate([Job("a", -1.0)], devices=1)


@st.composite
def job_graphs(draw: st.DrawFn) -> list[Job]:
    """Random DAGs: each job may wait for some of the jobs listed before it."""
    n = draw(st.integers(0, 8))
    jobs = []
    for i in range(n):
        after = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        seconds = draw(st.integers(0, 50)) / 2
        jobs.append(Job(f"j{i}", float(seconds), tuple(f"j{k}" for k in after)))
    return jobs


@settings(max_examples=150, deadline=None)
@given(job_graphs(), st.integers(1, 9), st.sampled_from([0.0, 0.1, 0.5]))
def test_simulate_properties(jobs: list[Job], devices: int, alpha: float) -> None:
    s = simulate(jobs, devices=devices, alpha=alpha)
    assert sorted(x.name for x in s.timeline) == sorted(j.name for j in jobs)
    ends = {x.name: x.end for x in s.timeline}
    for j in jobs:
        x = s[j.name]
        assert all(x.start >= ends[d] for d in j.after)                  # dependencies respected
        assert x.end - x.start == pytest.approx(parallel_seconds(j.seconds, len(x.devices), alpha))
        assert x.devices and set(x.devices) <= set(range(devices))
    for a in s.timeline:                                                 # no device runs two jobs
        for b in s.timeline:
            if a is not b and set(a.devices) & set(b.devices) and a.end > a.start and b.end > b.start:
                assert a.end <= b.start + 1e-9 or b.end <= a.start + 1e-9
    assert s.makespan == pytest.approx(max(ends.values(), default=0.0))
    assert s.busy() <= s.makespan * devices + 1e-9
    assert simulate(jobs, devices=devices, alpha=alpha) == s             # deterministic
    serial = simulate(jobs, devices=1, alpha=alpha)
    assert serial.makespan == pytest.approx(sum(j.seconds for j in jobs))  # one device: the sum


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 400), st.lists(st.integers(1, 200), min_size=1, max_size=8),
       st.sampled_from([0.0, 0.1, 0.3, 0.9]))
def test_more_devices_never_slower_for_mothernets(mother: int, members: list[int], alpha: float) -> None:
    # The MotherNets shape: one MotherNet, then every member at once. With at least as many
    # devices as members, every member starts when the MotherNet ends and each one's share
    # only grows with the device count, so the makespan never grows (for alpha < 1).
    jobs = mothernets_jobs(float(mother), sorted(map(float, members), reverse=True))
    spans = [simulate(jobs, devices=d, alpha=alpha).makespan for d in range(len(members), 17)]
    assert all(b <= a + 1e-9 for a, b in zip(spans, spans[1:], strict=False)), spans
    assert spans[0] <= simulate(jobs, devices=1, alpha=alpha).makespan + 1e-9


def test_fewer_devices_than_members_can_be_faster() -> None:
    # Graham's list-scheduling anomaly, which the non-preemptive policy inherits: on 4 devices
    # the two short members wait and then split the four devices the long ones free; on 5 one
    # short member starts at once and the other starts late on the single device it frees.
    jobs = mothernets_jobs(4.0, [11.0, 11.0, 11.0, 11.0, 9.0, 9.0])
    four, five = (simulate(jobs, devices=d, alpha=0.0).makespan for d in (4, 5))
    assert (four, five) == (pytest.approx(1.0 + 11.0 + 4.5), pytest.approx(0.8 + 9.0 + 9.0))
    assert five > four


@given(st.integers(1, 300), st.integers(1, 8), st.integers(1, 12), st.sampled_from([0.0, 0.1, 0.5]))
def test_a_chain_runs_data_parallel_on_every_device(total: int, cycles: int, devices: int,
                                                    alpha: float) -> None:
    # snapshot ensembles: one network, cycle after cycle, each on every device
    jobs = [Job(f"c{i}", total / cycles, after=(f"c{i - 1}",) if i else ()) for i in range(cycles)]
    s = simulate(jobs, devices=devices, alpha=alpha)
    assert all(x.devices == tuple(range(devices)) for x in s.timeline)
    assert s.makespan == pytest.approx(parallel_seconds(float(total), devices, alpha))
