"""A POSIX message queue server: priorities, a full queue, a timed receive, notify.

A sender fills a queue of capacity 4 with messages of different priorities; the
receiver, started later, gets them highest priority first and in order of arrival
within one priority. A fifth send waits until the receiver makes room. A notifier
thread (mq_notify with SIGEV_THREAD, in effect) is told when a message arrives in the
empty queue. Then the error cases: a message longer than the queue's msgsize
(EMSGSIZE), a non-blocking receive on the empty queue (EAGAIN), a timed one
(ETIMEDOUT).

    l4sim run examples/posix/mqueue.py
"""

from __future__ import annotations

import errno
import os
from typing import Any

from l4sim import Kernel, RunResult, Timeout
from l4sim.lib.boot import System
from l4sim.lib.framework import Env, PosixError
from l4sim.lib.mqueue import MessageQueue

MESSAGES = [(b"low-1", 1), (b"high-1", 7), (b"mid", 4), (b"low-2", 1), (b"high-2", 7)]


async def sender(t: Any, env: Env, ex: dict[str, Any]) -> None:
    q = await MessageQueue.open(t, env, "/jobs", os.O_CREAT | os.O_WRONLY, maxmsg=4, msgsize=32)
    for data, prio in MESSAGES:
        await q.send(data, prio)
        ex["sent"].append((t.now, data))
    try:
        await q.send(b"x" * 33)
    except PosixError as exc:
        ex["errors"]["send too long"] = exc.errno
    await t.sleep(Timeout.us(300))
    await q.send(b"wake the notifier", 0)


async def receiver(t: Any, env: Env, ex: dict[str, Any]) -> None:
    await t.sleep(Timeout.us(100))
    q = await MessageQueue.open(t, env, "/jobs", os.O_RDONLY)
    for _ in MESSAGES:
        ex["received"].append(await q.receive())
    try:
        await q.receive(timeout=Timeout.us(20))
    except PosixError as exc:
        ex["errors"]["timed receive"] = exc.errno
    q.nonblock = True
    try:
        await q.receive()
    except PosixError as exc:
        ex["errors"]["non-blocking receive"] = exc.errno


async def notifier(t: Any, env: Env, ex: dict[str, Any]) -> None:
    await t.sleep(Timeout.us(250))
    q = await MessageQueue.open(t, env, "/jobs", os.O_RDONLY)
    await q.notify_wait()
    ex["notified_at"] = t.now
    ex["after_notify"] = await q.receive()


def build(k: Kernel) -> None:
    system = System(k, servers=("mq",))
    ex: dict[str, Any] = {"sent": [], "received": [], "errors": {}}
    k.example = ex  # type: ignore[attr-defined]
    system.process("sender").thread(sender, ex, name="sender")
    system.process("receiver").thread(receiver, ex, name="receiver")
    system.process("notifier").thread(notifier, ex, name="notifier")


def report(k: Kernel, result: RunResult) -> None:
    ex = k.example  # type: ignore[attr-defined]
    for time, data in ex["sent"]:
        print(f"  sent {data!r:<10} done at {time:>8} cycles")
    print("received (highest priority first, FIFO within one):", ex["received"])
    print("errors:", {k: errno.errorcode[v] for k, v in ex["errors"].items()})
    print("notifier woke at", ex["notified_at"], "and read", ex["after_notify"])
    want = sorted(MESSAGES, key=lambda m: -m[1])
    assert ex["received"] == want, ex["received"]
    assert ex["sent"][4][0] > ex["sent"][3][0] + 100_000    # the fifth send waited for room
    assert ex["errors"] == {"send too long": errno.EMSGSIZE, "timed receive": errno.ETIMEDOUT,
                            "non-blocking receive": errno.EAGAIN}
    assert ex["after_notify"] == (b"wake the notifier", 0)
    assert result.reason == "done" and not result.died, result


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
