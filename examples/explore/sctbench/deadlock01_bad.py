"""SCTBench deadlock01_bad: two mutexes taken in opposite orders.

The original (SCTBench, concurrent-software-benchmarks/deadlock01_bad.c): thread1 locks
a then b and increments a counter; thread2 locks b then a and decrements it; main joins
both. If thread1 is preempted between its two locks and thread2 takes b, each waits
for the mutex the other holds: a deadlock, after one preemption.

Model: a and b are the lock server's mutexes 0 and 1, counter a shared word. In the
deadlock both threads wait for replies that the (idle) lock server will never send and
main waits to join: the kernel reports the deadlock, which the explorer counts as a
failure (DEADLOCK_OK is False).
"""

from __future__ import annotations

from typing import Any

from _common import Program, signed, unsigned, word

from l4sim import Kernel

A, B = 0, 1
COUNTER = word(0)

EXPECT = "bug"
BOUND = 1
DELAY_BOUND = 1
PCT_DEPTH = 3
RUNS = 200


async def thread1(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, A)
    await prog.sync.lock(t, B)
    await t.store_word(COUNTER, unsigned(signed(await t.load_word(COUNTER)) + 1))
    await prog.sync.unlock(t, B)
    await prog.sync.unlock(t, A)


async def thread2(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, B)
    await prog.sync.lock(t, A)
    await t.store_word(COUNTER, unsigned(signed(await t.load_word(COUNTER)) - 1))
    await prog.sync.unlock(t, A)
    await prog.sync.unlock(t, B)


async def main(t: Any, prog: Program) -> None:
    await t.store_word(COUNTER, 1)
    for name in ("thread1", "thread2"):
        await prog.create(t, name)
    for name in ("thread1", "thread2"):
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    prog.thread(thread1, prog, name="thread1")
    prog.thread(thread2, prog, name="thread2")
    prog.main(main)
