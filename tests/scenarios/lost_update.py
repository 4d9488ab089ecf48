"""Two threads of one task increment a shared counter without a lock: read, compute,
write back. A preemption between one thread's read and its write loses an update."""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult

COUNTER = 0x10000
ROUNDS = 2
THREADS = 2
CPUS = 1
BOUND = 2
EXPECT = "bug"


async def worker(t: Any) -> int:
    for _ in range(ROUNDS):
        value = await t.load_word(COUNTER)
        await t.compute(50)
        await t.store_word(COUNTER, value + 1)
    return ROUNDS


def build(k: Kernel) -> None:
    task = k.new_task("app")
    for i in range(THREADS):
        task.new_thread(worker, name=f"w{i}", priority=100, cpu=i % len(k.cpus))


def read_word(k: Kernel, name: str, addr: int) -> int:
    """A word of the task that thread `name` runs in, read from the host."""
    task = next(th for th in k.threads.values() if th.name == name).task
    m = task.space.lookup(addr)
    assert m is not None, f"{addr:#x} is not mapped"
    at = m.phys + addr - m.base
    return int.from_bytes(bytes(k.phys.view[at:at + 8]), "little")


def check(k: Kernel, result: RunResult) -> None:
    value = read_word(k, "w0", COUNTER)
    assert value == ROUNDS * THREADS, f"counter is {value}, expected {ROUNDS * THREADS}"
