"""SCTBench account_bad: a bank account, and a checker whose expectation is wrong.

The original (SCTBench, concurrent-software-benchmarks/account_bad.c): main sets x=1,
y=2, z=4, balance=x and creates three threads, the checker first: `deposit` adds y to
the balance and sets deposit_done, `withdraw` subtracts z and sets withdraw_done, each
under the mutex m; the checker, under m, asserts balance == (x - y) - z once both are
done. That is wrong (the balance is then x + y - z), so the bug shows whenever the
checker runs after both others: it is created first and runs first, so the scheduler
has to hold it back (the paper counts main's exit as a free choice; here a thread's
first step after pthread_create is the explorer's to delay).

Model: balance and the two flags are words of the application's memory, the mutex is
the lock server's mutex 0, pthread_create is main's start message (see `_common`).
main does not join, as in the original; its threads go on after it returns.
"""

from __future__ import annotations

from typing import Any

from _common import Program, signed, unsigned, word

from l4sim import Kernel

X, Y, Z = 1, 2, 4
BALANCE, DEPOSIT_DONE, WITHDRAW_DONE = word(0), word(1), word(2)
M = 0

EXPECT = "bug"
BOUND = 1
DELAY_BOUND = 1
PCT_DEPTH = 3
RUNS = 200


async def deposit(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, M)
    balance = signed(await t.load_word(BALANCE))
    await t.store_word(BALANCE, unsigned(balance + Y))
    await t.store_word(DEPOSIT_DONE, 1)
    await prog.sync.unlock(t, M)


async def withdraw(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, M)
    balance = signed(await t.load_word(BALANCE))
    await t.store_word(BALANCE, unsigned(balance - Z))
    await t.store_word(WITHDRAW_DONE, 1)
    await prog.sync.unlock(t, M)


async def check_result(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, M)
    if await t.load_word(DEPOSIT_DONE) and await t.load_word(WITHDRAW_DONE):
        balance = signed(await t.load_word(BALANCE))
        assert balance == (X - Y) - Z, f"balance is {balance}, the checker expects {(X - Y) - Z}"
    await prog.sync.unlock(t, M)


async def main(t: Any, prog: Program) -> None:
    await t.store_word(BALANCE, X)
    for name in ("check_result", "deposit", "withdraw"):
        await prog.create(t, name)


def build(k: Kernel) -> None:
    prog = Program(k)
    for body in (check_result, deposit, withdraw):
        prog.thread(body, prog, name=body.__name__, joined=False)
    prog.main(main)
