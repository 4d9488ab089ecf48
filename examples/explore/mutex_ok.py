"""Mutual exclusion with the lecture's synchronization thread (the correct twin of
mutex_bug.py).

The same two workers and the same critical section (write OWNER, pause, assert OWNER is
still mine, count DONE), entered through a synchronization thread instead of a flag:

    worker: call(sync, ENTER)  ... critical section ...  call(sync, LEAVE)
    sync:   wait()               # the next ENTER
            reply()              # grant
            receive(holder)      # closed: only the holder's LEAVE; other ENTERs queue
            reply()              # acknowledge; back to the open wait

The decision "the section is free, take it" is made by one thread, so no interleaving of
the workers can split it. The explorer runs every schedule with up to two preemptions
and finds no failure.
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "clean"
BOUND = 2

OWNER = 0x100000            # the id of the worker inside
DONE = OWNER + 8            # critical sections completed (updated inside)
WORKERS = 2
ROUNDS = 2                  # critical sections per worker
ENTER, LEAVE = 1, 2


async def sync_thread(t: Any, holder_sel: dict[int, int]) -> None:
    """`holder_sel`: a worker's tid (the label of its IPC) -> this task's capability to
    it, for the closed receive (boot configuration, read only)."""
    while True:
        r = await t.wait()
        if not r.ok or r.tag.label != ENTER:
            await t.reply(words=[1])       # a stray LEAVE: refuse it
            continue
        holder = r.label
        if not (await t.reply(words=[0])).ok:
            continue                       # the caller vanished: the section stays free
        while True:
            r = await t.receive(holder_sel[holder])
            if not r.ok:
                break                      # the holder is gone: free the section
            ok = r.tag.label == LEAVE
            await t.reply(words=[0 if ok else 1])
            if ok:
                break


async def worker(t: Any, sync: int, me: int) -> int:
    for _ in range(ROUNDS):
        r = await t.call(sync, label=ENTER)
        assert r.ok and r.words[0] == 0, f"ENTER refused: {r!r}"
        await t.store_word(OWNER, me)
        await t.sleep(Timeout.us(2))     # inside: the other worker tries to enter
        owner = await t.load_word(OWNER)
        assert owner == me, f"worker {me} and worker {owner} are both in the critical section"
        await t.store_word(DONE, await t.load_word(DONE) + 1)
        r = await t.call(sync, label=LEAVE)
        assert r.ok and r.words[0] == 0, f"LEAVE refused: {r!r}"
    return me


def build(k: Kernel) -> None:
    holder_sel: dict[int, int] = {}
    stask = k.new_task("sync")
    sync = stask.new_thread(sync_thread, holder_sel, name="sync", priority=120)
    task = k.new_task("workers")
    sel = task.add_cap(sync)
    for me in range(1, WORKERS + 1):
        w = task.new_thread(worker, sel, me, name=f"w{me}")
        holder_sel[w.tid] = stask.add_cap(w)


def check(k: Kernel, result: RunResult) -> None:
    done = sorted(th.result for th in k.threads.values() if th.returned)
    assert done == list(range(1, WORKERS + 1)), f"workers that finished: {done}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    print(f"{WORKERS} workers passed the synchronization thread")
