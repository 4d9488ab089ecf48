"""SCTBench wronglock_bad: two kinds of threads updating one counter under two different
mutexes.

The original (SCTBench, concurrent-software-benchmarks/wronglock_bad.c with its
defaults iNum1 = 1, iNum2 = 7): funcA, under dataLock, reads x = dataValue, increments
dataValue and fails if it is not x + 1 (read again); seven funcB threads increment
dataValue under thisLock, a different mutex, so nothing keeps them out of funcA's
section. The bug: a funcB increment between funcA's read and its check. In the default
order (funcA first, to its end) nothing fails.

Model: dataValue is a shared word (the increments are a load and a store, as `++` is),
the two mutexes the lock server's 0 and 1; main creates funcA's thread, then the
funcB threads, and joins all.
"""

from __future__ import annotations

from typing import Any

from _common import Program, word

from l4sim import Kernel

NUM1, NUM2 = 1, 7
DATA_VALUE = word(0)
DATA_LOCK, THIS_LOCK = 0, 1

EXPECT = "bug"
BOUND = 1
DELAY_BOUND = 1
PCT_DEPTH = 3
RUNS = 200


async def func_a(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, DATA_LOCK)
    x = await t.load_word(DATA_VALUE)
    await t.store_word(DATA_VALUE, await t.load_word(DATA_VALUE) + 1)
    now = await t.load_word(DATA_VALUE)
    assert now == x + 1, f"dataValue went from {x} to {now} under dataLock"
    await prog.sync.unlock(t, DATA_LOCK)


async def func_b(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, THIS_LOCK)
    await t.store_word(DATA_VALUE, await t.load_word(DATA_VALUE) + 1)
    await prog.sync.unlock(t, THIS_LOCK)


def _names() -> list[str]:
    return [f"A{i}" for i in range(NUM1)] + [f"B{i}" for i in range(NUM2)]


async def main(t: Any, prog: Program) -> None:
    for name in _names():
        await prog.create(t, name)
    for name in _names():
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    for i in range(NUM1):
        prog.thread(func_a, prog, name=f"A{i}")
    for i in range(NUM2):
        prog.thread(func_b, prog, name=f"B{i}")
    prog.main(main)
