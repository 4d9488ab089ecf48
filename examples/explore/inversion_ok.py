"""The same priority inversion, bounded (the correct twin of inversion_bug.py).

The same threads, times and deadline; the counter is no longer updated by its users
under a lock, but by a resource server that owns it: `low` and `high` call it with
UPDATE, and it does the rounds of read, work, write itself. The server runs at a low
priority, but the kernel's priority inheritance lends a blocked caller's priority to the
server it waits for: when `high` calls while the server still works for `low`, the
server goes on at `high`'s priority, the hog cannot preempt it, and `high` waits at most
for the rest of `low`'s update and its own, in every interleaving of `low` and `other`.
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "clean"
BOUND = 2

COUNTER = 0x100000          # the counter, in the server's memory
UPDATE = 1
LOW, MEDIUM, HIGH = 10, 50, 200
ROUNDS = 4                  # the update under the lock: rounds of read, work, write
ROUND_CYCLES = 2_500
OTHER_ARRIVES = 3_000       # `other` wakes while `low` holds the lock
OTHER_CYCLES = 15_000       # what `other` computes
HIGH_ARRIVES = 20_000
HOG_ARRIVES = 21_000
HOG_CYCLES = 200_000
DEADLINE = 25_000           # high's bound from asking to done (two updates and change)


async def counter_server(t: Any) -> None:
    """Owns the counter (in its own memory) and updates it for its callers."""
    r = await t.wait()
    while True:
        if not r.ok or r.tag.label != UPDATE:
            r = await t.wait()
            continue
        for _ in range(ROUNDS):
            value = await t.load_word(COUNTER)
            await t.compute(ROUND_CYCLES)
            await t.store_word(COUNTER, value + 1)
        r = await t.reply_and_wait(words=[await t.load_word(COUNTER)])


async def update(t: Any, srv: int) -> None:
    r = await t.call(srv, label=UPDATE)
    assert r.ok, f"UPDATE failed: {r.error.name}"


async def low(t: Any, srv: int) -> None:
    await update(t, srv)


async def other(t: Any) -> None:
    await t.sleep(Timeout.at(OTHER_ARRIVES))
    await t.compute(OTHER_CYCLES)


async def high(t: Any, srv: int) -> int:
    await t.sleep(Timeout.at(HIGH_ARRIVES))
    start = t.now
    await update(t, srv)
    took = t.now - start
    assert took <= DEADLINE, f"high missed its deadline: {took} cycles > {DEADLINE}"
    return took


async def hog(t: Any) -> None:
    await t.sleep(Timeout.at(HOG_ARRIVES))
    await t.compute(HOG_CYCLES)


def build(k: Kernel) -> None:
    stask = k.new_task("counter")
    srv = stask.new_thread(counter_server, name="counter", priority=LOW)
    app = k.new_task("app")
    sel = app.add_cap(srv)
    app.new_thread(low, sel, name="low", priority=LOW)
    app.new_thread(other, name="other", priority=LOW)
    app.new_thread(high, sel, name="high", priority=HIGH)
    app.new_thread(hog, name="hog", priority=MEDIUM)


def check(k: Kernel, result: RunResult) -> None:
    unfinished = [th.name for th in k.threads.values()
                  if th.name in ("low", "other", "high", "hog") and not th.returned]
    assert not unfinished, f"threads that did not finish: {unfinished}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    h = next(th for th in k.threads.values() if th.name == "high")
    print(f"high updated the counter in {h.result} cycles (deadline {DEADLINE})")
