"""Scheduling, per CPU: the clock, the current thread, the ready queues, the timers, and
the services built on them -- kernel entry and exit, preemption points, computation,
blocking in IPC, waking, and priority inheritance.

Fixed priorities 0-255, round robin within one priority. The ready queues are one
deque per priority and a bitmap of the non-empty ones, so the highest ready priority
is one `int.bit_length()`. The current thread is never in a ready queue.

Each CPU has its own timer heap of `[time, seq, thread, callback]` entries: a thread's
timeout (thread set), a host event (callback set), or a cancelled entry (neither). The
sequence number, a counter of the kernel, orders entries due at the same time.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .abi import NEVER, IpcError, Timeout
from .errors import ThreadDeleted
from .objects import Thread
from .result import IpcResult, new_result
from .states import DEAD, READY, RECEIVE_WAIT, SEND_WAIT
from .trap import switch

if TYPE_CHECKING:
    from .kernel import Kernel

# What the scheduler calls back into the layers above it (the kernel sets them; the
# scheduler imports nothing of the IPC path, only its result type): a thread's timeout
# expired; a thread with a preempter was preempted.
Hook = Callable[["Kernel", Thread], None]

PRIORITIES = 256
# "No event": later than any simulated time (an int, so the hot comparisons stay int-int).
INFINITY = 1 << 62
STOP = object()  # timer-heap marker: the end of a run(until=...)


class Cpu:
    """One CPU of the kernel `k` and its scheduler."""

    __slots__ = ("k", "index", "now", "current", "queues", "bitmap", "slice_end", "timers",
                 "next_event", "entries", "ipc_costs", "last", "action", "on_timeout",
                 "on_preemption", "preempts", "incoming", "held", "holds", "lazy", "alone")

    def __init__(self, k: Kernel, index: int, on_timeout: Hook, on_preemption: Hook) -> None:
        self.k = k
        self.index = index
        self.on_timeout = on_timeout
        self.on_preemption = on_preemption
        self.preempts = k.chooser.preempts  # asks the chooser at every preemption point
        # ... and, at one of kernel code, whether a pending interrupt is held back
        self.holds = self.preempts and k.chooser.holds_interrupts
        self.incoming: set[Thread] = set()   # woken from another CPU, the IPI on its way
        self.held = False  # the chooser held a pending interrupt back at the last kernel exit
        self.now = 0                      # this CPU's clock, in simulated cycles
        self.current: Thread | None = None
        self.last: Thread | None = None   # the thread that ran last when a run() ended
        # The scheduler's decision between two steps: the thread that runs next (already
        # charged its switch), or None (decide when the next step begins).
        self.action: Thread | None = None
        self.queues: list[deque[Thread]] = [deque() for _ in range(PRIORITIES)]
        self.bitmap = 0                   # bit p set <=> queues[p] is not empty
        self.slice_end = 0                # when the current thread's timeslice ends
        # Timer heap of [time, seq, thread, callback] entries (a cancelled one has neither),
        # and the time of its earliest live entry.
        self.timers: list[list[Any]] = []
        self.next_event = INFINITY
        # Threads the fast path armed a timer for without a heap entry (`LAZY_TIMER`):
        # most such timers are cancelled by the reply within the same round trip, so the
        # entry is only made (`arm_lazy`) when the heap is next looked at.
        self.lazy: list[Thread] = []
        self.entries = 0                  # kernel entries on this CPU
        self.ipc_costs: list[int] = []    # cycles of one IPC by word count (the kernel's profile)
        # The kernel's only CPU, and never stepped by the host (`Kernel.step`): nothing
        # but its own threads and events can make a thread ready on it.
        self.alone = k.quantum == INFINITY

    def top_prio(self) -> int:
        """Highest priority with a ready thread; -1 if none."""
        return self.bitmap.bit_length() - 1

    def enqueue_back(self, th: Thread) -> None:
        p = th.prio
        self.queues[p].append(th)
        self.bitmap |= 1 << p
        th.rq_prio = p
        self.k.queued += 1

    def enqueue_front(self, th: Thread) -> None:
        p = th.prio
        self.queues[p].appendleft(th)
        self.bitmap |= 1 << p
        th.rq_prio = p
        self.k.queued += 1

    def dequeue(self, th: Thread) -> None:
        """Remove `th` from its ready queue (it must be in one)."""
        p = th.rq_prio
        q = self.queues[p]
        q.remove(th)
        if not q:
            self.bitmap &= ~(1 << p)
        th.rq_prio = -1

    def pop_highest(self) -> Thread | None:
        if not self.bitmap:
            return None
        p = self.bitmap.bit_length() - 1
        q = self.queues[p]
        th = q.popleft()
        if not q:
            self.bitmap &= ~(1 << p)
        th.rq_prio = -1
        return th

    def ready_threads(self) -> list[Thread]:
        out: list[Thread] = []
        for p in range(PRIORITIES - 1, -1, -1):
            out.extend(self.queues[p])
        return out

    def step_time(self) -> int:
        """When this CPU's next step begins: now if a thread is ready (or decided), else
        at its next event; INFINITY when nothing can ever run here."""
        if self.action is not None or self.bitmap:
            return self.now
        if self.next_event < INFINITY and self.anything_pending():
            return self.next_event if self.next_event > self.now else self.now
        return INFINITY

    # --- timers and host events ---------------------------------------------------------

    def deadline_of(self, timeout: Timeout) -> int | None:
        """The point in time a timeout starting now ends; None for never."""
        if timeout is NEVER:
            return None
        deadline = timeout.deadline(self.now, self.k.mhz)
        return deadline if deadline is not None and deadline < INFINITY else None

    def arm_timer(self, th: Thread, deadline: int) -> None:
        entry = [deadline, self.k.next_seq(), th, None]
        th.timer = entry
        self.push_event(entry)

    def push_event(self, entry: list[Any]) -> None:
        self.k.queued += 1
        heapq.heappush(self.timers, entry)
        if entry[0] < self.next_event:
            self.next_event = entry[0]

    def arm_lazy(self) -> None:
        """Give every timer the fast path armed lazily its heap entry, with the sequence
        number it was armed with (so events due together fire in the same order)."""
        for th in self.lazy:
            th.timer_listed = False
            if th.timer is LAZY_TIMER:
                entry = [th.timer_at, th.timer_seq, th, None]
                th.timer = entry
                heapq.heappush(self.timers, entry)
        self.lazy.clear()

    def anything_pending(self) -> bool:
        """Is a timer or host event pending, other than the end of this run?"""
        if self.lazy:
            self.arm_lazy()
        # A loop, not any() over a generator: the first entry nearly always answers
        # (cancelled entries leave the top of the heap as they come up).
        for e in self.timers:  # noqa: SIM110
            if e[2] is not None or (e[3] is not None and e[3] is not STOP):
                return True
        return False

    def process_events(self) -> None:
        """Fire every timer and host event due by now (the timer interrupt)."""
        k = self.k
        if self.lazy:
            self.arm_lazy()
        heap = self.timers
        ticked = False
        self.held = False
        while heap and heap[0][0] <= self.now:
            entry = heapq.heappop(heap)
            if entry[2] is None and entry[3] is None:
                k.dead_timers -= 1  # a cancelled entry comes up: nothing fires
                continue
            if heap and heap[0][0] == entry[0] and entry[3] is not STOP:
                entry = self._first_of_simultaneous(entry)
            th, callback = entry[2], entry[3]
            if th is not None:
                k.record(th, "timeout", f"at {entry[0]}")
                if not ticked:  # the timer interrupt: a kernel entry, tick accounting, exit
                    self.now += k.costs.timer_tick
                    self.entries += 1
                    ticked = True
                self.on_timeout(k, th)
            elif callback is STOP:
                entry[3] = None  # fired: the run does not disarm it again
                k.stop = "until"
            elif callback is not None:
                callback()
        while heap and heap[0][2] is None and heap[0][3] is None:
            heapq.heappop(heap)
            k.dead_timers -= 1
        if k.dead_timers > TIMER_SLACK:  # the live entries that fired may leave too few
            bound_dead_timers(k)
        self.next_event = heap[0][0] if heap else INFINITY
        if k.stop is None and k.entry_limit < INFINITY and k.out_of_steps():
            k.stop = "steps"

    def _first_of_simultaneous(self, entry: list[Any]) -> list[Any]:
        """Several events due at the same time (`entry`, live, is the first): the chooser
        says which fires first (the policy: in arming order); the others go back to the
        heap."""
        heap = self.timers
        due = [entry]
        while heap and heap[0][0] == entry[0] and heap[0][3] is not STOP:
            e = heapq.heappop(heap)
            if e[2] is not None or e[3] is not None:
                due.append(e)
            else:
                self.k.dead_timers -= 1
        first = due.pop(self.k.chooser.choose("e", len(due))) if len(due) > 1 else due.pop()
        for e in due:
            heapq.heappush(heap, e)
        return first

    # --- the scheduler's choice ---------------------------------------------------------

    def schedule(self, intent: Thread | None) -> Thread | None:
        """The one decision of who runs next on this CPU, after its current thread
        switched away. `intent` is the partner the IPC path would switch to directly
        (seL4's possibleSwitchTo); it runs unless an event due now deleted it, stops the
        run, or readied a thread of strictly higher priority. Otherwise the highest ready
        thread runs; with none, the CPU idles to its next event. None: nothing runs."""
        if self.now >= self.next_event:
            self.process_events()
            if intent is not None:
                if intent.state & DEAD:
                    intent = None  # an event deleted the partner we were switching to
                elif intent.cpu is not self:
                    # A host event moved it to another CPU: it is ready there (by IPI),
                    # as a thread moved from this CPU's ready queue would be.
                    make_ready(intent)
                    intent = None
                elif self.k.stop is not None or self.bitmap >> (intent.prio + 1):
                    make_ready(intent)
                    intent = None
        return intent if intent is not None else self.pick()

    def pick(self, first: bool = False) -> Thread | None:
        """The highest-priority ready thread; when none, idle to the next event. None when
        the run stops or no thread of this CPU can ever run again. With several CPUs
        the others may act meanwhile, so a CPU idles only when a step begins (`first`),
        to the time its step was chosen for, and only once."""
        k = self.k
        jumps = INFINITY if k.executing is None else (1 if first else 0)
        while True:
            if self.now >= self.next_event:
                self.process_events()
            if k.stop is not None:
                return None
            if self.bitmap:
                return self.pop_highest()
            if not jumps or self.next_event == INFINITY or not self.anything_pending():
                return None  # no thread can ever run again: done or deadlock, not "until"
            if self.next_event > self.now:
                self.now = self.next_event  # idle until the next timer or event
            jumps -= 1

    # --- kernel entry and exit, preemption points -----------------------------------------

    async def enter(self, th: Thread, cost: int = 0) -> None:
        """Kernel entry: count it, charge it; stop first if the step limit is reached.
        A dead thread enters no more: its chain (a `finally:` block run while it is closed
        or unwound) is unwound instead."""
        if th.state & DEAD:
            raise ThreadDeleted
        k = self.k
        cpu = th.cpu
        if cpu.preempts and k.chooser.accessed:
            # Under the explorer, the last instruction before a system call can be
            # preempted too when the thread touched shared memory since its last choice.
            k.chooser.accessed = False
            await cpu.shared_access_point(th, "before a system call")
            cpu = th.cpu  # (switched out, it may have been moved to another CPU)
        while k.out_of_steps():
            if k.stop is None:
                k.stop = "steps"
            cpu.enqueue_front(th)
            await switch(None)
            cpu = th.cpu
        cpu.entries += 1
        cpu.now += cost or cpu.ipc_costs[0]

    async def leave(self, th: Thread, result: IpcResult) -> IpcResult:
        """Kernel exit: check the invariants; a preemption point if something is due.
        On the thread's CPU now, whichever CPU's `leave` a caller bound before a switch
        that moved it (`await cpu.leave(th, await ...)`)."""
        k = self.k
        if k.check:
            k.check_touched()
        if k.trace and result.error:
            k.record(th, "error", result.error.name)  # each side's error, in the trace
        cpu = th.cpu
        now = cpu.now
        if (now >= cpu.slice_end or now >= cpu.next_event or cpu.bitmap >> (th.prio + 1)
                or cpu.preempts):
            await cpu.preemption_point(th, True)
        return result

    async def preemption_point(self, th: Thread, in_kernel: bool = False) -> None:
        """Timer interrupt and rescheduling: fire due events, then give the CPU to a
        higher-priority thread (we stay at the front of our priority) or, at the end of
        our timeslice, to the next one of our priority (we go to the back).

        `in_kernel`: a preemption point of kernel code (the kernel exit, a page boundary
        of a long copy), where an exploring chooser may hold a pending interrupt back
        (`i`): it is taken at the next preemption point instead, once."""
        k = self.k
        cpu = th.cpu  # (its CPU: and after each switch, the one it was moved to, if so)
        asked = False
        while True:
            if cpu.now >= cpu.next_event:
                if in_kernel and cpu.holds and not cpu.held and k.chooser.choose("i", 2):
                    # The interrupt arrives just after this point rather than just before.
                    k.record(th, "interrupt", "held back past a preemption point, by the chooser")
                    cpu.held = True
                else:
                    cpu.process_events()
                in_kernel = False
            if th.state & DEAD:
                raise ThreadDeleted
            if k.stop is not None or cpu.bitmap >> (th.prio + 1):
                if k.stop is None and th.preempter is not None:
                    cpu.on_preemption(k, th)
                cpu.enqueue_front(th)
                await switch(None)
                cpu = th.cpu
                continue
            if cpu.now >= cpu.slice_end:
                cpu.now += k.costs.timer_tick  # the tick that ends the timeslice
                cpu.slice_end = cpu.now + k.timeslice
                cpu.entries += 1  # the timer interrupt is a kernel entry: a step
                if k.out_of_steps():
                    k.stop = "steps"
                if cpu.bitmap >> th.prio:
                    k.record(th, "timeslice", "expired")
                    if th.preempter is not None:
                        cpu.on_preemption(k, th)
                    cpu.enqueue_back(th)
                    await switch(None)
                    cpu = th.cpu
                    continue
                if k.stop is not None:
                    continue
                if k.stepping:  # the timer interrupt ends a step of `k.step()`, too
                    cpu.enqueue_front(th)
                    await switch(None)
                    cpu = th.cpu
                    continue
            if (cpu.preempts and not asked and cpu.bitmap >> th.prio
                    and k.chooser.choose("p", 2, (th, cpu.queues[th.prio][0]))):
                # The chooser ends our timeslice here: the next of our priority runs.
                k.record(th, "preempted", "at a preemption point, by the chooser")
                asked = True  # (once per preemption point: back here, we go on)
                cpu.enqueue_back(th)
                await switch(None)
                cpu = th.cpu
                continue
            return

    async def shared_access_point(self, th: Thread,
                                  why: str = "before a shared memory access") -> None:
        """Under a chooser that preempts, before a load or store of memory another thread
        can reach: the chooser may end the timeslice here when another thread of our
        priority is ready ('p'); with several CPUs, the step ends here when another CPU
        could step first (its clock within a quantum of ours: 'c'). No event fires and
        no time passes here."""
        k = self.k
        queue = self.queues[th.prio]
        if queue and k.chooser.choose("p", 2, (th, queue[0])):
            k.record(th, "preempted", f"{why}, by the chooser")
            self.enqueue_back(th)
            await switch(None)
        elif len(k.cpus) > 1 and any(c is not self and c.step_time() < self.now + k.quantum
                                     for c in k.cpus):
            self.enqueue_front(th)
            await switch(None)

    async def compute(self, th: Thread, cycles: int) -> None:
        """User computation of `cycles`, preemptible at any simulated time inside."""
        if th.state & DEAD:
            raise ThreadDeleted  # a dead thread's chain being unwound computes nothing
        several = self.k.quantum < INFINITY
        cpu = th.cpu
        while True:
            limit = min(cpu.slice_end, cpu.next_event)
            ahead = several and (horizon := cpu.horizon()) < limit
            if ahead:
                limit = horizon
            room = limit - cpu.now
            if cycles < room:
                cpu.now += cycles
                return
            step = int(room) if room > 0 else 0
            cpu.now += step
            cycles -= step
            if ahead:
                await cpu.boundary(th)  # the other CPUs catch up first
            else:
                await cpu.preemption_point(th)
            cpu = th.cpu  # (moved meanwhile by the host or by ex_regs: it goes on there)
            if cycles == 0:
                return

    def horizon(self) -> int:
        """How far this CPU may run ahead of the others: a quantum past the earliest next
        step of another CPU (INFINITY when all others are idle for good)."""
        k = self.k
        first = min((c.step_time() for c in k.cpus if c is not self), default=INFINITY)
        return first + k.quantum if first < INFINITY else INFINITY

    async def boundary(self, th: Thread) -> None:
        """End this step here (several CPUs keep their clocks within a quantum of each
        other): `th` stays first of its priority, and the next step goes on with it
        unless an event readied a thread of higher priority meanwhile. It counts as a
        step for `run(max_steps=)`, so that computing CPUs end a bounded run too."""
        k = self.k
        self.entries += 1
        if k.stop is None and k.out_of_steps():
            k.stop = "steps"
        self.enqueue_front(th)
        await switch(None)
        await th.cpu.preemption_point(th)  # (on the CPU it was moved to meanwhile, if so)

    def charge_transfer(self, words: int) -> None:
        """The cycles of copying `words` MRs, beyond the IPC's base cost."""
        self.now += self.ipc_costs[words] - self.ipc_costs[0]

    # --- blocking and waking --------------------------------------------------------------

    async def block(self, th: Thread, woken: Thread | None) -> None:
        """`th` has blocked in IPC: switch directly to the partner it woke unless a ready
        thread has a strictly higher priority; otherwise let the scheduler pick."""
        await switch(self.switch_target(th, woken))

    def switch_target(self, th: Thread, woken: Thread | None) -> Thread | None:
        """The decision of `block` (a plain function: the IPC path awaits the switch
        itself, a coroutine level less): the partner `th` woke, or None (the scheduler
        picks); a partner that does not run next joins the ready queue."""
        nxt = None
        if woken is not None:
            if woken.cpu is self and not self.bitmap >> (woken.prio + 1):
                nxt = woken
            else:
                make_ready(woken)
        k = self.k
        if k.check:
            k.check_touched(incoming=nxt, blocking=th)
            k.checked_switch = nxt
        return nxt

    def must_leave(self, th: Thread, error: int) -> bool:
        """Must the kernel exit of `th` (with `error`) do more than return: check, trace,
        or a preemption point? (`leave` is then awaited; a plain test otherwise.)"""
        k = self.k
        now = self.now
        if k.check:
            cs = k.checked_switch
            if (k.touched or k.check_all or k.touched_tasks or cs is None
                    or cs.cpu.current is not cs):  # (check_touched's own early return)
                return True
        return bool((k.trace and error) or now >= self.slice_end
                    or now >= self.next_event or self.bitmap >> (th.prio + 1) or self.preempts)

    def enter_now(self, th: Thread) -> bool:
        """The kernel entry of an IPC when it needs no preemption point (no step limit,
        no exploring chooser, a live thread): counted and charged here, True. False:
        await `enter`."""
        if th.state & DEAD or self.preempts or self.k.entry_limit < INFINITY:
            return False
        self.entries += 1
        self.now += self.ipc_costs[0]
        return True


def resumed_quietly(th: Thread, cpu: Cpu) -> bool:
    """With several CPUs, other CPUs' steps may come between a fast path's switch and the
    resume of the thread it blocked (`cpu`: its CPU then): it returns quietly only if it
    is still on `cpu` and no thread above it became ready there meanwhile (as the
    general path's exit checks)."""
    return th.cpu is cpu and not cpu.bitmap >> (th.prio + 1)


def quiet_result(th: Thread, cpu: Cpu) -> IpcResult | None:
    """After the switch: the result of a wait that ended well with nothing due (a short
    message), or None when the general exit must run (an error, a long message's byte
    counts, the end of the timeslice, an event due, or a thread above it ready)."""
    if (th.state == READY and not th.wake_error and th.in_strings is None
            and cpu.now < cpu.slice_end and cpu.now < cpu.next_event
            and (cpu.alone or resumed_quietly(th, cpu))):
        r = new_result(IpcResult)
        r.error = IpcError.OK
        r.label = th.in_label
        r._tag = th.in_tag
        r._words = th.in_words
        return r
    return None


def make_ready(th: Thread) -> None:
    """Put a thread that became ready at the back of its priority on its CPU. From
    another CPU this is a remote request: an inter-processor interrupt, charged to the
    sender, that makes the thread ready on its CPU no earlier than the IPI latency
    later."""
    cpu = th.cpu
    if th.rq_prio < 0 and cpu.current is not th and cpu.action is not th:
        here = cpu.k.executing
        if here is None or here is cpu:
            cpu.enqueue_back(th)
        elif th not in cpu.incoming:
            send_ipi(here, cpu, th)


def send_ipi(here: Cpu, there: Cpu, th: Thread) -> None:
    """Wake `th` on CPU `there` from CPU `here`: it is in flight (`there.incoming`) until
    the interrupt arrives, the cost model's `ipi` later (sending and taking it), then
    joins the back of its priority there."""
    k = here.k
    there.incoming.add(th)
    if k.trace:
        k.record(th, "ipi", f"from cpu{here.index} to cpu{there.index}")
    there.push_event([here.now + k.costs.ipi, k.next_seq(), None, Ipi(there, th)])


class Ipi:
    """The arrival of a wake-up IPI (an event of the CPU `there`; calling it delivers it):
    `th` joins the back of its priority there, unless it left meanwhile."""

    __slots__ = ("there", "th")

    def __init__(self, there: Cpu, th: Thread) -> None:
        self.there = there
        self.th = th

    def __call__(self) -> None:
        there, th = self.there, self.th
        there.incoming.discard(th)
        if (th.cpu is there and th.state & READY and not th.state & DEAD and th.rq_prio < 0
                and there.current is not th and there.action is not th):
            there.enqueue_back(th)


# Cancelled entries stay in the heap (lazy deletion) until they come up, or until they
# outnumber the live ones by more than this: then the heaps are compacted.
TIMER_SLACK = 64


# The `timer` of a thread whose timeout the fast path armed without a heap entry: its
# deadline and sequence number are in `timer_at` and `timer_seq`, and the thread is in its
# CPU's `lazy` list.
LAZY_TIMER: list[Any] = [INFINITY, 0, None, None]


def arm_lazy_timer(k: Kernel, cpu: Cpu, th: Thread, deadline: int) -> None:
    """Arm `th`'s timeout as `Cpu.arm_timer` does, without the heap entry for now."""
    k._seq += 1
    th.timer_seq = k._seq
    th.timer_at = deadline
    th.timer = LAZY_TIMER
    if not th.timer_listed:
        th.timer_listed = True
        cpu.lazy.append(th)
    if deadline < cpu.next_event:
        cpu.next_event = deadline


def cancel_timer(th: Thread) -> None:
    """Disarm `th`'s timeout (the heap entry stays, dead, until it comes up or the heap
    is compacted)."""
    entry = th.timer
    if entry is LAZY_TIMER:  # no heap entry was made
        th.timer = None
    elif entry is not None:
        entry[2] = None
        th.timer = None
        dead_entry(th.cpu.k)


def dead_entry(k: Kernel) -> None:
    """One more heap entry is dead. Compact the heaps when the dead ones outnumber the
    live ones by more than TIMER_SLACK, so that a cancelled timer costs no memory for
    long: the heaps then hold at most as many dead entries as live ones plus the slack."""
    k.dead_timers += 1
    if k.dead_timers > TIMER_SLACK:
        bound_dead_timers(k)


def bound_dead_timers(k: Kernel) -> None:
    """Compact the heaps if their dead entries outnumber the live ones by more than
    TIMER_SLACK."""
    total = 0
    for c in k.cpus:
        total += len(c.timers)
    if 2 * k.dead_timers > total + TIMER_SLACK:  # dead > live + slack
        compact_timers(k)


def compact_timers(k: Kernel) -> None:
    """Drop every dead entry from the timer heaps. Entries are ordered by (time, seq),
    which is unique, so the order in which events fire does not change."""
    for c in k.cpus:
        heap = c.timers
        heap[:] = [e for e in heap if e[2] is not None or e[3] is not None]
        heapq.heapify(heap)
    k.dead_timers = 0


def update_prio(k: Kernel, th: Thread) -> None:
    """Priority inheritance: a thread runs at the highest priority of itself, the
    senders queued at it (it is needed to reach them) and the caller whose reply it
    holds (it works for it); the change passes along call chains, stopping at a cycle."""
    seen: set[Thread] = set()
    t: Thread | None = th
    while t is not None and t not in seen:
        seen.add(t)
        new = t.priority
        if k.priority_inheritance:
            q = t.sendq
            if q:
                top = q.top_thread_prio()
                if top > new:
                    new = top
            c = t.reply_caller
            if c is not None and c.prio > new and c.state == RECEIVE_WAIT and c.partner is t:
                new = c.prio
        x = t.xfer
        if x is not None and k.helping and x.copier is t:
            # Helping: a deleter waiting for our transfer lock on our CPU lends us its time.
            for w in x.passive().deleters or ():
                if w.cpu is t.cpu and w.prio > new:
                    new = w.prio
        if new == t.prio:
            return
        t.prio = new
        if k.check:
            k.touched.add(t)
        if t.rq_prio >= 0:
            t.cpu.dequeue(t)
            t.cpu.enqueue_back(t)
        p = t.partner
        if t.state == SEND_WAIT and isinstance(p, Thread) and p.sendq is not None:
            # (not when `t` is being torn down: it has left its queue already)
            p.sendq.remove(t)
            p.sendq.enqueue(t, new)
            t = p
        elif t.state == RECEIVE_WAIT and isinstance(p, Thread) and p.reply_caller is t:
            t = p
        else:
            return


def migrate(th: Thread, target: Cpu) -> None:
    """Give `th` the affinity `target`. A ready thread leaves this CPU's ready queue and
    joins the target's (by an IPI from another CPU); a blocked one runs there once its
    wait ends (a timer armed here still fires here, and wakes it there). The running
    thread moves itself: `migrate_self`."""
    old = th.cpu
    if old is target:
        return
    moving = th.rq_prio >= 0 or old.action is th or th in old.incoming
    if th.rq_prio >= 0:
        old.dequeue(th)
    if old.action is th:
        old.action = None
    old.incoming.discard(th)  # (an IPI on its way there finds the thread gone)
    th.cpu = target
    if moving:
        make_ready(th)


async def migrate_self(th: Thread, target: Cpu) -> None:
    """The running thread moves to CPU `target`: it leaves this one at once, and goes on
    there when the IPI arrives and that CPU's scheduler picks it."""
    if th.cpu is target:
        return
    th.cpu = target
    make_ready(th)
    await switch(None)
