"""SCTBench bluetooth_driver_bad: a driver stopped while an I/O is starting (the
simplified Windows Bluetooth driver of Qadeer and Wu's KISS).

The original (SCTBench, concurrent-software-benchmarks/bluetooth_driver_bad.c): the
device counts its pending I/Os (pendingIo, 1 for the device itself). main creates the
stopper and then runs an I/O itself: BCSP_IoIncrement returns -1 if stoppingFlag is set,
else increments pendingIo (in an atomic section); the I/O's work asserts the driver is
not `stopped`; BCSP_IoDecrement decrements pendingIo and sets stoppingEvent when it
reaches 0. The stopper sets stoppingFlag, decrements, and if stoppingEvent is set,
marks the driver stopped. The bug: the check of stoppingFlag and the increment are not
one atomic step. If main checks the flag (clear), the stopper then runs to its end
(pendingIo 1 -> 0: stopped), and main goes on, its work finds the driver stopped. One
preemption, of main between its check and its increment.

Model: the device's fields and `stopped` are shared words; ESBMC's atomic sections are
a mutex of the lock server (mutex 0, one for the program, as SCTBench's common.inc
provides; we could not read that file, so this is our reading of it). main joins the
stopper at the end, as the original does.
"""

from __future__ import annotations

from typing import Any

from _common import Program, signed, unsigned, word

from l4sim import Kernel

PENDING_IO, STOPPING_FLAG, STOPPING_EVENT, STOPPED = word(0), word(1), word(2), word(3)
ATOMIC = 0

EXPECT = "bug"
BOUND = 1
DELAY_BOUND = 1
PCT_DEPTH = 3
RUNS = 200


async def io_increment(t: Any, prog: Program) -> int:
    if await t.load_word(STOPPING_FLAG):
        return -1
    await prog.sync.lock(t, ATOMIC)
    await t.store_word(PENDING_IO, unsigned(signed(await t.load_word(PENDING_IO)) + 1))
    await prog.sync.unlock(t, ATOMIC)
    return 0


async def io_decrement(t: Any, prog: Program) -> None:
    await prog.sync.lock(t, ATOMIC)
    pending = signed(await t.load_word(PENDING_IO)) - 1
    await t.store_word(PENDING_IO, unsigned(pending))
    await prog.sync.unlock(t, ATOMIC)
    if pending == 0:
        await t.store_word(STOPPING_EVENT, 1)


async def pnp_stop(t: Any, prog: Program) -> None:
    await t.store_word(STOPPING_FLAG, 1)
    await io_decrement(t, prog)
    if await t.load_word(STOPPING_EVENT):
        await t.store_word(STOPPED, 1)     # release the device's resources


async def main(t: Any, prog: Program) -> None:
    await t.store_word(PENDING_IO, 1)
    await prog.create(t, "stopper")
    # BCSP_PnpAdd: one I/O
    if await io_increment(t, prog) == 0:
        assert not await t.load_word(STOPPED), "an I/O runs on a stopped driver"
    await io_decrement(t, prog)
    await prog.join(t, "stopper")


def build(k: Kernel) -> None:
    prog = Program(k)
    prog.thread(pnp_stop, prog, name="stopper")
    prog.main(main)
