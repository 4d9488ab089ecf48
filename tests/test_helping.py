"""The locked receiver and helping (the lecture's last slides).

The passive partner of a long IPC is locked while the copier copies: deleting it waits
for the lock. A thread that deletes it blocks in `delete` until the lock is released and
the deletion is done (lock-wait). With helping (`Kernel(helping=True)`, the default) the
blocked deleter lends its time to the lock's holder on its CPU, as Fiasco's switch lock
does, so a high-priority deleter waits only for the rest of the copy; without helping, a
medium-priority thread that computes meanwhile starves the low-priority copier, and the
deleter waits for it too: an unbounded delay.
"""

from __future__ import annotations

from typing import Any

import pytest

from helpers import make_kernel, run_until_the_copy
from l4sim import IpcError, Kernel, StringItem, Timeout

SIZE = 1 << 18            # 256 KiB: 131,072 cycles of copy through the window
MEDIUM_WORK = 2_000_000   # cycles the medium thread computes (far longer than the copy)


def _scenario(helping: bool) -> tuple[Kernel, dict[str, Any]]:
    k = make_kernel(helping=helping, trace=True)
    out: dict[str, Any] = {}

    async def receiver(t: Any) -> None:
        await t.store(0x400000 + SIZE - 1, b"\0")
        for page in range(0x400000, 0x400000 + SIZE, 4096):   # the buffer, mapped
            await t.store(page, b"\0")
        out["receiver"] = await t.wait(buffers=[(0x400000, SIZE)])  # never returns

    async def copier(t: Any, rsel: int) -> None:
        for page in range(0x100000, 0x100000 + SIZE, 4096):
            await t.store(page, b"L")
        r = await t.send(rsel, items=[StringItem(0x100000, SIZE)])
        out["copier"] = (r.error, t.now)

    async def medium(t: Any, at: int) -> None:
        await t.sleep(Timeout.at(at))
        await t.compute(MEDIUM_WORK)
        out["medium done"] = t.now

    async def high(t: Any, rsel: int, at: int) -> None:
        await t.sleep(Timeout.at(at))
        out["delete called"] = t.now
        out["delete"] = (await t.delete(rsel), t.now)

    r = k.new_task("r").new_thread(receiver, name="receiver", priority=10)
    lt = k.new_task("l")
    lt.new_thread(copier, lt.add_cap(r), name="copier", priority=10)
    # Run until the copy has begun, then start the medium thread and the deleter: they
    # wake during it.
    out["copy start"] = run_until_the_copy(k)
    k.new_task("m").new_thread(medium, k.now + 10_000, name="medium", priority=50)
    ht = k.new_task("h")
    ht.new_thread(high, ht.add_cap(r), k.now + 20_000, name="high", priority=100)
    assert k.run().reason == "done"
    return k, out


def _copy_end(k: Kernel) -> int:
    ends = [e.time for e in k.events if e.event == "transfer" and "ended" in e.detail]
    assert len(ends) == 1
    return ends[0]


def test_helping_bounds_the_wait_of_a_high_priority_deleter() -> None:
    k, out = _scenario(helping=True)
    err, returned = out["delete"]
    assert err == IpcError.OK
    copy_end = _copy_end(k)
    # The deleter waited exactly for the rest of the copy, run at its priority: delete
    # returned right after the copy ended, long before the medium thread was done.
    assert out["delete called"] < copy_end <= returned < out["medium done"]
    assert returned - copy_end < 1_000           # the deleter runs right after the copy,
    assert returned - out["copy start"] < SIZE  # which took 256 KiB at 0.5 cycles a byte
    assert out["copier"][0] == IpcError.OK      # and then some: not the medium's 2M
    waits = [e for e in k.events if e.event == "delete" and e.thread == "high"]
    assert waits and "waits for the transfer lock of receiver" in waits[0].detail
    states = [e.detail for e in k.events if e.event == "state" and e.thread == "high"]
    assert "lock_wait" in states
    assert [(th.name, why) for th, why in k.died] == [("receiver", "deleted")]


def test_without_helping_the_deleter_waits_for_the_medium_thread() -> None:
    k, out = _scenario(helping=False)
    err, returned = out["delete"]
    assert err == IpcError.OK
    # The copier (priority 10) ran only once the medium thread (50) was done computing:
    # the high-priority deleter's delay is the medium thread's work (priority inversion).
    assert returned > out["medium done"] > out["delete called"]
    assert returned - out["delete called"] > MEDIUM_WORK - 20_000  # the medium's work
    assert _copy_end(k) > out["medium done"]


def _locked_pair(k: Kernel, size: int, cpu: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """A receiver and a copier (priority 10, on `cpu`) about to copy `size` bytes."""
    out: dict[str, Any] = {}

    async def receiver(t: Any) -> None:
        for page in range(0x400000, 0x400000 + size, 4096):
            await t.store(page, b"\0")
        await t.wait(buffers=[(0x400000, size)])

    async def copier(t: Any, rsel: int) -> None:
        for page in range(0x100000, 0x100000 + size, 4096):
            await t.store(page, b"L")
        out["copier"] = (await t.send(rsel, items=[StringItem(0x100000, size)])).error

    r = k.new_task("r").new_thread(receiver, name="receiver", priority=10, cpu=cpu)
    lt = k.new_task("l")
    c = lt.new_thread(copier, lt.add_cap(r), name="copier", priority=10, cpu=cpu)
    return r, c, out


async def _deleter(t: Any, rsel: int, out: dict[str, Any]) -> None:
    out["delete"] = await t.delete(rsel)


def deleter_deleted_in_lock_wait() -> tuple[Kernel, dict[str, Any]]:
    """A deleter in lock-wait, deleted by a host event before the lock is released."""
    k = make_kernel()
    r, c, out = _locked_pair(k, 256 * 4096)
    run_until_the_copy(k)
    dt = k.new_task("d")
    d = dt.new_thread(_deleter, dt.add_cap(r), out, name="deleter", priority=100)

    def kill_the_deleter() -> None:
        out["deleter state"] = d.state_name
        out["copier prio while helped"] = c.prio
        k.delete(d)
        out["copier prio after"] = c.prio

    k.at(k.now + 20_000, kill_the_deleter)
    assert k.run().reason == "done"
    return k, out


def test_a_deleter_deleted_while_it_waits_for_the_lock() -> None:
    """The deleter is itself deleted in lock-wait: it waits no more, the copier stops
    borrowing its priority, and the receiver still goes once the lock is released."""
    k, out = deleter_deleted_in_lock_wait()
    assert out == {"deleter state": "lock_wait", "copier prio while helped": 100,
                   "copier prio after": 10, "copier": IpcError.OK}
    assert sorted(th.name for th, _ in k.died) == ["deleter", "receiver"]


@pytest.mark.parametrize("helping", [True, False])
def test_a_deleter_on_another_cpu_waits_without_helping(helping: bool) -> None:
    """Across CPUs the deleter only waits: the copier keeps its own priority."""
    k = make_kernel(cpus=2, helping=helping)
    r, c, out = _locked_pair(k, 128 * 4096, cpu=0)
    run_until_the_copy(k)
    dt = k.new_task("d")
    dt.new_thread(_deleter, dt.add_cap(r), out, name="deleter", priority=100, cpu=1)
    k.at(k.now + 20_000, lambda: out.setdefault("copier prio", c.prio))
    assert k.run().reason == "done"
    assert out == {"copier prio": 10, "copier": IpcError.OK, "delete": IpcError.OK}
    assert [e.detail for e in k.events if e.thread == "deleter" and e.event == "state"][-3:] \
        == ["lock_wait", "ready", "dead"]
