"""One chooser behind every timing-dependent decision: the seeded policy by default, its
choices recorded as a schedule that replays exactly, and a clear error for a schedule
that does not fit the program."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import make_kernel
from l4sim import Chooser, IpcError, Kernel, Schedule, ScheduleError, Timeout


def _sleepers(k: Kernel, log: list[Any]) -> None:
    """Three threads whose timeouts fall due at the same moment, twice."""

    async def sleeper(t: Any, name: str) -> None:
        for when in (10_000, 20_000):
            r = await t.sleep(Timeout.at(when))
            assert r.error == IpcError.RETIMEOUT
            log.append((name, t.now))

    for name in ("a", "b", "c"):
        k.new_task(name).new_thread(sleeper, name, name=name)


def _order(log: list[Any]) -> list[str]:
    return [name for name, _ in log]


def test_the_policy_fires_simultaneous_events_in_arming_order_and_records_it() -> None:
    k = make_kernel()
    log: list[Any] = []
    _sleepers(k, log)
    assert k.run().reason == "done"
    assert _order(log) == ["a", "b", "c", "a", "b", "c"]
    # Each batch of three simultaneous timeouts is two choices (the last is no choice).
    assert str(k.schedule) == "e0 e0 e0 e0"


def test_a_schedule_replays_to_the_same_event_record() -> None:
    k = make_kernel(schedule="e2 e0 e1 e0")
    log: list[Any] = []
    _sleepers(k, log)
    k.run()
    assert _order(log) == ["c", "a", "b", "a", "c", "b"]  # the second batch armed c, a, b
    assert str(k.schedule) == "e2 e0 e1 e0"

    again = make_kernel(schedule=Schedule.parse(str(k.schedule)))
    log2: list[Any] = []
    _sleepers(again, log2)
    again.run()
    assert log2 == log and list(again.events) == list(k.events)


class PreemptEverywhere(Chooser):
    """An explorer's chooser: ends the timeslice at every preemption point it may."""

    preempts = True

    def decide(self, point: str, options: int) -> int:
        return 1 if point == "p" else 0


def _counters(k: Kernel, log: list[str]) -> None:
    async def counter(t: Any, name: str) -> None:
        for _ in range(3):
            await t.sleep(Timeout.zero())  # a kernel entry: a preemption point at its exit
            log.append(name)

    for name in ("x", "y"):
        k.new_task(name).new_thread(counter, name, name=name)


def test_a_chooser_that_preempts_at_preemption_points_interleaves_equal_threads() -> None:
    plain = make_kernel()
    log: list[str] = []
    _counters(plain, log)
    plain.run()
    assert log == ["x", "x", "x", "y", "y", "y"]  # no preemption without a timeslice end
    assert str(plain.schedule) == ""

    k = make_kernel(chooser=PreemptEverywhere())
    log = []
    _counters(k, log)
    k.run()
    assert log == ["x", "y", "x", "y", "x", "y"]
    assert set(k.schedule) == {("p", 1)}
    assert any(e.event == "preempted" for e in k.events)

    replay = make_kernel(schedule=str(k.schedule))
    assert replay.chooser.preempts and not replay.fastpath
    log2: list[str] = []
    _counters(replay, log2)
    replay.run()
    assert log2 == log and list(replay.events) == list(k.events)


@pytest.mark.parametrize(("schedule", "message"), [
    ("e0 e0 e0", "ended after 4 of the schedule's 5 choices"),
    ("e0 e0", "the schedule has 2 choices, but the program makes more"),
    ("e0 p1 e0 e0", "choice 2 of the schedule is p1, but the program asks a simultaneous "
                    "events choice"),
    ("e0 e5 e0 e0", "choice 2 of the schedule is e5, but the program asks a simultaneous "
                    "events choice (e) of 2 options"),
])
def test_a_schedule_that_does_not_fit_the_program_is_a_clear_error(schedule: str,
                                                                    message: str) -> None:
    if schedule == "e0 e0 e0":
        schedule = "e0 e0 e0 e0 e0"
    k = make_kernel(schedule=schedule)
    _sleepers(k, [])
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        k.run()


