"""SCTBench din_phil2_sat: two dining philosophers and a counter whose assertion every
complete run reaches.

The original (SCTBench, concurrent-software-benchmarks/din_phil2_sat.c; "sat": the
error is reachable): N = 2 philosophers; philosopher id takes fork (id+1)%N, then fork
id, puts both down (all four inside one ESBMC atomic section), then increments `phil`
without a lock and asserts false when phil == N. The forks are taken in opposite orders
but inside the atomic section, so they cannot deadlock; the increment can lose an
update, which is the only way to *avoid* the assertion. So the default order (one
philosopher after the other) already fails: SCTBench's "trivial" kind.

Model: the forks are the lock server's mutexes 0 and 1, the atomic section its mutex 2
(one for the program, as SCTBench's common.inc provides; we could not read that file,
so this is our reading of it); `phil` is a shared word. main creates both and joins.
"""

from __future__ import annotations

from typing import Any

from _common import Program, word

from l4sim import Kernel

N = 2
ATOMIC = N                    # mutexes 0..N-1 are the forks
PHIL = word(0)

EXPECT = "bug"
BOUND = 0
DELAY_BOUND = 0
PCT_DEPTH = 3
RUNS = 100


async def philosopher(t: Any, prog: Program, ident: int) -> None:
    s = prog.sync
    left, right = ident, (ident + 1) % N
    await s.lock(t, ATOMIC)
    await s.lock(t, right)
    await s.lock(t, left)
    await s.unlock(t, left)
    await s.unlock(t, right)
    await s.unlock(t, ATOMIC)
    await t.store_word(PHIL, await t.load_word(PHIL) + 1)
    phil = await t.load_word(PHIL)
    assert phil != N, f"phil reached {N}: every philosopher has eaten"


async def main(t: Any, prog: Program) -> None:
    for i in range(N):
        await prog.create(t, f"phil{i}")
    for i in range(N):
        await prog.join(t, f"phil{i}")


def build(k: Kernel) -> None:
    prog = Program(k)
    for i in range(N):
        prog.thread(philosopher, prog, i, name=f"phil{i}")
    prog.main(main)
