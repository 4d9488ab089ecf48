"""SCTBench twostage_bad: an update in two stages, each under its own mutex, read between
the stages.

The original (SCTBench, concurrent-software-benchmarks/twostage_bad.c, with one thread
of each kind): funcA sets data1 = 1 under data1Lock, then data2 = data1 + 1 under
data2Lock. funcB returns if data1 is 0 (under data1Lock); otherwise it reads t1 = data1
under data1Lock, then t2 = data2 under data2Lock, and asserts t2 == t1 + 1. Each access
is locked, but the two stages are not one atomic step: if funcB runs between them it
sees data1 = 1 and data2 = 0. In the default order (funcA whole, then funcB) it does
not. One preemption, of funcA after its first stage.

Model: data1 and data2 are shared words, the locks the lock server's mutexes 0 and 1;
main creates funcA's thread, then funcB's, and joins both.
"""

from __future__ import annotations

from typing import Any

from _common import Program, word

from l4sim import Kernel

T_THREADS, R_THREADS = 1, 1
DATA1, DATA2 = word(0), word(1)
DATA1_LOCK, DATA2_LOCK = 0, 1

EXPECT = "bug"
BOUND = 1
DELAY_BOUND = 1
PCT_DEPTH = 3
RUNS = 200


async def func_a(t: Any, prog: Program) -> None:
    s = prog.sync
    await s.lock(t, DATA1_LOCK)
    await t.store_word(DATA1, 1)
    await s.unlock(t, DATA1_LOCK)
    await s.lock(t, DATA2_LOCK)
    await t.store_word(DATA2, await t.load_word(DATA1) + 1)
    await s.unlock(t, DATA2_LOCK)


async def func_b(t: Any, prog: Program) -> None:
    s = prog.sync
    await s.lock(t, DATA1_LOCK)
    if await t.load_word(DATA1) == 0:
        await s.unlock(t, DATA1_LOCK)
        return
    t1 = await t.load_word(DATA1)
    await s.unlock(t, DATA1_LOCK)
    await s.lock(t, DATA2_LOCK)
    t2 = await t.load_word(DATA2)
    await s.unlock(t, DATA2_LOCK)
    assert t2 == t1 + 1, f"read data1 = {t1} but data2 = {t2} (between the two stages)"


def _names() -> list[str]:
    return [f"A{i}" for i in range(T_THREADS)] + [f"B{i}" for i in range(R_THREADS)]


async def main(t: Any, prog: Program) -> None:
    for name in _names():
        await prog.create(t, name)
    for name in _names():
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    for i in range(T_THREADS):
        prog.thread(func_a, prog, name=f"A{i}")
    for i in range(R_THREADS):
        prog.thread(func_b, prog, name=f"B{i}")
    prog.main(main)
