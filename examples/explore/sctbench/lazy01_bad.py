"""SCTBench lazy01_bad: three threads under one mutex, and a checker that fails when it
comes last.

The original (SCTBench, concurrent-software-benchmarks/lazy01_bad.c, from the
lazy-sequentialization benchmarks): thread1 adds 1 to `data`, thread2 adds 2, each
under the mutex; thread3, under the mutex, fails if data >= 3, that is if it runs after
both others. main creates them in that order and joins them, so the default order
(each created thread running to its end in turn) already runs the checker last: the
bug needs no preemption.

Model: `data` is a shared word, the mutex the lock server's mutex 0.
"""

from __future__ import annotations

from typing import Any

from _common import Program, word

from l4sim import Kernel

DATA = word(0)
M = 0

EXPECT = "bug"
BOUND = 0
DELAY_BOUND = 0
PCT_DEPTH = 3
RUNS = 100


async def adder(t: Any, prog: Program, amount: int) -> None:
    await prog.sync.lock(t, M)
    await t.store_word(DATA, await t.load_word(DATA) + amount)
    await prog.sync.unlock(t, M)


async def checker(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, M)
    data = await t.load_word(DATA)
    assert data < 3, f"data is {data}: the checker ran after both adders"
    await prog.sync.unlock(t, M)


async def main(t: Any, prog: Program) -> None:
    for name in ("thread1", "thread2", "thread3"):
        await prog.create(t, name)
    for name in ("thread1", "thread2", "thread3"):
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    prog.thread(adder, prog, 1, name="thread1")
    prog.thread(adder, prog, 2, name="thread2")
    prog.thread(checker, prog, name="thread3")
    prog.main(main)
