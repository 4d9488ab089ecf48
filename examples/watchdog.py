"""A watchdog learns of a crash through exception IPC.

Workers run with the watchdog as their exception handler. When a worker's Python code
raises, the exception escapes its body; the kernel reports it to the watchdog (tag label
-5, trap 13, the code location of the raise in MR2) and then ends the worker. The
watchdog logs where it crashed and starts a replacement thread: the host callback it
uses for that stands for a task server's "create thread" (threads are created by the
host at this stage). The run goes on: a crash is never the end of the system.

    python examples/watchdog.py     # or: l4sim run examples/watchdog.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, Label, RunResult, Timeout

CRASH_AT = {"worker1": 3}      # worker1 divides by zero in round 3


async def worker(t: Any, rounds: int, done: list[str]) -> None:
    for i in range(rounds):
        await t.compute(1_000)
        if CRASH_AT.get(t.name) == i:
            _ = 1 // 0
        await t.sleep(Timeout.us(1))
    done.append(t.name)


async def watchdog(t: Any, k: Kernel, log: list[str], spawn: Any) -> None:
    r = await t.wait()
    while True:
        if r.ok and r.tag.label == Label.EXCEPTION:
            trap, where = r.words[0], k.code_location(r.words[2])
            log.append(f"thread {r.label} crashed (trap {trap}) at {where.rsplit('/', 1)[-1]}")
            spawn()
            r = await t.reply_and_wait(words=[])   # the worker is told, then it ends
        else:
            r = await t.wait()


def build(k: Kernel) -> None:
    task = k.new_task("app")
    ex: dict[str, Any] = {"log": [], "done": []}
    k.example = ex  # type: ignore[attr-defined]

    def spawn() -> None:
        task.new_thread(worker, 5, ex["done"], name="replacement", exc_handler=ex["dog"])

    ex["dog"] = task.new_thread(watchdog, k, ex["log"], spawn, name="watchdog", priority=200)
    for name in ("worker0", "worker1"):
        task.new_thread(worker, 5, ex["done"], name=name, exc_handler=ex["dog"])


def report(k: Kernel, result: RunResult) -> None:
    ex = k.example  # type: ignore[attr-defined]
    for line in ex["log"]:
        print(line)
    print("finished:", sorted(ex["done"]))
    print("died:", [(th.name, why) for th, why in result.died])
    assert len(ex["log"]) == 1 and "crashed (trap 13) at watchdog.py" in ex["log"][0]
    assert sorted(ex["done"]) == ["replacement", "worker0"]
    assert [(th.name, why) for th, why in result.died] == [
        ("worker1", "ZeroDivisionError: integer division or modulo by zero")]


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
