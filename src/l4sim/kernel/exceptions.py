"""Exception IPC and preemption IPC: the kernel speaking a protocol to user servers.

A CPU exception of a thread — `t.raise_exception(trap, code)`, or a Python exception
escaping its body — becomes a call to the thread's exception handler on the thread's
behalf: tag label -5, MR0 = trap, MR1 = error code, MR2 = code location (see
`Kernel.code_ip`), never/never timeouts. For a raised trap the handler's reply resumes
the thread and its words are the result of the faulting operation, so a handler can
emulate an instruction. An escaped Python exception ends the thread once the handler has
been told. With no handler (or a handler that cannot be reached) the thread is killed,
the reason in the run result; the run goes on.

A thread with a preempter reports each preemption to it: tag label -3, MR0 = the time,
MR1 = the CPU, delivered like a send with a zero timeout (a preempter that is not
waiting misses the report).
"""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .abi import NEVER, IpcError, Label
from .errors import KernelInvariantError
from .ipc import OP_CALL, ipc
from .lifecycle import kill as kill_thread
from .result import IpcResult
from .states import DEAD, RECEIVE_WAIT
from .waits import wake_waiter

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Body, Thread

# An escaped Python exception is reported as x86's general-protection fault.
TRAP_PYTHON_EXCEPTION = 13
EXCEPTION_TAG = Label.EXCEPTION << 16 | 3
PREEMPTION_TAG = Label.PREEMPTION << 16 | 2


async def exception_ipc(k: Kernel, th: Thread, trap: int, code: int, ip: int,
                        kill: bool = True) -> IpcResult | None:
    """Call `th`'s exception handler with the exception; the handler's reply. When no
    handler takes it, `th` is killed (`kill`), or None is returned."""
    handler = th.exc_handler
    where = k.code_location(ip)
    if handler is None or handler.state & DEAD or not handler.alive:
        if not kill:
            return None
        raise kill_thread(k, th, f"exception trap {trap} (code {code:#x}) at {where}, "
                         "and no exception handler")
    mr = th.mr
    mr[0] = trap
    mr[1] = code
    mr[2] = ip
    k.record(th, "exception", f"trap {trap} code {code:#x} at {where} -> {handler.name}")
    r = await ipc(k, th, OP_CALL, 0, EXCEPTION_TAG, NEVER, NEVER, dest=handler)
    if r.error:
        if not kill:
            return None
        raise kill_thread(k, th, f"exception trap {trap} (code {code:#x}) at {where}: the exception "
                           f"IPC to {handler.name} failed with {r.error.name}")
    return r


def code_ip_of_frame(k: Kernel, depth: int) -> int:
    """The code location of the caller `depth` frames up."""
    frame = sys._getframe(depth + 1)
    return k.code_ip(frame.f_code.co_filename, frame.f_lineno)


def code_ip_of_exception(k: Kernel, exc: BaseException) -> int:
    """The code location where `exc` was raised (the innermost frame of its traceback)."""
    tb = exc.__traceback__
    if tb is None:
        return k.code_ip("<unknown>", 0)
    while tb.tb_next is not None:
        tb = tb.tb_next
    return k.code_ip(tb.tb_frame.f_code.co_filename, tb.tb_lineno)


def body_with_handler(k: Kernel, th: Thread, body: Body,
                      args: tuple[Any, ...]) -> Coroutine[Any, Any, Any]:
    """The chain of a thread that has an exception handler: a Python exception escaping
    its body is reported to the handler (exception IPC), then ends the thread. Threads
    without a handler run their body bare, one frame less on every IPC."""

    async def run() -> Any:
        try:
            return await body(th.user, *args)
        except KernelInvariantError:
            raise  # a bug in l4sim is never reported as the thread's fault
        except Exception as exc:
            # If the handler is gone, the exception still ends the thread.
            await exception_ipc(k, th, TRAP_PYTHON_EXCEPTION, 0, code_ip_of_exception(k, exc),
                                kill=False)
            raise

    return run()


def report_preemption(k: Kernel, th: Thread) -> None:
    """Preemption IPC: tell `th`'s preempter (label -3, time, CPU) if it is waiting for it."""
    p = th.preempter
    # Open wait, or a closed receive from `th` -- but not the reply wait of a call to `th`:
    # a report is no reply.
    if (p is None or p.state != RECEIVE_WAIT
            or not (p.partner is None or (p.partner is th and th.reply_caller is not p))):
        if p is not None:
            k.record(th, "preemption", f"report to {p.name} lost: not waiting")
        return
    cpu = th.cpu
    mr = p.mr
    mr[0] = cpu.now
    mr[1] = cpu.index
    p.in_words = mr[:2]
    p.in_tag = PREEMPTION_TAG
    p.in_label = th.tid
    p.wake_error = IpcError.OK
    wake_waiter(k, p)
    k.record(th, "preemption", f"reported to {p.name}")
