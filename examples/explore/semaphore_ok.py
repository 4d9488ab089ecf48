"""A semaphore server without the lost wake-up (the correct twin of semaphore_bug.py).

A DOWN that finds the count at zero is not answered: the server keeps the waiter in a
FIFO and goes back to its open wait, and the client stays in its call's receive phase,
closed on the server. An UP with a waiter completes that call by a zero-timeout send to
the waiter's thread. The switch from send to receive inside a call is atomic, so the
waiter is receiving from the moment the server has its DOWN: there is no gap for the
wake-up to fall into. Should the send fail anyway (the waiter was deleted or cancelled)
the unit goes back to the count, so it is not lost either.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "clean"
BOUND = 2

DOWN, UP, WAKE = 1, 2, 3
OK = 0
WAITERS = 2


async def sem_server(t: Any, client_sel: dict[int, int]) -> None:
    """`client_sel`: a client's tid (the label of its IPC) -> this task's capability
    to the client's thread (boot configuration, read only)."""
    count = 0
    waiters: deque[int] = deque()
    r = await t.wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        if r.tag.label == DOWN and not count:
            waiters.append(r.label)       # no reply: its call waits for the wake-up
            r = await t.wait()
            continue
        if r.tag.label == DOWN:
            count -= 1
        elif r.tag.label == UP:
            count += 1
            while count and waiters:      # the waiter is in its call's receive phase
                woken = await t.send(client_sel[waiters.popleft()], label=WAKE,
                                     words=[OK], send_timeout=Timeout.zero())
                if woken.ok:              # a failed wake-up (waiter gone) keeps the unit
                    count -= 1
        r = await t.reply_and_wait(words=[OK])


async def down(t: Any, sem: int) -> None:
    r = await t.call(sem, label=DOWN)   # answered at once or by the wake-up
    assert r.ok and r.words[0] == OK, f"DOWN failed: {r!r}"


async def waiter(t: Any, sem: int) -> str:
    await down(t, sem)
    return "passed"


async def poster(t: Any, sem: int) -> int:
    for _ in range(WAITERS):
        r = await t.call(sem, label=UP)
        assert r.ok, f"UP failed: {r.error.name}"
    return WAITERS


def build(k: Kernel) -> None:
    client_sel: dict[int, int] = {}
    stask = k.new_task("sem")
    srv = stask.new_thread(sem_server, client_sel, name="sem", priority=120)
    for i in range(1, WAITERS + 1):
        task = k.new_task(f"waiter{i}")
        th = task.new_thread(waiter, task.add_cap(srv), name=f"waiter{i}")
        client_sel[th.tid] = stask.add_cap(th)
    task = k.new_task("poster")
    task.new_thread(poster, task.add_cap(srv), name="poster")


def check(k: Kernel, result: RunResult) -> None:
    stuck = [th.name for th in k.threads.values() if th.name != "sem" and not th.returned]
    assert not stuck, f"clients that never finished: {stuck}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    print(f"{WAITERS} waiters woken by {WAITERS} UPs")
