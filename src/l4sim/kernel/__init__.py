"""The l4sim kernel: everything that runs in kernel mode.

Design note. A thread is a coroutine chain: its `async def` body is the user stack and
the kernel functions it awaits are its kernel stack (Fiasco gives every thread its own
kernel stack; so do we). A system call is a plain `await` on a method of the user
context `t`; the kernel path runs in the caller's chain and, when it must block, awaits
`trap.switch(next)`: the only yield to the CPU loop (`Kernel._loop`), the only place
that calls `coroutine.send()`. When the blocked thread runs again its kernel path goes
on after that await and re-reads its state word: whoever ended its wait (a partner,
the timer, a cancel, a deletion) changed the state and left the outcome in the TCB.

Kernel code is atomic between preemption points (`Kernel.preemption_point`): kernel
exit when something is due, and inside `compute()`. Only there do timers fire, host
events run, and higher-priority threads take the CPU, so every run is a deterministic
function of the program and the seed.

Memory is the mapping database: every page-table entry is a node that knows the
node it was derived from, so unmap and task deletion revoke recursively, and a 1 GiB
flexpage is one node. A page fault is IPC on the faulting thread's behalf to a user-level
pager; physical memory belongs to sigma0, a user-level server too.

Modules: `abi` (values crossing the boundary, bit-exact with Fiasco), `objects`
(tasks, threads/UTCBs, gates, capabilities), `memory` (frames, address spaces, the
mapping database), `flexpage` (map/grant items, windows, unmap), `pagefault` (memory
access and page-fault IPC), `longipc` (string items: the copy, nested faults, aborts),
`states` (the IPC state machine as
data), `sendq` (priority-sorted sender queues), `sched` (per-CPU clock and ready
queues), `ipc` (the IPC path and its fast path), `kernel` (host API, CPU loop,
timers, priority inheritance, deletion), `invariants` (the checks of check=True), `costs` (the
cycle cost model), `trap` (the switch).
"""

from .abi import CapRights, Fpage, IpcError, Label, MapItem, MsgTag, Rights, StringItem, Timeout
from .chooser import Chooser, Schedule, ScheduleError
from .errors import KernelInvariantError
from .kernel import Event, Kernel, RunResult
from .objects import IpcGate, Irq, Task, Thread
from .result import IpcResult

__all__ = [
    "CapRights", "Chooser", "Event", "Fpage", "IpcError", "IpcGate", "IpcResult", "Irq", "Kernel",
    "KernelInvariantError", "Label", "MapItem", "MsgTag", "Rights", "RunResult", "Schedule",
    "ScheduleError", "StringItem",
    "Task", "Thread", "Timeout",
]