def test_schedules_parse_and_print() -> None:
    s = Schedule.parse("c1 e0, p1")
    assert list(s) == [("c", 1), ("e", 0), ("p", 1)] and str(s) == "c1 e0 p1"
    assert Schedule.parse([("e", 2)]) == [("e", 2)]
    for bad, why in (("x1", "unknown choice point"), ("e", "not a choice"),
                     ("e-1", "not a choice")):
        with pytest.raises(ScheduleError, match=why):
            Schedule.parse(bad)
    with pytest.raises(ValueError, match="not both"):
        Kernel(schedule="e0", chooser=Chooser())


class HoldInterrupts(Chooser):
    """An explorer's chooser: holds every pending interrupt back past the preemption
    point of kernel code where it is found (it is taken at the next one)."""

    preempts = True
    holds_interrupts = True

    def decide(self, point: str, options: int) -> int:
        return 1 if point == "i" else 0


def _interrupted(k: Kernel, log: list[Any]) -> None:
    """A device interrupt falls due while `lo` is in the kernel (a zero sleep); the
    thread it wakes, `hi`, has the higher priority."""

    async def hi(t: Any, irq: int) -> None:
        assert await t.irq_bind(irq) == IpcError.OK
        r = await t.irq_receive(irq)
        log.append(("hi", r.error, t.now))

    async def lo(t: Any) -> None:
        await t.compute(20_000 - t.now)
        await t.sleep(Timeout.zero())        # the interrupt falls due in here, at 20,001
        log.append(("lo", t.now))
        await t.compute(100)                 # user mode: an interrupt is taken at once
        log.append(("lo", t.now))

    irq = k.new_irq("dev")
    ht = k.new_task("h")
    ht.new_thread(hi, ht.add_cap(irq), name="hi", priority=200)
    k.new_task("l").new_thread(lo, name="lo")
    k.at(20_001, irq.trigger)


def test_a_pending_interrupt_taken_at_a_kernel_exit_or_held_back_to_the_next_point() -> None:
    """`i`: the policy takes an interrupt at the first preemption point where it is due;
    an exploring chooser may hold it back past a preemption point of kernel code. Here
    the held interrupt lets `lo` return from its system call first; its computation
    (user mode) takes it at once. Ordinary runs never ask, nor do choosers that only
    preempt."""
    plain = make_kernel()
    log: list[Any] = []
    _interrupted(plain, log)
    assert plain.run().reason == "done"
    assert str(plain.schedule) == ""
    ipc, switch = plain.costs.ipc_cost(0), plain.costs.thread_switch + plain.costs.space_switch
    exit_at = 20_000 + ipc  # lo's zero sleep ends; the interrupt is due since 20,001
    # Taken at lo's kernel exit: hi runs first, then lo (hi returned) and computes.
    assert log == [("hi", IpcError.OK, exit_at + switch),
                   ("lo", exit_at + 2 * switch), ("lo", exit_at + 2 * switch + 100)]

    k = make_kernel(chooser=HoldInterrupts())
    log2: list[Any] = []
    _interrupted(k, log2)
    assert k.run().reason == "done"
    assert str(k.schedule) == "x i1"
    # Held back: lo returns from its sleep first; its computation takes it at once.
    assert log2 == [("lo", exit_at), ("hi", IpcError.OK, exit_at + switch),
                    ("lo", exit_at + 2 * switch + 100)]
    assert any(e.event == "interrupt" for e in k.events)

    replay = make_kernel(schedule=str(k.schedule))
    log3: list[Any] = []
    _interrupted(replay, log3)
    replay.run()
    assert log3 == log2 and list(replay.events) == list(k.events)
