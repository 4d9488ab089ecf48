"""Mutual exclusion through a synchronization thread, as the lecture has it, and a
condition variable: the sync server is the synchronization thread.

Workers call LOCK before the critical section (the server replies when they may
enter, and keeps the others' calls waiting) and UNLOCK after it (the server then
replies to the next waiting worker). Inside, each increments a shared counter
non-atomically, sleeping in the middle: no update is lost. Then a consumer waits on a
condition variable until a producer has set a flag, the classic `while not ready:
wait(cond, mutex)`.

    l4sim run examples/posix/mutex.py
"""

from __future__ import annotations

import itertools
from typing import Any

from l4sim import Kernel, RunResult, Timeout
from l4sim.lib.boot import System
from l4sim.lib.framework import Env
from l4sim.lib.sync import Cond, Mutex

WORKERS = [("w1", 100), ("w2", 100), ("w3", 110), ("w4", 90)]
ROUNDS = 3


async def worker(t: Any, env: Env, shared: dict[str, Any]) -> None:
    m = await Mutex.open(t, env, "counter")
    for _ in range(ROUNDS):
        await m.lock()
        entered = t.now
        value = shared["counter"]
        await t.sleep(Timeout.us(3))          # the others try to enter meanwhile
        shared["counter"] = value + 1
        shared["sections"].append((entered, t.now))
        await m.unlock()
        await t.compute(500)


async def consumer(t: Any, env: Env, shared: dict[str, Any]) -> None:
    m, c = await Mutex.open(t, env, "flag"), await Cond.open(t, env, "ready")
    await m.lock()
    while not shared["ready"]:
        shared["waits"] += 1
        await c.wait(m)
    shared["consumed_at"] = t.now
    await m.unlock()


async def producer(t: Any, env: Env, shared: dict[str, Any]) -> None:
    await t.sleep(Timeout.us(100))
    m, c = await Mutex.open(t, env, "flag"), await Cond.open(t, env, "ready")
    await m.lock()
    shared["ready"] = True
    shared["produced_at"] = t.now
    await c.signal()
    await m.unlock()


def build(k: Kernel) -> None:
    system = System(k, servers=("sync",))
    shared: dict[str, Any] = {"counter": 0, "sections": [], "ready": False, "waits": 0}
    k.example = {"shared": shared, "system": system}  # type: ignore[attr-defined]
    for name, prio in WORKERS:
        system.process(name).thread(worker, shared, name=name, priority=prio)
    system.process("consumer").thread(consumer, shared, name="consumer")
    system.process("producer").thread(producer, shared, name="producer")


def report(k: Kernel, result: RunResult) -> None:
    ex = k.example  # type: ignore[attr-defined]
    shared = ex["shared"]
    sections = sorted(shared["sections"])
    overlaps = sum(1 for a, b in itertools.pairwise(sections) if b[0] < a[1])
    handoffs = ex["system"].servers["sync"].handoffs
    print(f"counter {shared['counter']} (expected {len(WORKERS) * ROUNDS}); overlapping "
          f"sections: {overlaps}; unlocks that replied to a waiting worker: {handoffs}")
    print(f"consumer waited {shared['waits']} time(s) on the condition; produced at "
          f"{shared['produced_at']}, consumed at {shared['consumed_at']} cycles")
    assert shared["counter"] == len(WORKERS) * ROUNDS and overlaps == 0
    assert handoffs > 0
    assert shared["waits"] == 1 and shared["consumed_at"] > shared["produced_at"]
    assert result.reason == "done" and not result.died, result


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
