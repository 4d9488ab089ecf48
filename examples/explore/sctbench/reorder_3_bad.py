"""SCTBench reorder_3_bad: two words written one after the other, read between the
writes.

The original (SCTBench, concurrent-software-benchmarks/reorder_3_bad.c: reorder_bad.c
with iSet = 2 setter threads and iCheck = 1 checker): each setter writes a = 1, then
b = -1, with no lock; the checker fails unless it sees (a, b) = (0, 0) or (1, -1). It
fails when it reads between a setter's two writes (or reads a before and b after). In
the default order (the setters to their end, then the checker) it sees (1, -1).

Model: a and b are shared words (b = -1 as a 64-bit word); main creates the setters,
then the checker, and joins all.
"""

from __future__ import annotations

from typing import Any

from _common import Program, signed, unsigned, word

from l4sim import Kernel

SETTERS, CHECKERS = 2, 1
A, B = word(0), word(1)

EXPECT = "bug"
BOUND = 2
DELAY_BOUND = 2
PCT_DEPTH = 3
RUNS = 200


async def set_thread(t: Any) -> None:
    await t.store_word(A, 1)
    await t.store_word(B, unsigned(-1))


async def check_thread(t: Any) -> None:
    a = signed(await t.load_word(A))
    b = signed(await t.load_word(B))
    assert (a, b) in ((0, 0), (1, -1)), f"the checker saw a = {a}, b = {b}"


def _names() -> list[str]:
    return [f"set{i}" for i in range(SETTERS)] + [f"check{i}" for i in range(CHECKERS)]


async def main(t: Any, prog: Program) -> None:
    for name in _names():
        await prog.create(t, name)
    for name in _names():
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    for i in range(SETTERS):
        prog.thread(set_thread, name=f"set{i}")
    for i in range(CHECKERS):
        prog.thread(check_thread, name=f"check{i}")
    prog.main(main)
