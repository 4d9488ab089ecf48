"""SCTBench arithmetic_prog_bad: a producer and a consumer with condition variables,
and an assertion that every complete run breaks.

The original (SCTBench, concurrent-software-benchmarks/arithmetic_prog_bad.c): with
N = 3, thread1 produces N times (under mutex m: wait on `empty` while num > 0, then
num++; after unlocking, signal `full`); thread2 consumes N times (under m: wait on
`full` while num == 0, then total += j and num--; signal `empty`), then adds j = N once
more and sets flag. main joins both and, if flag is set, asserts total != N(N+1)/2.
But total is 0+1+2+3 = 6 = N(N+1)/2 in every run that ends: the bug needs no
preemption at all (SCTBench's "trivial" kind), and the first schedule shows it.

Model: num, total and flag are shared words; m is the lock server's mutex 0, `empty`
and `full` its condition variables 0 and 1 (a signal wakes one waiter, which returns
from its wait holding m again); main's assertion after its joins is `check`.
"""

from __future__ import annotations

from typing import Any

from _common import Program, program_of, word

from l4sim import Kernel, RunResult

N = 3
NUM, TOTAL, FLAG = word(0), word(1), word(2)
M = 0
EMPTY, FULL = 0, 1

EXPECT = "bug"
BOUND = 0
DELAY_BOUND = 0
PCT_DEPTH = 3
RUNS = 100


async def thread1(t: Any, prog: Program) -> None:
    s = prog.sync
    for _ in range(N):
        await s.lock(t, M)
        while await t.load_word(NUM) > 0:
            await s.wait(t, EMPTY, M)
        await t.store_word(NUM, await t.load_word(NUM) + 1)
        await s.unlock(t, M)
        await s.signal(t, FULL)


async def thread2(t: Any, prog: Program) -> None:
    s = prog.sync
    j = 0
    while j < N:
        await s.lock(t, M)
        while await t.load_word(NUM) == 0:
            await s.wait(t, FULL, M)
        await t.store_word(TOTAL, await t.load_word(TOTAL) + j)
        await t.store_word(NUM, await t.load_word(NUM) - 1)
        await s.unlock(t, M)
        await s.signal(t, EMPTY)
        j += 1
    await t.store_word(TOTAL, await t.load_word(TOTAL) + j)
    await t.store_word(FLAG, 1)


async def main(t: Any, prog: Program) -> None:
    for name in ("thread1", "thread2"):
        await prog.create(t, name)
    for name in ("thread1", "thread2"):
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    prog.thread(thread1, prog, name="thread1")
    prog.thread(thread2, prog, name="thread2")
    prog.main(main)


def check(k: Kernel, result: RunResult) -> None:
    prog = program_of(k)
    if prog.read(FLAG):
        total = prog.read(TOTAL)
        assert total != N * (N + 1) // 2, f"total is {total} = N(N+1)/2"

