"""Kernel objects: tasks (address and object spaces), threads (TCBs with UTCBs), IPC
gates, and capabilities.

Invariants of a thread (checked by `invariants.check` with check=True):
- state SEND_WAIT  <=> it is in exactly one sender queue, that of `partner`;
- state RECEIVE_WAIT => `partner` is None (open), itself (sleep) or the thread it
  receives from; it is in no sender queue;
- `timer` is set only while it waits with a finite timeout;
- a dead thread is in no queue, holds no reply capability, and no capability names it.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final

from .abi import BR_COUNT, MR_COUNT, NEVER, CapRights, IpcError
from .memory import DEFAULT_PT_QUOTA, IO_SPACE_BITS, PAGE_SHIFT, USER_SPACE_BITS, AddressSpace
from .sendq import SenderQueue
from .states import INACTIVE, SEND_WAIT, state_name

if TYPE_CHECKING:
    from .kernel import Kernel
    from .sched import Cpu

Body = Callable[..., Coroutine[Any, Any, Any]]

_ZERO_MRS = array("Q", bytes(8 * MR_COUNT))
_ZERO_BRS = array("Q", bytes(8 * BR_COUNT))


class DefaultPager:
    """The value of a left-out `pager=`: the anonymous-memory pager, made on first use."""

    def __repr__(self) -> str:
        return "DEFAULT_PAGER"


DEFAULT_PAGER: Final = DefaultPager()


def _not_started(_: None) -> Any:
    raise RuntimeError("this thread has no coroutine to resume")


class KernelObject:
    """Anything a capability can name."""

    __slots__ = ("kernel", "alive", "cap_refs", "__weakref__")

    kind = "object"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.alive = True
        # Where capabilities to this object were put, (task, selector); deletion clears
        # them without scanning every object space. Entries may be stale.
        self.cap_refs: list[tuple[Task, int]] = []


class Capability:
    """One slot of an object space: the object and the rights this holder has to it.

    Capabilities form a mapping database like memory: `parent` is the capability
    this one was mapped from (None: given by host-level setup), `children` those mapped
    from it; revoking a capability revokes everything derived from it."""

    __slots__ = ("obj", "rights", "task", "sel", "parent", "_kids")

    def __init__(self, obj: KernelObject, rights: int, task: Task, sel: int,
                 parent: Capability | None = None) -> None:
        self.obj = obj
        self.rights = rights
        self.task = task
        self.sel = sel
        self.parent = parent
        self._kids: dict[Capability, None] | None = None  # most capabilities have none

    @property
    def children(self) -> dict[Capability, None] | tuple[()]:
        """The capabilities mapped from this one (read only; see adopt, disown)."""
        return self._kids or ()

    def adopt(self, child: Capability) -> None:
        if self._kids is None:
            self._kids = {}
        self._kids[child] = None

    def disown(self, child: Capability) -> None:
        if self._kids is not None:
            self._kids.pop(child, None)

    def __repr__(self) -> str:
        return f"Capability({self.obj!r}, {CapRights(self.rights)!r})"


class Utcb:
    """User thread control block: 63 MRs, 58 BRs, the BDR and the TCRs.

    The MRs are an `array('Q')`: storing a value outside 0..2**64-1 raises in the user
    code that stores it, so the kernel never masks words and a transfer is one slice copy.
    """

    __slots__ = ("mr", "_br", "bdr", "tcr_error", "tcr_free", "tcr_user")

    def __init__(self) -> None:
        self.mr = array("Q", _ZERO_MRS)
        self._br: array[int] | None = None  # made on first use: most threads never set one
        self.bdr = 0
        self.tcr_error = 0
        self.tcr_free = 0
        self.tcr_user = array("Q", (0, 0, 0))

    @property
    def br(self) -> array[int]:
        """The 58 buffer registers."""
        br = self._br
        if br is None:
            br = self._br = array("Q", _ZERO_BRS)
        return br


class Task(KernelObject):
    """An address space and an object space (capability table, selector 0 is invalid)."""

    __slots__ = ("name", "caps", "threads", "id", "space", "_io")

    kind = "task"

    def __init__(self, kernel: Kernel, name: str, task_id: int,
                 pt_quota: int = DEFAULT_PT_QUOTA) -> None:
        super().__init__(kernel)
        self.name = name
        self.id = task_id
        self.caps: list[Capability | None] = [None]
        self.threads: list[Thread] = []
        self.space = AddressSpace(self, name, 1, USER_SPACE_BITS, PAGE_SHIFT, pt_quota)
        self._io: AddressSpace | None = None  # made on first use: few tasks hold ports

    @property
    def io(self) -> AddressSpace:
        """The task's I/O-port space."""
        io = self._io
        if io is None:
            io = self._io = AddressSpace(self, self.name, 2, IO_SPACE_BITS, 0, None)
        return io

    def add_cap(self, obj: KernelObject, rights: int = CapRights.ALL) -> int:
        """Give this task a capability to `obj`; returns its selector (host-level setup)."""
        if not isinstance(obj, KernelObject):
            raise TypeError(f"add_cap needs a kernel object, got {type(obj).__name__}")
        if not obj.alive:
            raise ValueError(f"{obj!r} has been deleted")
        if not 0 <= int(rights) <= 0xF:
            raise ValueError(f"capability rights are 4 bits, got {rights!r}")
        sel = len(self.caps)
        self.caps.append(Capability(obj, int(rights), self, sel))
        obj.cap_refs.append((self, sel))
        self.kernel.after_host_op()
        return sel

    def new_thread(self, body: Body, *args: Any, name: str | None = None, priority: int = 100,
                   cpu: int = 0, pager: Thread | DefaultPager | None = DEFAULT_PAGER,
                   exc_handler: Thread | None = None,
                   preempter: Thread | None = None) -> Thread:
        """Create a thread running `body(t, *args)` in this task (host-level setup)."""
        return self.kernel.new_thread(self, body, args, name=name, priority=priority, cpu=cpu,
                                      pager=pager, exc_handler=exc_handler,
                                      preempter=preempter)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


