"""The kernel invariants that exist at this stage, checked with `check=True`.

Each violation raises `KernelInvariantError` naming the invariant, never a bare assert.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import KernelInvariantError
from .memory import AddressSpace
from .objects import IpcGate, Irq, Task, Thread
from .sched import TIMER_SLACK
from .states import (
    DEAD,
    DRQ_WAIT,
    DYING,
    IPC_TRANSFER,
    LOCK_WAIT,
    READY,
    RECEIVE_WAIT,
    RECV_IN_PROGRESS,
    SEND_WAIT,
    STATE_NAMES,
    state_name,
)

if TYPE_CHECKING:
    from .kernel import Kernel
    from .longipc import Transfer
    from .sched import Cpu


def _check_time(k: Kernel) -> None:
    seen_times = k._last_check_times
    for cpu in k.cpus:
        if cpu.now < seen_times[cpu.index]:
            raise KernelInvariantError("time never goes back", f"cpu{cpu.index}: {cpu.now} < "
                                       f"{seen_times[cpu.index]}")
        seen_times[cpu.index] = cpu.now


def _check_queued_irq(owner: Thread, s: Irq) -> None:
    if not s.queued or s.thread is not owner or not s.pending or s.queued_prio != 255:
        raise KernelInvariantError("a queued IRQ is pending, bound to the queue's owner, at 255",
                                   f"{s.name} in the sender queue of {owner.name}")


def _check_queued_thread(owner: Thread, s: Thread) -> None:
    if s.state != SEND_WAIT or s.partner is not owner:
        raise KernelInvariantError(
            "every blocked thread is in exactly the queues its state says",
            f"{s.name} ({state_name(s.state)}) in the sender queue of {owner.name}")
    if s.queued_prio != s.prio:
        raise KernelInvariantError("sender queues are sorted by priority",
                                   f"{s.name} queued at {s.queued_prio}, runs at {s.prio}")


def _check_ready_level(cpu: Cpu, level: int, in_ready: set[Thread]) -> None:
    """One ready queue of `cpu`: it matches the bitmap and holds ready threads of this
    CPU at this priority, each once (they are added to `in_ready`)."""
    Bad = KernelInvariantError
    rq = cpu.queues[level]
    if bool(rq) != bool(cpu.bitmap >> level & 1):
        raise Bad("the ready bitmap matches the ready queues", f"cpu{cpu.index} priority {level}")
    for th in rq:
        if th in in_ready:
            raise Bad("a thread is in at most one ready queue of one CPU", th.name)
        in_ready.add(th)
        if (not th.state & READY or th.state & DEAD or th.rq_prio != level
                or th.prio != level):
            raise Bad("the ready queues hold ready threads at their priority",
                      f"{th.name} ({state_name(th.state)}) at {level}, prio {th.prio}")
        if th.cpu is not cpu:
            raise Bad("a thread is queued on its own CPU",
                      f"{th.name} of cpu{th.cpu.index} on cpu{cpu.index}")


# An incremental check is followed by a full one every so many checks, so that what no
# operation marked as touched is still verified regularly (and at the end of every run).
FULL_EVERY = 1000


def check_touched(k: Kernel, incoming: Thread | None = None,
                  blocking: Thread | None = None) -> None:
    """Verify the invariants of what the operations since the last check touched: the
    threads whose state changed or that were marked (`k.touched`), the running threads,
    `incoming` and `blocking`, the threads they point at, the sender queues they own, the
    ready queues that are not empty or hold their priorities, the touched tasks
    (`k.touched_tasks`); and the kernel-wide figures that cost O(1) (time, the timer
    heaps' counts). Work on capabilities or memory that reaches beyond the touched tasks,
    or a host operation in a run, asks for a full check (`k.check_all`), as does
    `Kernel(check="full")`; and every FULL_EVERY-th check is a full one."""
    threads = k.touched
    if not threads and incoming is None and blocking is None:
        cs = k.checked_switch
        if (cs is not None and cs.cpu.current is cs and not k.touched_tasks
                and not k.check_all):
            return  # nothing touched since the switch to the running thread was checked
    k.checks_since_full += 1
    if k.check_all or k.checks_since_full >= FULL_EVERY or k.check == "full":
        k.checks_since_full = 0
        check(k, incoming, blocking)
        return
    Bad = KernelInvariantError
    k.touched = set()
    if incoming is not None:
        threads.add(incoming)
    if blocking is not None:
        threads.add(blocking)
    seen_times = k._last_check_times
    total = 0
    cpus = k.cpus
    for cpu in cpus:
        now = cpu.now
        if now < seen_times[cpu.index]:
            raise Bad("time never goes back", f"cpu{cpu.index}: {now} < "
                      f"{seen_times[cpu.index]}")
        seen_times[cpu.index] = now
        total += len(cpu.timers)
        c = cpu.current
        if c is not None:
            if c.cpu is not cpu:
                raise Bad("a running thread is current on its own CPU",
                          f"{c.name} of cpu{c.cpu.index} runs on cpu{cpu.index}")
            threads.add(c)
    dead = k.dead_timers
    if dead > total - dead + TIMER_SLACK or dead < 0:
        raise Bad("the timer heaps hold at most as many cancelled entries as live ones, "
                  "plus a constant", f"{dead} cancelled, {total} entries")
    for th in tuple(threads):  # and whom they point at
        p = th.partner
        if p is not None and type(p) is Thread:
            threads.add(p)
        c = th.reply_caller
        if c is not None:
            threads.add(c)
    in_ready: set[Thread] = set()
    for cpu in cpus:
        # The non-empty ready queues in full; the levels of the touched threads (their
        # priority on their CPU, the level they are queued at) need only agree with the
        # bitmap when they are not among those: then they must be empty.
        bitmap = cpu.bitmap
        b = bitmap
        while b:
            top = b.bit_length() - 1
            b ^= 1 << top
            _check_ready_level(cpu, top, in_ready)
        queues = cpu.queues
        for th in threads:
            if th.cpu is cpu:
                level = th.prio
                if queues[level] and not bitmap >> level & 1:
                    raise Bad("the ready bitmap matches the ready queues",
                              f"cpu{cpu.index} priority {level}")
            level = th.rq_prio
            if level >= 0 and queues[level] and not bitmap >> level & 1:
                raise Bad("the ready bitmap matches the ready queues",
                          f"cpu{cpu.index} priority {level}")
    for th in threads:  # the sender queues they own (first, as the full check does)
        q = th.sendq
        if q is not None and q._len:  # (`_len`: the queue's truth test is a Python call)
            for s in q:
                if isinstance(s, Irq):
                    _check_queued_irq(th, s)
                    continue
                sp = s.partner
                if (sp is not th and type(sp) is Thread and sp.sendq is not None
                        and s in sp.sendq):
                    raise Bad("a sender is in at most one queue", f"{s.name} is in two")
                _check_queued_thread(th, s)
    for th in threads:
        # Only a sending thread may sit in its partner's queue; one that is not sending
        # and sits there was reported above, with that queue (its partner is touched).
        p = th.partner
        if th.state == SEND_WAIT and type(p) is Thread:
            q = p.sendq
            owner = p if q is not None and th in q else None
        else:
            owner = None
        _check_thread(k, th, owner, owner is not None, th in in_ready, incoming, blocking)
    if k.touched_tasks:
        for task in k.touched_tasks:
            _check_task(k, task)
        k.touched_tasks.clear()


def check(k: Kernel, incoming: Thread | None = None, blocking: Thread | None = None) -> None:
    """Verify every invariant. `incoming` is a thread being switched to directly (ready,
    in no queue); `blocking` is the thread that is switching away (not yet descheduled)."""
    Bad = KernelInvariantError

    k.check_all = False
    k.touched.clear()
    k.touched_tasks.clear()
    _check_time(k)
    for cpu in k.cpus:  # (an unchecked kernel's fast path may have armed timers lazily)
        if cpu.lazy:
            cpu.arm_lazy()
    entries = [e for cpu in k.cpus for e in cpu.timers]
    dead = sum(1 for e in entries if e[2] is None and e[3] is None)
    if dead != k.dead_timers or dead > len(entries) - dead + TIMER_SLACK:
        raise Bad("the timer heaps hold at most as many cancelled entries as live ones, "
                  "plus a constant", f"{dead} cancelled ({k.dead_timers} counted), "
                  f"{len(entries) - dead} live")

    queued: dict[Thread, Thread] = {}
    for owner in k.threads.values():
        q = owner.sendq
        if not q:
            continue
        for s in q:
            if isinstance(s, Irq):
                _check_queued_irq(owner, s)
                continue
            if s in queued:
                raise Bad("a sender is in at most one queue", f"{s.name} is in two")
            queued[s] = owner
            _check_queued_thread(owner, s)

    in_ready: set[Thread] = set()
    for cpu in k.cpus:
        for level in range(len(cpu.queues)):
            _check_ready_level(cpu, level, in_ready)
        c = cpu.current
        if c is not None and c.cpu is not cpu:
            raise Bad("a running thread is current on its own CPU",
                      f"{c.name} of cpu{c.cpu.index} runs on cpu{cpu.index}")

    for th in k.threads.values():
        _check_thread(k, th, queued.get(th), th in queued, th in in_ready, incoming, blocking)

    for gate in k.gates:
        if gate.thread is not None and gate not in gate.thread.gates:
            raise Bad("a bound gate is listed by its thread", repr(gate))

    for task in k.tasks:
        _check_task(k, task)


def _check_task(k: Kernel, task: Task) -> None:
    """The invariants of one task's object space and memory."""
    Bad = KernelInvariantError
    for sel, cap in enumerate(task.caps):
        if cap is None:
            continue
        obj = cap.obj
        if not obj.alive:
            raise Bad("no capability names a deleted object",
                      f"{task.name}[{sel}] -> {obj!r}")
        if isinstance(obj, Thread) and obj.tid not in k.threads:
            raise Bad("no capability names a deleted object", f"{task.name}[{sel}]")
        if isinstance(obj, IpcGate) and obj.thread is not None and not obj.thread.alive:
            raise Bad("a gate is bound to a live thread", repr(obj))
        if cap.task is not task or cap.sel != sel:
            raise Bad("a capability knows its slot", f"{task.name}[{sel}]")
        pcap = cap.parent
        if pcap is not None:
            if (not 0 < pcap.sel < len(pcap.task.caps) or pcap.task.caps[pcap.sel] is not pcap
                    or pcap.task not in k.tasks):
                raise Bad("no capability without a derivation: its parent is in its slot",
                          f"{task.name}[{sel}] from {pcap.task.name}[{pcap.sel}]")
            if cap not in pcap.children or pcap.obj is not obj:
                raise Bad("a mapped capability is its parent's child, to the same object",
                          f"{task.name}[{sel}]")
            if cap.rights & ~pcap.rights:
                raise Bad("a mapped capability has rights within its parent's",
                          f"{task.name}[{sel}]")
        for kid in cap.children:
            if kid.parent is not cap:
                raise Bad("a capability's children point back at it", f"{task.name}[{sel}]")
    _check_memory(k, task.space)
    if task._io is not None:
        _check_memory(k, task._io)


def _check_ready_place(th: Thread, st: int, ready_queued: bool, incoming: Thread | None,
                       blocking: Thread | None) -> None:
    """A ready thread is in exactly one place: running (or about to: being switched to,
    decided, its wake-up IPI in flight) or in its CPU's ready queue."""
    home = th.cpu
    expected = (th is home.current or th is incoming or th is blocking
                or th is home.action or th in home.incoming)
    if ready_queued == expected:
        raise KernelInvariantError("a ready thread is running or in the ready queue (exactly one)",
                                   f"{th.name} ({state_name(st)})")


def _check_thread(k: Kernel, th: Thread, owner: Thread | None, queued: bool, ready_queued: bool,
                  incoming: Thread | None, blocking: Thread | None) -> None:
    """The invariants of one thread. `owner`: the thread in whose sender queue it sits
    (None: none); `queued`: it sits in some sender queue; `ready_queued`: in a ready queue."""
    Bad = KernelInvariantError
    st = th.state
    p = th.partner
    c = th.reply_caller
    # The two commonest states first, each with only the tests that can fail for it, in
    # the general order (so that a corruption is reported under the same invariant).
    if st == READY:
        if queued:
            raise Bad("no queue holds a thread that is not sending", th.name)
        if p is not None:
            raise Bad("partners point at each other consistently",
                      f"{th.name} ({state_name(st)}) still has a partner")
        if c is not None and (c.state != RECEIVE_WAIT or c.partner is not th):
            raise Bad("a reply capability names a caller waiting for this thread",
                      f"{th.name} holds the reply of {c.name} ({state_name(c.state)})")
        if th.timer is not None:
            raise Bad("a timer is armed only for a waiting thread", th.name)
        _check_ready_place(th, st, ready_queued, incoming, blocking)
        x = th.xfer
    elif st == RECEIVE_WAIT:
        if queued:
            raise Bad("no queue holds a thread that is not sending", th.name)
        if p is not None and p is not th:
            if isinstance(p, Irq):
                if not p.alive:
                    raise Bad("no one waits for a deleted IRQ", f"{th.name} waits for {p.name}")
            elif p.state & DEAD or not p.alive:
                raise Bad("partners point at live threads", f"{th.name} waits for dead {p.name}")
            elif p.reply_caller is not th and th not in k.waiters.get(p, ()):
                raise Bad("a closed receiver is found by its partner (reply capability or "
                          "waiter index)", f"{th.name} waits for {p.name}")
        if c is not None and (c.state != RECEIVE_WAIT or c.partner is not th):
            raise Bad("a reply capability names a caller waiting for this thread",
                      f"{th.name} holds the reply of {c.name} ({state_name(c.state)})")
        timer = th.timer
        if timer is not None and timer[2] is not th:
            raise Bad("a timer is armed only for a waiting thread", th.name)
        if ready_queued:
            raise Bad("a blocked thread is not in the ready queue", th.name)
        x = th.xfer
    else:
        x = _check_thread_state(k, th, st, p, c, owner, queued, ready_queued, incoming,
                                blocking)
    want = th.priority
    if x is not None and k.helping and x.copier is th:
        helped = max([w.prio for w in x.passive().deleters or () if w.cpu is th.cpu],
                     default=-1)
        if helped > want:
            want = helped
    if k.priority_inheritance:
        q = th.sendq
        if q is not None and q._len:
            top = q.top_thread_prio()
            if top > want:
                want = top
        if c is not None and c.prio > want:
            want = c.prio
        if th.prio != want:
            raise Bad("priority inheritance: a server runs at its highest client's priority",
                      f"{th.name} runs at {th.prio}, should be {want}")
    elif th.prio != want:
        raise Bad("without inheritance a thread runs at its own priority (or, helped, "
                  "at its deleter's)", th.name)
    if (st == DRQ_WAIT) != (th.drq is not None):
        raise Bad("a thread waits for a remote handshake exactly while one is in flight",
                  f"{th.name} ({state_name(st)})")
    if st == LOCK_WAIT:
        v = th.lock_victim
        if v is None or th not in (v.deleters or ()) or not v.state & DYING or not v.alive:
            raise Bad("a deleter waits for the lock of a thread whose deletion waits",
                      th.name)
    elif th.lock_victim is not None:
        raise Bad("only a deleter in lock-wait has a victim", th.name)
    deleters = th.deleters
    if deleters:
        for w in deleters:
            if w.state != LOCK_WAIT or w.lock_victim is not th:
                raise Bad("a thread's deleters wait in lock-wait for it",
                          f"{w.name} for {th.name}")


def _check_thread_state(k: Kernel, th: Thread, st: int, p: Thread | Irq | None,
                        c: Thread | None, owner: Thread | None, queued: bool,
                        ready_queued: bool, incoming: Thread | None,
                        blocking: Thread | None) -> Transfer | None:
    """The tests of `_check_thread` that depend on the state, for a state other than
    ready and receive-wait; returns the thread's transfer."""
    Bad = KernelInvariantError
    if st not in STATE_NAMES:
        raise Bad("every state word is a declared state", f"{th.name}: {st:#x}")
    if st == SEND_WAIT:
        if owner is not p or p is None:
            raise Bad("every blocked thread is in exactly the queues its state says",
                      f"{th.name} is in send-wait but not queued at its partner")
    elif queued:
        raise Bad("no queue holds a thread that is not sending", th.name)
    if st & IPC_TRANSFER:  # (receive-wait is `_check_thread`'s own case)
        xf: Transfer | None = th.xfer
        if xf is None or th not in (xf.snd, xf.rcv) or xf.copier is th:
            raise Bad("a thread in a transfer knows it and is its passive side", th.name)
        if xf.copier.xfer is not xf and not xf.abort:
            raise Bad("both sides of a transfer point at it", f"{th.name}, {xf.copier.name}")
    elif st != SEND_WAIT and p is not None:
        raise Bad("partners point at each other consistently",
                  f"{th.name} ({state_name(st)}) still has a partner")
    if c is not None and (c.state != RECEIVE_WAIT or c.partner is not th):
        raise Bad("a reply capability names a caller waiting for this thread",
                  f"{th.name} holds the reply of {c.name} ({state_name(c.state)})")
    timer = th.timer
    if timer is not None and (not st & (SEND_WAIT | RECEIVE_WAIT | IPC_TRANSFER)
                              or timer[2] is not th):
        raise Bad("a timer is armed only for a waiting thread", th.name)
    if st & DEAD:
        if ready_queued or th.sendq or c is not None:
            raise Bad("no queue holds a dead thread", th.name)
    elif st & READY:
        _check_ready_place(th, st, ready_queued, incoming, blocking)
    x: Transfer | None = th.xfer
    if st & RECV_IN_PROGRESS and (x is None or x.copier is not th):
        raise Bad("a thread pulling a message is the copier of its transfer", th.name)
    if ready_queued and st & (SEND_WAIT | RECEIVE_WAIT | IPC_TRANSFER | LOCK_WAIT | DRQ_WAIT):
        raise Bad("a blocked thread is not in the ready queue", th.name)
    return x


def _check_memory(k: Kernel, space: AddressSpace) -> None:
    """Every page-table entry is a node of the mapping database, linked both ways, with
    rights within its parent's and inside its parent's physical range."""
    Bad = KernelInvariantError

    n = 0
    for order, table in space.by_order.items():
        for key, m in table.items():
            n += 1
            where = f"{space.name} {m.base:#x}/{m.order}"
            if m.space is not space or m.order != order or m.base >> order != key:
                raise Bad("a page-table entry is the node it names", where)
            if m.base & ((1 << order) - 1) or m.base + (1 << order) > 1 << space.bits:
                raise Bad("a mapping is aligned and inside its space", where)
            p = m.parent
            if p is None:
                if m.space.task is not k._sigma0_task():
                    raise Bad("only sigma0 holds root mappings", where)
            else:
                if m not in p.children or p.space.by_order.get(p.order, {}).get(
                        p.base >> p.order) is not p:
                    raise Bad("a mapping's parent is in the mapping database", where)
                if m.rights & ~p.rights:
                    raise Bad("a mapping has rights within its parent's", where)
                if not (p.phys <= m.phys and m.phys + (1 << m.order) <= p.phys + (1 << p.order)):
                    raise Bad("a mapping lies inside its parent's frames", where)
                if m.depth != p.depth + 1:
                    raise Bad("a mapping's depth is its parent's plus one", where)
            for c in m.children:
                if c.parent is not m:
                    raise Bad("a mapping's children point back at it", where)
    if n != space.count:
        raise Bad("a space counts its mappings", f"{space.name}: {n} != {space.count}")
    if space.pt_quota is not None and space.pt_bytes > space.pt_quota:
        raise Bad("page tables stay within the quota", space.name)
