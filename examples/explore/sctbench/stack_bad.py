"""SCTBench stack_bad: a pusher and a popper, where the popper trusts a flag that says
only that *something* was pushed once.

The original (SCTBench, concurrent-software-benchmarks/stack_bad.c): a stack of SIZE =
10 with `top`. t1 pushes 0..9, each under mutex m, asserting no overflow, and sets
flag. t2 makes 10 turns under m, and if flag is set pops, asserting no underflow. flag
is never cleared, so once t1 has pushed one element t2 pops in every turn it gets, and
when t2 gets two turns in a row between two pushes the stack underflows. In the default
order (t1's ten pushes, then t2's ten pops) nothing fails.

Model: top, the array and flag are shared words; m is the lock server's mutex 0; main
creates both and joins.
"""

from __future__ import annotations

from typing import Any

from _common import Program, signed, unsigned, word

from l4sim import Kernel

SIZE = 10
OVERFLOW, UNDERFLOW = -1, -2
TOP, FLAG = word(0), word(1)
ARR = word(2)                              # SIZE words
M = 0

EXPECT = "bug"
BOUND = 1
DELAY_BOUND = 1
PCT_DEPTH = 3
RUNS = 200


async def push(t: Any, x: int) -> int:
    top = signed(await t.load_word(TOP))
    if top == SIZE:
        return OVERFLOW
    await t.store_word(ARR + 8 * top, x)
    await t.store_word(TOP, unsigned(top + 1))
    return 0


async def pop(t: Any) -> int:
    top = signed(await t.load_word(TOP))
    if top == 0:
        return UNDERFLOW
    await t.store_word(TOP, unsigned(top - 1))
    x: int = await t.load_word(ARR + 8 * (top - 1))
    return x


async def t1(t: Any, prog: Program) -> None:
    for i in range(SIZE):
        await prog.sync.lock(t, M)
        assert await push(t, i) != OVERFLOW, "stack overflow"
        await t.store_word(FLAG, 1)
        await prog.sync.unlock(t, M)


async def t2(t: Any, prog: Program) -> None:
    for _ in range(SIZE):
        await prog.sync.lock(t, M)
        if await t.load_word(FLAG):
            assert await pop(t) != UNDERFLOW, "stack underflow"
        await prog.sync.unlock(t, M)


async def main(t: Any, prog: Program) -> None:
    for name in ("t1", "t2"):
        await prog.create(t, name)
    for name in ("t1", "t2"):
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    prog.thread(t1, prog, name="t1")
    prog.thread(t2, prog, name="t2")
    prog.main(main)