class IpcGate(KernelObject):
    """Indirect IPC: a gate bound to a receiver thread with a label its creator chose."""

    __slots__ = ("thread", "label", "name")

    kind = "gate"

    def __init__(self, kernel: Kernel, thread: Thread, label: int, name: str) -> None:
        super().__init__(kernel)
        self.thread: Thread | None = thread
        self.label = label
        self.name = name

    def __repr__(self) -> str:
        return f"<IpcGate {self.name} label={self.label:#x}>"


class Irq(KernelObject):
    """An interrupt source, a sender like a thread (Fiasco's role split): when it
    triggers, the bound thread receives tag label -1 with the bound label; if that thread
    is not waiting for it, the IRQ queues in its sender queue at priority 255, once.

    `pending`: a trigger not yet delivered (queued, masked or unbound); further triggers
    coalesce into it. `masked`: after a delivery until the receiver unmasks it."""

    __slots__ = ("thread", "label", "masked", "pending", "queued", "queued_prio", "name")

    kind = "irq"
    lends_priority = False  # the sender role: a kernel sender lends its receiver no priority

    def __init__(self, kernel: Kernel, name: str) -> None:
        super().__init__(kernel)
        self.thread: Thread | None = None
        self.label = 0
        self.masked = False
        self.pending = False
        self.queued = False
        self.queued_prio = -1
        self.name = name

    def sends_to(self, rcv: Thread) -> bool:
        """The sender role: is this IRQ's message queued for `rcv`?"""
        return self.queued and self.thread is rcv

    def trigger(self) -> None:
        """Raise the interrupt from host code (a device, a test)."""
        if not self.alive:
            raise ValueError(f"{self!r} has been deleted")
        self.kernel.trigger(self)

    def __repr__(self) -> str:
        return f"<Irq {self.name}>"



