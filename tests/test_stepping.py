"""`k.step()` and `k.peek()`: the run as a sequence of atomic steps, in the manner of
SimPy. Stepping a program to its end gives exactly the run in one piece: the same
results, times and event record."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import make_kernel
from l4sim import IpcError, Kernel, Timeout


def _system(k: Kernel) -> dict[str, list[Any]]:
    log: dict[str, list[Any]] = {"srv": [], "cli": [], "hog": []}

    async def server(t: Any) -> None:
        r = await t.wait()
        while True:
            log["srv"].append((t.now, r.words))
            await t.compute(3_000)
            r = await t.reply_and_wait(words=[r.words[0] * 2],
                                       receive_timeout=Timeout.us(40))
            if r.error == IpcError.RETIMEOUT:
                log["srv"].append((t.now, "idle"))
                return

    async def client(t: Any, srv: int) -> None:
        for i in range(4):
            r = await t.call(srv, words=[i])
            log["cli"].append((t.now, r.error, r.words))
            await t.sleep(Timeout.us(3))

    async def hog(t: Any) -> None:
        for _ in range(3):
            await t.compute(20_000)
            log["hog"].append(t.now)

    s = k.new_task("s").new_thread(server, name="srv", priority=120)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(s), name="cli", priority=100)
    k.new_task("h").new_thread(hog, name="hog", priority=100)
    k.at(30_000, lambda: log["hog"].append(("host", k.now)))
    return log


def test_stepping_to_the_end_is_the_run_in_one_piece() -> None:
    whole = make_kernel()
    whole_log = _system(whole)
    res = whole.run()

    k = make_kernel()
    log = _system(k)
    ran: list[str] = []
    while (th := k.step()) is not None:
        ran.append(th.name)
    assert log == whole_log
    assert k.now == res.now and k.entries == res.steps
    assert list(k.events) == list(whole.events)
    assert {"srv", "cli", "hog"} <= set(ran)
    assert k.peek() is None and k.step() is None
    assert k.run().reason == res.reason == "done"


def test_peek_says_when_and_where_the_next_step_is() -> None:
    k = make_kernel()

    async def sleeper(t: Any) -> None:
        await t.sleep(Timeout.cycles(5_000))

    k.new_task("a").new_thread(sleeper, name="a")
    assert k.peek() == (0, 0)            # a is ready now, on CPU 0
    assert k.step() is not None          # it enters the kernel and sleeps
    when, cpu = k.peek() or (None, None)
    assert cpu == 0 and when is not None and when >= 5_000  # its timeout: the next event
    while k.step() is not None:
        pass
    assert k.peek() is None


def test_a_step_between_a_rendezvous_and_the_direct_switch_keeps_the_decision() -> None:
    """After a step that ends in a direct switch (call to a waiting server), the server
    is the decided next thread: neither running nor queued, and the invariants (checked
    after every operation) accept it; deleting it then drops the decision."""
    k = make_kernel(check=True, trace=False)

    async def server(t: Any) -> None:
        await t.wait()
        await t.reply(words=[1])

    async def client(t: Any, srv: int) -> IpcError:
        return (await t.call(srv, words=[7])).error

    s = k.new_task("s").new_thread(server, name="srv", priority=100)
    ct = k.new_task("c")
    c = ct.new_thread(client, ct.add_cap(s), name="cli", priority=100)
    assert k.step() is s                 # the server waits
    assert k.step() is c                 # the call: the server is decided next
    assert k.cpus[0].action is s and s.rq_prio < 0
    k.delete(s)
    assert k.cpus[0].action is s         # (dropped when the next step begins)
    assert k.run().reason == "done"
    assert c.result == IpcError.ENOT_EXISTENT


def _several_cpus(k: Kernel) -> dict[str, list[Any]]:
    """Local and remote calls, computation that crosses the other CPUs' steps, timeouts
    and a host event, on every CPU of `k`."""
    log: dict[str, list[Any]] = {}
    last = len(k.cpus) - 1

    async def server(t: Any, name: str) -> None:
        r = await t.wait()
        while True:
            log[name].append((t.now, r.words))
            await t.compute(700)
            r = await t.reply_and_wait(words=[r.words[0] + 1],
                                       receive_timeout=Timeout.us(60))
            if r.error == IpcError.RETIMEOUT:
                log[name].append((t.now, "idle"))
                return

    async def client(t: Any, name: str, srv: int, rounds: int) -> None:
        for i in range(rounds):
            r = await t.call(srv, words=[i])
            log[name].append((t.now, r.error, r.words))
            if i % 3 == 2:
                await t.sleep(Timeout.us(2))

    async def hog(t: Any) -> None:
        for _ in range(3):
            await t.compute(15_000)
            log["hog"].append(t.now)

    for cpu in range(len(k.cpus)):
        name = f"srv{cpu}"
        log[name] = []
        s = k.new_task(name).new_thread(server, name, name=name, priority=120, cpu=cpu)
        for other in sorted({cpu, last - cpu}):  # a local client, and a remote one
            cname = f"cli{cpu}-{other}"
            log[cname] = []
            ct = k.new_task(cname)
            ct.new_thread(client, cname, ct.add_cap(s), 6, name=cname, cpu=other)
    async def toucher(t: Any) -> None:
        # (its first fault makes the default pager, a thread of the boot CPU: from
        # another CPU's step, a thread made ready there at once)
        await t.compute(9_000)
        for page in range(3):
            await t.store(0x40000 + page * 0x1000, b"x")
            log["touch"].append(t.now)

    log["hog"] = []
    log["touch"] = []
    k.new_task("h").new_thread(hog, name="hog", priority=100, cpu=last)
    k.new_task("m").new_thread(toucher, name="touch", priority=110, cpu=last)
    k.at(25_000, lambda: log["hog"].append(("host", k.now)))
    return log


@pytest.mark.parametrize("cpus", [2, 4])
@pytest.mark.parametrize("mode", ["checked", "plain"])
def test_stepping_several_cpus_to_the_end_is_the_run_in_one_piece(cpus: int, mode: str) -> None:
    """With several CPUs a run lets a CPU that is still strictly first after a step take
    the next one at once; stepping chooses the CPU before every step. Both give the same
    steps in the same order: the same results, times, kernel entries and events."""
    opts: dict[str, Any] = {"check": True, "trace": True} if mode == "checked" else {
        "check": False, "trace": False}
    whole = Kernel(cpus=cpus, **opts)
    whole_log = _several_cpus(whole)
    res = whole.run()

    k = Kernel(cpus=cpus, **opts)
    log = _several_cpus(k)
    steps = 0
    while k.step() is not None:
        steps += 1
    assert log == whole_log
    assert [c.now for c in k.cpus] == [c.now for c in whole.cpus]
    assert k.entries == res.steps and res.reason == "done"
    assert list(k.events) == list(whole.events)
    assert sum(len(v) for v in log.values()) >= 50 and steps >= 70
    for cpu in range(cpus):  # every server served both its clients, then idled
        assert log[f"srv{cpu}"][-1][1] == "idle"


def test_a_cpu_that_stays_first_steps_on_without_a_choice() -> None:
    """A local ping-pong on a kernel of two CPUs (the other idle): the run chooses a CPU
    a few times, not once per step."""
    k = Kernel(cpus=2, check=False, trace=False)
    chosen = 0
    choose = k._next_cpu

    def counting() -> Any:
        nonlocal chosen
        chosen += 1
        return choose()

    k._next_cpu = counting  # type: ignore[method-assign]

    async def server(t: Any) -> None:
        await t.wait()
        while True:
            await t.reply_and_wait(words=[1])

    async def client(t: Any, srv: int) -> None:
        for _ in range(200):
            assert (await t.call(srv, words=[2])).ok

    s = k.new_task("s").new_thread(server, name="srv")
    ct = k.new_task("c")
    c = ct.new_thread(client, ct.add_cap(s), name="cli")
    assert k.run().reason == "done"  # (a server waiting openly is idle, not deadlocked)
    assert c.result is None and not k.died
    assert k.entries > 400 and chosen < 10


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_step_ends_at_the_timer_interrupt(cpus: int) -> None:
    """A thread that computes on and on, alone: each `k.step()` ends at the latest at
    the end of its timeslice (the timer interrupt is a kernel entry, as `run(max_steps=)`
    counts it); a step had gone on to the end of the computation, and never ended for
    one that does not end. A computation stepped through to its end is the run in one
    piece (results, times, kernel entries, events)."""
    k = Kernel(cpus=cpus, check=True, trace=True)

    async def spin(t: Any) -> None:
        for _ in range(2_000):  # 200M cycles: more than seven timeslices
            await t.compute(100_000)

    k.new_task("a").new_thread(spin, name="spin")
    ends = []
    for _ in range(4):
        assert k.step() is not None
        ends.append(k.now)
    slice_and_tick = k.timeslice + k.costs.timer_tick
    assert ends == [slice_and_tick * (i + 1) for i in range(4)]

    def three_slices(k: Kernel) -> Any:
        async def work(t: Any) -> int:
            await t.compute(3 * k.timeslice + 12_345)
            return t.now

        return k.new_task("w").new_thread(work, name="work")

    whole = Kernel(cpus=cpus, check=True, trace=True)
    w = three_slices(whole)
    res = whole.run()
    stepped = Kernel(cpus=cpus, check=True, trace=True)
    s = three_slices(stepped)
    steps = 0
    while stepped.step() is not None:
        steps += 1
    assert s.result == w.result and stepped.now == whole.now
    assert stepped.entries == res.steps and list(stepped.events) == list(whole.events)
    assert steps >= 4  # a step per timeslice at least
