"""The l4sim kernel: everything that runs in kernel mode.

Design note. A thread is a coroutine chain: its `async def` body is the user stack and
the kernel functions it awaits are its kernel stack (Fiasco gives every thread its own
kernel stack; so do we). A system call is a plain `await` on a method of the user
context `t`; the kernel path runs in the caller's chain and, when it must block, awaits
`trap.switch(next)` (the IPC paths yield the same value themselves, a frame less): the
only yield to the CPU loop (`Kernel._loop`), the only place that calls
`coroutine.send()`. When the blocked thread runs again its kernel path goes
on after that await and re-reads its state word: whoever ended its wait (a partner,
the timer, a cancel, a deletion) changed the state and left the outcome in the TCB.

Kernel code is atomic between preemption points (`Cpu.preemption_point`): kernel
exit when something is due, and inside `compute()`. Only there do timers fire, host
events run, and higher-priority threads take the CPU. A run is a sequence of such
atomic steps, each on the CPU whose next step comes first; the scheduling decision is
a value (`Cpu.schedule` decides, `cpu.action` keeps it between steps), and every point
where a real kernel depends on timing asks one chooser (`chooser`), whose choices are
the run's replayable schedule. So every run is a deterministic function of the program
and the seed, on any number of CPUs. A thread switched out may come back on another CPU
(moved by the host, by `ex_regs` or by itself): a kernel path re-reads `th.cpu` after
every switch. Across CPUs the kernel's data is shared but each
decision is made on the CPU it concerns: a wake-up is an inter-processor interrupt, and
the handshake of a send to a partner on another CPU is a remote request (Fiasco's DRQ)
that runs there, an IPI later, while the sender waits (`drq_wait`). Host events run
on the CPU whose step registered them, else on the boot CPU. A chooser that `preempts`
(the explorer's) is asked at more points: every preemption point where another thread
of the same priority is ready, before each load or store of memory another thread can
reach, and before a system call that follows one.

Memory is the mapping database: every page-table entry is a node that knows the
node it was derived from, so unmap and task deletion revoke recursively, and a 1 GiB
flexpage is one node. A page fault is IPC on the faulting thread's behalf to a user-level
pager; physical memory belongs to sigma0, a user-level server too, which the kernel
finds through `boot` (it imports nothing of the user-level library).

Modules, from the leaves up: `abi` (values crossing the boundary, bit-exact with
Fiasco), `errors` (internal exceptions), `states` (the IPC state machine as data),
`costs`, `memory` (frames, address spaces, the mapping database), `objects` (tasks,
threads/UTCBs, gates, capabilities), `sendq`, `trap` (the switch), `sched` (each CPU and
its scheduler), `chooser`, `waits` (who waits for whom), `irq`, `flexpage`,
`message` (a message's words into the MRs), `transfer` (words, items and the reply
capability at a rendezvous), `longipc` (string items), `ipc` and `fastpath` (the IPC
path), `lifecycle` (the end of threads, deletion), `exceptions`, `pagefault`,
`invariants`, `diagnose`, `kernel` (the host API and the run).
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