class Thread(KernelObject):
    """A thread control block. Its kernel stack is the coroutine chain `coro`."""

    __slots__ = (
        "task", "caps", "tid", "name", "priority", "prio", "cpu", "state", "body", "args", "coro", "resume",
        "utcb", "mr", "user",
        # IPC
        "partner",       # SEND_WAIT: the receiver; RECEIVE_WAIT: the source, None = open, self = sleep
        "sendq",         # senders waiting for this thread
        "queued_prio",   # priority at which we sit in a sender queue
        "snd_label", "snd_tag", "snd_gate", "snd_call",  # a queued send, for the receiver to take
        "rcv_timeout",   # receive timeout of a queued call, armed when its send is taken
        "in_tag", "in_label", "in_words",               # what the last receive delivered
        "wake_error",    # set by whoever ended our wait abnormally
        "reply_caller",  # one-shot reply capability: the caller we owe a reply
        "timer",         # [deadline, seq, thread] entry of the kernel's timer heap, or None
        "timer_at", "timer_seq", "timer_listed",  # a timer armed lazily by the fast path
        # scheduling
        "slice_left", "rq_prio",
        # the end
        "result", "exit_reason", "returned",
        "xfer", "pf_timeout", "pf_target", "in_strings",  # long IPC (longipc.py)
        "drq",           # DRQ_WAIT: our handshake's remote request, in flight
        "deleters", "lock_victim", "lock_holder",  # deleters waiting for our transfer lock;
                                                   # whose we wait for, and who holds it
        "pager", "pager_default", "exc_handler", "preempter", "self_sel", "pager_sel", "gates", "irqs",
    )

    kind = "thread"
    lends_priority = True  # the sender role: a queued thread lends its receiver its priority

    def __init__(self, kernel: Kernel, task: Task, tid: int, name: str, body: Body,
                 args: tuple[Any, ...], priority: int, cpu: Cpu) -> None:
        super().__init__(kernel)
        self.task = task
        self.caps = task.caps  # the task's object space (the list object never changes)
        self.tid = tid
        self.name = name
        self.priority = priority
        self.prio = priority
        self.cpu = cpu
        self.state = INACTIVE
        self.body = body
        self.args = args
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.resume: Callable[[None], Any] = _not_started  # coro.send, bound once
        self.utcb = Utcb()
        self.mr = self.utcb.mr
        self.user: Any = None
        self.partner: Thread | Irq | None = None
        self.sendq: SenderQueue[Thread | Irq] | None = None
        self.queued_prio = -1
        self.snd_label = 0
        self.snd_tag = 0
        self.snd_gate: IpcGate | None = None
        self.snd_call = False
        self.rcv_timeout: Any = None
        self.in_tag = 0
        self.in_label = 0
        self.in_words: Sequence[int] | None = None  # a tuple or an array slice
        self.wake_error = IpcError.OK
        self.reply_caller: Thread | None = None
        self.timer: list[Any] | None = None
        self.timer_at = 0          # a lazily armed timer (sched.LAZY_TIMER): its deadline,
        self.timer_seq = 0         # its sequence number,
        self.timer_listed = False  # and whether the thread is in its CPU's `lazy` list
        self.slice_left = kernel.timeslice
        self.rq_prio = -1
        self.result: Any = None
        self.exit_reason: str | None = None
        self.returned = False
        self.xfer: Any = None                  # the long IPC this thread is in (a Transfer)
        self.pf_timeout: Any = NEVER           # page-fault timeout of the current IPC
        self.pf_target: Thread | None = None   # a nested fault's mapping lands in its space
        self.in_strings: tuple[int, ...] | None = None  # bytes per string of the last IPC
        self.drq: Any = None                   # the remote request of our handshake (ipc.Drq)
        self.deleters: list[Thread] | None = None  # blocked in delete() until we are gone
        self.lock_victim: Thread | None = None     # LOCK_WAIT: the thread we delete
        self.lock_holder: Thread | None = None     # LOCK_WAIT: the copier that holds its lock
        self.pager: Thread | None = None
        self.pager_default = False  # True: the anonymous-memory pager, made on first fault
        self.exc_handler: Thread | None = None
        self.preempter: Thread | None = None
        self.self_sel = 0
        self.pager_sel = 0
        self.gates: list[IpcGate] = []  # gates bound to this thread
        self.irqs: list[Irq] = []       # interrupts bound to this thread

    def sends_to(self, rcv: Thread) -> bool:
        """The sender role: is this thread queued with a message for `rcv`?"""
        return self.state == SEND_WAIT and self.partner is rcv

    def migrate(self, cpu: int) -> None:
        """Give this thread the affinity `cpu` from host code (the thread itself: `await
        t.migrate(cpu)`)."""
        self.kernel.migrate(self, cpu)

    @property
    def state_name(self) -> str:
        return state_name(self.state)

    def __repr__(self) -> str:
        return f"<Thread {self.name} tid={self.tid} {state_name(self.state)}>"
