"""A counting semaphore server: at most two of four workers inside at once.

Each worker opens the named semaphore "/slots" (created with the value 2) through the
name server, and around its work does `await sem.wait()` ... `await sem.post()`. A
worker that finds no unit waits in the server (its call is answered when a unit is
posted). Then the error cases: trywait on an empty semaphore (EAGAIN), timedwait that
expires (ETIMEDOUT), opening a name that does not exist (ENOENT).

    l4sim run examples/posix/semaphore.py
"""

from __future__ import annotations

import errno
import os
from typing import Any

from l4sim import Kernel, RunResult, Timeout
from l4sim.lib.boot import System
from l4sim.lib.framework import Env, PosixError
from l4sim.lib.semaphore import Semaphore

WORKERS = 4
SLOTS = 2


async def worker(t: Any, env: Env, log: list[tuple[int, str, str]]) -> None:
    sem = await Semaphore.open(t, env, "/slots", os.O_CREAT, SLOTS)
    await sem.wait()
    log.append((t.now, t.name, "in"))
    await t.compute(20_000)
    await t.sleep(Timeout.us(20))
    log.append((t.now, t.name, "out"))
    await sem.post()


async def errors(t: Any, env: Env, seen: dict[str, int]) -> None:
    await t.sleep(Timeout.us(500))             # after the workers
    sem = await Semaphore.open(t, env, "/empty", os.O_CREAT | os.O_EXCL, 0)
    for name, op in (("trywait", sem.trywait()), ("timedwait", sem.timedwait(Timeout.us(10)))):
        try:
            await op
        except PosixError as exc:
            seen[name] = exc.errno
    try:
        await Semaphore.open(t, env, "/missing")
    except PosixError as exc:
        seen["open"] = exc.errno
    seen["value"] = await (await Semaphore.open(t, env, "/slots")).value()


def build(k: Kernel) -> None:
    system = System(k, servers=("sem",))
    log: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    k.example = {"log": log, "seen": seen}  # type: ignore[attr-defined]
    for i in range(WORKERS):
        system.process(f"worker{i}").thread(worker, log, name=f"w{i}")
    system.process("checker").thread(errors, seen, name="checker")


def max_inside(log: list[tuple[int, str, str]]) -> int:
    inside = best = 0
    for _time, _who, what in sorted(log, key=lambda e: (e[0], e[2] == "in")):
        inside += 1 if what == "in" else -1
        best = max(best, inside)
    return best


def report(k: Kernel, result: RunResult) -> None:
    ex = k.example  # type: ignore[attr-defined]
    for time, who, what in ex["log"]:
        print(f"  {time:>8}  {who:<3} {what}")
    print(f"at most {max_inside(ex['log'])} inside (the semaphore's value was {SLOTS});",
          "errors:", {k: errno.errorcode[v] for k, v in ex["seen"].items() if k != "value"},
          "value at the end:", ex["seen"]["value"])
    assert max_inside(ex["log"]) == SLOTS
    assert len(ex["log"]) == 2 * WORKERS
    assert ex["seen"] == {"trywait": errno.EAGAIN, "timedwait": errno.ETIMEDOUT,
                          "open": errno.ENOENT, "value": SLOTS}
    assert result.reason == "done" and not result.died, result


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
