"""A semaphore server with a lost wake-up (the planted bug; its twin is
semaphore_ok.py).

The server keeps a count and a FIFO of waiters. A DOWN that finds the count at zero is
answered at once with BLOCKED, and the client then waits for the server's wake-up in a
separate closed receive; an UP with a waiter sends it the wake-up with a zero timeout
(a server must never block on a client).

The bug: between the reply BLOCKED and the client's receive, the client is not
waiting. If the UP comes in that gap, the zero-timeout wake-up finds nobody receiving
and fails (the server ignores the error: it believes the waiter is waiting), and the
client then waits forever for a wake-up that was already sent. The kernel's policy
runs the client on into its receive right after the reply, so a plain run passes; one
preemption of the client at the kernel exit of its DOWN loses the wake-up.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "bug"
BOUND = 2

DOWN, UP, WAKE = 1, 2, 3
OK, BLOCKED = 0, 1
WAITERS = 2


async def sem_server(t: Any, client_sel: dict[int, int]) -> None:
    """`client_sel`: a client's tid (the label of its IPC) -> this task's capability
    to the client's thread (boot configuration, read only)."""
    count = 0
    waiters: deque[int] = deque()
    r = await t.wait()
    while True:
        answer = OK
        if not r.ok:
            r = await t.wait()
            continue
        if r.tag.label == DOWN:
            if count:
                count -= 1
            else:
                waiters.append(r.label)
                answer = BLOCKED          # the client will wait for WAKE
        elif r.tag.label == UP:
            if waiters:
                # BUG: the waiter may not be receiving yet; the failed send is dropped.
                await t.send(client_sel[waiters.popleft()], label=WAKE,
                             send_timeout=Timeout.zero())
            else:
                count += 1
        r = await t.reply_and_wait(words=[answer])


async def down(t: Any, sem: int) -> None:
    r = await t.call(sem, label=DOWN)
    assert r.ok, f"DOWN failed: {r.error.name}"
    if r.words[0] == BLOCKED:
        r = await t.receive(sem)      # the gap: a WAKE sent before this is lost
        assert r.ok and r.tag.label == WAKE, f"no wake-up: {r!r}"


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
    print(f"{WAITERS} waiters woken by {WAITERS} UPs (this schedule missed the gap)")
