"""A priority inversion that misses a deadline only in some interleavings (the planted
bug; its twin is inversion_ok.py).

Four threads of one application share a counter, guarded by a lock that the lecture's
synchronization thread implements (ENTER / LEAVE calls; the synchronization thread even
runs at a high priority). Two low-priority threads: `low` updates the counter under the
lock (a few rounds of read, work, write), `other` wakes meanwhile and computes. A
high-priority thread `high` arrives later and must update the counter within its
deadline; a medium-priority `hog` arrives just after it and computes for long.

If `low` still holds the lock when `high` asks for it, `high` waits for `low`, and `low`
runs at its own low priority: the hog, which has nothing to do with the lock, keeps it
from the CPU, and `high` misses its deadline (the synchronization thread's priority does
not help: it only waits for the holder's LEAVE). Whether `low` still holds the lock then
depends on how `low` and `other` interleave: under the kernel's policy `low` keeps the
CPU (`other` has the same priority) and leaves long before `high` comes; one preemption
of `low` inside its critical section lets `other` compute first, and the section is
still held when `high` arrives.
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "bug"
BOUND = 2

COUNTER = 0x100000          # the shared counter
ENTER, LEAVE = 1, 2
LOW, MEDIUM, HIGH, SYNC = 10, 50, 200, 150
ROUNDS = 4                  # the update under the lock: rounds of read, work, write
ROUND_CYCLES = 2_500
OTHER_ARRIVES = 3_000       # `other` wakes while `low` holds the lock
OTHER_CYCLES = 15_000       # what `other` computes
HIGH_ARRIVES = 20_000
HOG_ARRIVES = 21_000
HOG_CYCLES = 200_000
DEADLINE = 25_000           # high's bound from asking to done (two updates and change)


async def sync_thread(t: Any, holder_sel: dict[int, int]) -> None:
    """The lecture's synchronization thread. `holder_sel`: a worker's tid -> this task's
    capability to it, for the closed receive (boot configuration, read only)."""
    while True:
        r = await t.wait()
        if not r.ok or r.tag.label != ENTER:
            await t.reply(words=[1])
            continue
        holder = r.label
        if not (await t.reply(words=[0])).ok:
            continue
        while True:
            r = await t.receive(holder_sel[holder])
            if not r.ok:
                break
            ok = r.tag.label == LEAVE
            await t.reply(words=[0 if ok else 1])
            if ok:
                break


async def update(t: Any, sync: int) -> None:
    """The counter's update under the lock."""
    r = await t.call(sync, label=ENTER)
    assert r.ok and r.words[0] == 0, f"ENTER refused: {r!r}"
    for _ in range(ROUNDS):
        value = await t.load_word(COUNTER)
        await t.compute(ROUND_CYCLES)
        await t.store_word(COUNTER, value + 1)
    r = await t.call(sync, label=LEAVE)
    assert r.ok and r.words[0] == 0, f"LEAVE refused: {r!r}"


async def low(t: Any, sync: int) -> None:
    await update(t, sync)


async def other(t: Any) -> None:
    await t.sleep(Timeout.at(OTHER_ARRIVES))
    await t.compute(OTHER_CYCLES)


async def high(t: Any, sync: int) -> int:
    await t.sleep(Timeout.at(HIGH_ARRIVES))
    start = t.now
    await update(t, sync)
    took = t.now - start
    assert took <= DEADLINE, f"high missed its deadline: {took} cycles > {DEADLINE}"
    return took


async def hog(t: Any) -> None:
    await t.sleep(Timeout.at(HOG_ARRIVES))
    await t.compute(HOG_CYCLES)


def build(k: Kernel) -> None:
    holder_sel: dict[int, int] = {}
    stask = k.new_task("sync")
    sync = stask.new_thread(sync_thread, holder_sel, name="sync", priority=SYNC)
    app = k.new_task("app")
    sel = app.add_cap(sync)
    workers = [app.new_thread(low, sel, name="low", priority=LOW),
               app.new_thread(other, name="other", priority=LOW),
               app.new_thread(high, sel, name="high", priority=HIGH),
               app.new_thread(hog, name="hog", priority=MEDIUM)]
    for w in workers:
        holder_sel[w.tid] = stask.add_cap(w)


def check(k: Kernel, result: RunResult) -> None:
    unfinished = [th.name for th in k.threads.values()
                  if th.name in ("low", "other", "high", "hog") and not th.returned]
    assert not unfinished, f"threads that did not finish: {unfinished}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    h = next(th for th in k.threads.values() if th.name == "high")
    print(f"high updated the counter in {h.result} cycles (deadline {DEADLINE})")
