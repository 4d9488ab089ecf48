"""Mutual exclusion without the synchronization thread: a test-then-set flag in shared
memory (the planted bug; its twin is mutex_ok.py).

Two workers of one task share a page. Each enters its critical section by the
protocol "wait until FLAG is 0, then set it to 1", and leaves by storing 0. Inside it
writes its own id into OWNER, pauses (a sleep: the other worker runs and tries to
enter, as in the lecture's example), and asserts that OWNER is still its id.

The test and the set are two memory operations, not one: a worker preempted between
the load that saw FLAG = 0 and the store of 1 lets the other worker also see 0, and
both are inside. The kernel's own policy never preempts there (a worker keeps the CPU
for its whole timeslice), so a plain `l4sim run` passes; the explorer finds the race
with one preemption.

    l4sim run examples/explore/mutex_bug.py       # passes: the race is not hit
    l4sim explore examples/explore/mutex_bug.py   # finds it at bound 1
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "bug"
BOUND = 2

FLAG = 0x100000             # 1 while a worker is inside
OWNER = FLAG + 8            # the id of the worker inside
DONE = FLAG + 16            # critical sections completed (updated inside)
WORKERS = 2
ROUNDS = 2                  # critical sections per worker


async def worker(t: Any, me: int) -> int:
    for _ in range(ROUNDS):
        # Entry: a spin on the flag; the back-off sleeps so that the holder can run.
        while await t.load_word(FLAG) != 0:
            await t.sleep(Timeout.us(1))
        await t.store_word(FLAG, 1)      # BUG: not atomic with the load that saw 0
        await t.store_word(OWNER, me)
        await t.sleep(Timeout.us(2))     # inside: the other worker tries to enter
        owner = await t.load_word(OWNER)
        assert owner == me, f"worker {me} and worker {owner} are both in the critical section"
        await t.store_word(DONE, await t.load_word(DONE) + 1)
        await t.store_word(FLAG, 0)      # exit
    return me


def build(k: Kernel) -> None:
    task = k.new_task("workers")
    for me in range(1, WORKERS + 1):
        task.new_thread(worker, me, name=f"w{me}")


def check(k: Kernel, result: RunResult) -> None:
    assert result.reason == "done", result.reason
    done = sorted(th.result for th in k.threads.values() if th.returned)
    assert done == list(range(1, WORKERS + 1)), f"workers that finished: {done}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    print(f"{WORKERS} workers passed the flag protocol (this schedule missed the race)")
