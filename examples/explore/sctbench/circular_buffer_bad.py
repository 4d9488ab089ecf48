"""SCTBench circular_buffer_bad: a one-slot handshake over a log buffer whose loops
count turns that did nothing.

The original (SCTBench, concurrent-software-benchmarks/circular_buffer_bad.c): a
circular buffer of 10 chars (first, next, buffer_size = 10). t1 loops N = 7 times:
under mutex m, if `send` is set, insert i, clear send, set receive. t2 loops 7 times:
under m, if `receive` is set, assert that the removed element is i, clear receive, set
send. Both loops count every turn, also those that found their flag clear, so the
i of t2 drifts from the i of t1 as soon as a turn of one passes while the other has
not yet had its own: then t2 removes a value other than its i. In the default order
(t1's whole loop, then t2's) only 0 is inserted and removed, and nothing fails.

Model: buffer, first, next, buffer_size, send and receive are shared words; m is the
lock server's mutex 0; main initializes the log (initLog(10)), creates both threads
and joins them.
"""

from __future__ import annotations

from typing import Any

from _common import Program, unsigned, word

from l4sim import Kernel

BUFFER_MAX = 10
N = 7
ERROR = -1
BUFFER = word(0)                          # BUFFER_MAX words
FIRST, NEXT, BUFFER_SIZE = word(10), word(11), word(12)
SEND, RECEIVE = word(13), word(14)
M = 0

EXPECT = "bug"
BOUND = 1
DELAY_BOUND = 1
PCT_DEPTH = 3
RUNS = 200


async def remove_log_element(t: Any) -> int:
    first = await t.load_word(FIRST)
    if await t.load_word(NEXT) > 0 and first < await t.load_word(BUFFER_SIZE):
        await t.store_word(FIRST, first + 1)
        return await t.load_word(BUFFER + 8 * first)
    return ERROR


async def insert_log_element(t: Any, b: int) -> int:
    nxt, size = await t.load_word(NEXT), await t.load_word(BUFFER_SIZE)
    if nxt < size and size > 0:
        await t.store_word(BUFFER + 8 * nxt, unsigned(b))
        await t.store_word(NEXT, (nxt + 1) % size)
        return b
    return ERROR


async def t1(t: Any, prog: Program) -> None:
    for i in range(N):
        await prog.sync.lock(t, M)
        if await t.load_word(SEND):
            await insert_log_element(t, i)
            await t.store_word(SEND, 0)
            await t.store_word(RECEIVE, 1)
        await prog.sync.unlock(t, M)


async def t2(t: Any, prog: Program) -> None:
    for i in range(N):
        await prog.sync.lock(t, M)
        if await t.load_word(RECEIVE):
            got = await remove_log_element(t)
            assert got == i, f"removed {got} in turn {i}"
            await t.store_word(RECEIVE, 0)
            await t.store_word(SEND, 1)
        await prog.sync.unlock(t, M)


async def main(t: Any, prog: Program) -> None:
    await t.store_word(BUFFER_SIZE, BUFFER_MAX)    # initLog(10); first = next = 0
    await t.store_word(SEND, 1)
    for name in ("t1", "t2"):
        await prog.create(t, name)
    for name in ("t1", "t2"):
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    prog.thread(t1, prog, name="t1")
    prog.thread(t2, prog, name="t2")
    prog.main(main)
