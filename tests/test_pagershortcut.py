"""The page-fault shortcut (`kernel/pagershortcut.py`) is proven equivalent to the four
IPCs it stands for.

Every program runs twice on the same kernel configuration: with the shortcut, and with
it turned off (`pagefault.serve_fault` replaced by one that declines), so that every fault
takes the IPCs. Everything the run leaves must be the same: what each thread saw and
when (`t.now` after every access), the run results, the clocks and kernel entries, every
thread's state word, priority, timeslice, registers (MRs, BRs, BDR), last message and
reply capability, the mapping database, sigma0's records and the pager's books, and the
contents of physical memory. Each program also runs checked (`check=True`: the general
path and every invariant) and must give the same times, results and mappings.

The programs include the cases the shortcut must leave to the IPCs: a page served before,
a timer or a higher-priority thread due in the middle of a fault, short timeslices, a
client above the pager's priority, sigma0 out of memory, single steps and runs cut by
`until`; for the plain ones the test counts that the shortcut was taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

import l4sim.kernel.pagefault as pagefault_module
from l4sim import Kernel, Timeout
from l4sim.kernel.abi import Fpage
from l4sim.kernel.objects import Thread

BASE = 0x1000_0000
PAGE = 4096
Log = list[tuple[Any, ...]]
Program = Callable[[Kernel, Log], None]


def _thread_state(th: Thread) -> tuple[Any, ...]:
    words = th.in_words
    br = th.utcb._br
    return (th.name, th.state, th.prio, th.priority, th.slice_left,
            getattr(th.partner, "name", None),
            th.reply_caller.name if th.reply_caller else None,
            th.in_tag, th.in_label, None if words is None else tuple(words), th.wake_error,
            tuple(th.mr), None if br is None else tuple(br), th.utcb.bdr,
            None if th.timer is None else th.timer[0], th.exit_reason)


def snapshot(k: Kernel) -> dict[str, Any]:
    """Everything a run leaves behind that a user could look at."""
    snap: dict[str, Any] = {
        "now": [c.now for c in k.cpus],
        "entries": k.entries,
        "slice_end": [c.slice_end for c in k.cpus],
        "current": [getattr(c.current, "name", None) for c in k.cpus],
        "threads": [_thread_state(th) for th in k.threads.values()],
        "mapdb": k.mapdb.dump(),
        "spaces": [(t.name, [(m.base, m.order, m.phys, m.rights) for m in t.space.mappings()],
                    sorted(t.space.tables.items())) for t in k.tasks],
        "died": [(th.name, reason) for th, reason in k.died],
        "dead_timers": k.dead_timers,
        "phys": hashlib.sha256(k.phys.view).hexdigest(),
    }
    ds = k.default_servers
    if ds is not None:
        books: Any = ds.books
        frames: Any = ds.frames
        snap["books"] = (dict(books.served), books.next_pool)
        snap["sigma0"] = list(frames.regions)
    return snap


def _client(k: Kernel, log: Log, name: str, pages: range, *, priority: int = 100,
            write: bool = True, work: int = 0) -> Thread:
    async def body(t: Any) -> int:
        for i in pages:
            addr = BASE + i * PAGE + (i % 7) * 8
            if write:
                await t.store(addr, i.to_bytes(8, "little"))
            else:
                log.append((name, "load", i, await t.load(addr, 8)))
            log.append((name, i, t.now))
            if work:
                await t.compute(work)
        return len(pages)

    return k.new_task(name).new_thread(body, name=name, priority=priority)


def prog_plain(k: Kernel, log: Log) -> None:
    _client(k, log, "writer", range(40))
    _client(k, log, "reader", range(20), write=False)


def prog_compute(k: Kernel, log: Log) -> None:
    _client(k, log, "a", range(30), work=700)
    _client(k, log, "b", range(30, 60), work=1300)


def prog_timers(k: Kernel, log: Log) -> None:
    """A sleeper whose timeouts fall due in the middle of faults, and wakes above them."""
    _client(k, log, "a", range(60))

    async def sleeper(t: Any) -> None:
        for i in range(25):
            r = await t.sleep(Timeout.cycles(1_500 + 377 * i))
            log.append(("sleeper", i, r.error, t.now))

    k.new_task("sleeper").new_thread(sleeper, name="sleeper", priority=200)


def prog_refault(k: Kernel, log: Log) -> None:
    """A page served before (unmapped by its client, touched again): two IPCs."""
    async def body(t: Any) -> None:
        for i in range(6):
            await t.store(BASE + i * PAGE, b"x")
            log.append(("r", i, t.now))
        for i in range(6):
            n = await t.unmap(Fpage.mem(BASE + i * PAGE, 12), self_too=True)
            data = await t.load(BASE + i * PAGE, 1)
            log.append(("r", "again", i, n, data, t.now))
            await t.store(BASE + i * PAGE + PAGE * 100, b"y")

    k.new_task("r").new_thread(body, name="r")


def prog_two_threads(k: Kernel, log: Log) -> None:
    """Two threads of one task on the same pages: the second fault on a page is served."""
    task = k.new_task("shared")

    async def body(t: Any, first: int) -> None:
        for i in range(20):
            page = (first + i) % 20
            await t.store(BASE + page * PAGE, bytes([page]))
            log.append((t.name, page, t.now))

    task.new_thread(body, 0, name="t0")
    task.new_thread(body, 10, name="t1")


def prog_high_client(k: Kernel, log: Log) -> None:
    _client(k, log, "high", range(10), priority=252)
    _client(k, log, "low", range(10, 20), priority=10)


def prog_out_of_memory(k: Kernel, log: Log) -> None:
    _client(k, log, "greedy", range(400))


def prog_direct_call(k: Kernel, log: Log) -> None:
    """Another thread talks to the pager itself (refused), between the faults."""
    pager = k.anon_pager
    _client(k, log, "a", range(10), work=5000)

    async def caller(t: Any, sel: int) -> None:
        for i in range(5):
            r = await t.call(sel, words=[i, 1, 2])
            log.append(("caller", i, r.error, r.label, r.tag.label, t.now))
            await t.compute(7000)

    task = k.new_task("caller")
    task.new_thread(caller, task.add_cap(pager), name="caller", priority=100)


def prog_spanning(k: Kernel, log: Log) -> None:
    """Accesses across page boundaries: a fault on the second page of an access whose
    first is mapped, and one access that faults on three pages in turn."""
    async def body(t: Any) -> None:
        for i in range(8):
            end = BASE + (2 * i + 1) * PAGE
            await t.store(end - 4, bytes([i]) * 8)            # two fresh pages
            log.append(("s", i, t.now, await t.load(end - 6, 12)))
            await t.store(end + PAGE - 2, b"abcd")            # the first mapped, the next not
            log.append(("s", i, "next", t.now))
        await t.store(BASE + 40 * PAGE + 100, bytes(range(256)) * 40)  # three fresh pages
        log.append(("s", "big", t.now, await t.load(BASE + 40 * PAGE + 90, 3 * PAGE)))

    k.new_task("s").new_thread(body, name="s")


PROGRAMS: dict[str, tuple[Program, dict[str, Any]]] = {
    "spanning": (prog_spanning, {}),
    "plain": (prog_plain, {}),
    "compute": (prog_compute, {}),
    "timers": (prog_timers, {}),
    "refault": (prog_refault, {}),
    "two-threads": (prog_two_threads, {}),
    "high-client": (prog_high_client, {}),
    "short-slices": (prog_compute, {"timeslice": 4_000}),
    "tiny-slices": (prog_plain, {"timeslice": 900}),
    "out-of-memory": (prog_out_of_memory, {"memory": 1 << 20}),
    "direct-call": (prog_direct_call, {}),
    "int30": (prog_plain, {"profile": "core2-int30"}),
}
SHORTCUT_TAKEN = {"spanning", "plain", "compute", "timers", "refault", "two-threads", "high-client",
                  "short-slices", "out-of-memory", "direct-call", "int30"}


def _run(program: Program, config: dict[str, Any], shortcut: bool,
         driver: str = "run", **extra: Any) -> tuple[Log, Any, dict[str, Any], int]:
    """Run `program`; (log, run outcome, snapshot, shortcuts taken)."""
    real = pagefault_module.serve_fault
    taken = 0

    def counted(*args: Any) -> int:
        nonlocal taken
        phys = real(*args)
        taken += phys >= 0
        return phys

    pagefault_module.serve_fault = counted if shortcut else (lambda *args: -1)
    try:
        k = Kernel(**{"memory": 16 << 20, **config, **extra})
        log: Log = []
        program(k, log)
        if driver == "run":
            r = k.run()
            outcome: Any = (r.reason, r.now, r.steps, [(t.name, w) for t, w in r.died])
        elif driver == "until":
            outcome = []
            while True:
                r = k.run(until=k.now + 3_333)
                outcome.append((r.reason, r.now, r.steps))
                if r.reason != "until":
                    break
        else:  # single steps
            outcome = []
            while (th := k.step()) is not None:
                outcome.append((th.name, k.now, k.entries))
        results = [(th.name, th.result) for th in k.threads.values()]
        return log, (outcome, results), snapshot(k), taken
    finally:
        pagefault_module.serve_fault = real


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_shortcut_equals_ipcs(name: str) -> None:
    program, config = PROGRAMS[name]
    with_ = _run(program, config, shortcut=True)
    without = _run(program, config, shortcut=False)
    assert with_[0] == without[0]          # what the threads saw, and when
    assert with_[1] == without[1]          # run results, thread results
    assert with_[2] == without[2]          # everything the run left behind
    assert without[3] == 0
    if name in SHORTCUT_TAKEN:
        assert with_[3] > 0, "the shortcut was never taken"


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_shortcut_equals_checked_run(name: str) -> None:
    """The general path, with every invariant checked: the same times and mappings."""
    program, config = PROGRAMS[name]
    fast = _run(program, config, shortcut=True)
    checked = _run(program, config, shortcut=True, check=True)
    assert checked[3] == 0  # checked runs never take it
    assert fast[0] == checked[0]
    assert fast[1] == checked[1]
    for key in ("now", "entries", "mapdb", "spaces", "died", "phys", "books", "sigma0"):
        assert fast[2].get(key) == checked[2].get(key), key


@pytest.mark.parametrize("driver", ["until", "step"])
@pytest.mark.parametrize("name", ["plain", "timers", "refault"])
def test_shortcut_under_until_and_single_steps(name: str, driver: str) -> None:
    program, config = PROGRAMS[name]
    with_ = _run(program, config, shortcut=True, driver=driver)
    without = _run(program, config, shortcut=False, driver=driver)
    assert with_[:3] == without[:3]
    if driver == "step":
        assert with_[3] == 0  # every step shows: the shortcut stays off


def test_shortcut_keeps_traced_run_identical() -> None:
    """A traced run takes the IPCs; its trace is what it was."""
    program = PROGRAMS["plain"][0]
    k1 = Kernel(memory=16 << 20, trace=True)
    program(k1, [])
    k1.run()
    real = pagefault_module.serve_fault
    pagefault_module.serve_fault = lambda *args: -1
    try:
        k2 = Kernel(memory=16 << 20, trace=True)
        program(k2, [])
        k2.run()
    finally:
        pagefault_module.serve_fault = real
    assert k1.events == k2.events


def prog_pager_moved(k: Kernel, log: Log) -> None:
    """The client sends the pager a message between faults: the pager's reply has no
    caller, fails, and the pager parks in a plain `t.wait()`, not the fast path's reply."""
    pager = k.anon_pager
    task = k.new_task("mover")

    async def body(t: Any, sel: int) -> None:
        for i in range(6):
            await t.store(BASE + i * PAGE, bytes([i]))
            log.append(("mover", i, t.now))
            if i == 1:
                r = await t.send(sel, words=[1])
                log.append(("mover", "sent", r.error, t.now))

    task.new_thread(body, task.add_cap(pager), name="mover")


PROGRAMS["pager-moved"] = (prog_pager_moved, {})
SHORTCUT_TAKEN.add("pager-moved")


def test_parked_record_does_not_outlive_the_wait_it_saw() -> None:
    """The record of where the pager was parked (`Parked`) still holds its body's
    coroutine when the pager has moved on to a plain wait: the fault then must take the
    IPCs, and the next one, with the pager parked in its reply again, the shortcut."""
    real = pagefault_module.serve_fault
    seen: list[tuple[int, bool]] = []

    def watched(k: Kernel, th: Thread, addr: int) -> int:
        ds = k.default_servers
        recorded = ds is not None and ds.pager_parked.coro is ds.pager.coro
        phys = real(k, th, addr)
        seen.append((phys >= 0, recorded))
        return phys

    pagefault_module.serve_fault = watched
    try:
        k = Kernel(memory=16 << 20)
        prog_pager_moved(k, [])
        assert k.run().reason == "done"
    finally:
        pagefault_module.serve_fault = real
    # The first fault starts the pager (IPCs); the second is served at once, and records
    # the pager's coroutine; after the send, that coroutine waits elsewhere: the IPCs.
    assert seen == [(False, False), (True, False), (False, True), (True, True),
                    (True, True), (True, True)]
