"""SCTBench queue_bad: a producer/consumer handshake over a queue, where the producer
puts one element in before the handshake starts.

The original (SCTBench, concurrent-software-benchmarks/queue_bad.c; SV-COMP's
queue_false-unreach-call with its nondeterministic values made 0, 1, 2, ...): a queue
of SIZE = 20 ints with head, tail and amount. t1, under mutex m, enqueues 0 and records
it as stored_elements[0]; then, for i in 0..SIZE-2, under m, if enqueue_flag is set it
enqueues the next value, records it in stored_elements[i+1] and passes the turn
(enqueue_flag clear, dequeue_flag set). t2, for i in 0..SIZE-1, under m, if
dequeue_flag is set, asserts that the dequeued element is stored_elements[i] and passes
the turn back. Both loops count the turns that found their flag clear, so as soon as t2
spends a turn before t1 has passed it one, t2's i runs ahead of the queue and the
element it dequeues is not stored_elements[i]. In the default order (t1's loop whole,
then t2's) t2 dequeues element 0 in turn 0 and nothing fails.

Model: the queue, stored_elements and the flags are shared words; m is the lock
server's mutex 0; main initializes the flags and the queue, creates both and joins.
"""

from __future__ import annotations

from typing import Any

from _common import Program, word

from l4sim import Kernel

SIZE = 20
ELEMENT = word(0)                         # SIZE + 1 words: index SIZE is reachable
HEAD, TAIL, AMOUNT = word(21), word(22), word(23)
STORED = word(24)                         # SIZE words
ENQUEUE_FLAG, DEQUEUE_FLAG = word(44), word(45)
M = 0

EXPECT = "bug"
BOUND = 1
DELAY_BOUND = 1
PCT_DEPTH = 3
RUNS = 200


async def enqueue(t: Any, x: int) -> None:
    tail = await t.load_word(TAIL)
    await t.store_word(ELEMENT + 8 * tail, x)
    await t.store_word(AMOUNT, await t.load_word(AMOUNT) + 1)
    await t.store_word(TAIL, 1 if tail == SIZE else tail + 1)


async def dequeue(t: Any) -> int:
    head = await t.load_word(HEAD)
    x: int = await t.load_word(ELEMENT + 8 * head)
    await t.store_word(AMOUNT, await t.load_word(AMOUNT) - 1)
    await t.store_word(HEAD, 1 if head == SIZE else head + 1)
    return x


async def t1(t: Any, prog: Program) -> None:
    s = prog.sync
    value = 0
    await s.lock(t, M)
    await enqueue(t, value)
    await t.store_word(STORED, value)
    await s.unlock(t, M)
    for i in range(SIZE - 1):
        await s.lock(t, M)
        if await t.load_word(ENQUEUE_FLAG):
            value += 1
            await enqueue(t, value)
            await t.store_word(STORED + 8 * (i + 1), value)
            await t.store_word(ENQUEUE_FLAG, 0)
            await t.store_word(DEQUEUE_FLAG, 1)
        await s.unlock(t, M)


async def t2(t: Any, prog: Program) -> None:
    s = prog.sync
    for i in range(SIZE):
        await s.lock(t, M)
        if await t.load_word(DEQUEUE_FLAG):
            got, stored = await dequeue(t), await t.load_word(STORED + 8 * i)
            assert got == stored, f"turn {i} dequeued {got}, stored_elements[{i}] is {stored}"
            await t.store_word(DEQUEUE_FLAG, 0)
            await t.store_word(ENQUEUE_FLAG, 1)
        await s.unlock(t, M)


async def main(t: Any, prog: Program) -> None:
    await t.store_word(ENQUEUE_FLAG, 1)       # head = tail = amount = 0: zeroed memory
    for name in ("t1", "t2"):
        await prog.create(t, name)
    for name in ("t1", "t2"):
        await prog.join(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    prog.thread(t1, prog, name="t1")
    prog.thread(t2, prog, name="t2")
    prog.main(main)
