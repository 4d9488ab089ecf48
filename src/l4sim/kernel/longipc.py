"""User-memory (long) IPC: string items copied between two address spaces.

Layout (l4sim's own, L4 X.2 style: Fiasco has no string items):
- send item: w0 = length << 12 | 0x4, w1 = the address in the sender's space;
- receive buffers: BR[j] = size << 12 | 0x4, BR[j + 1] = the address, consecutive pairs
  from the BR index in BDR bits 15-19 (the user API's `buffers=` puts them at BR6);
- returned in the receiver's MRs in place of each string item: w0 = delivered << 12 |
  0x4, w1 = the buffer address.

The transfer, as the lecture draws it. The thread that copies (the *copier*) runs in its
own chain at its own priority; its partner is passively blocked (IPC_TRANSFER).
`symmetric`: whichever partner arrives second copies (a receiver that takes a queued
sender pulls the message: READY|RECV_IN_PROGRESS). `sender-driven`: the sender always
copies; a receiver that finds a queued sender wakes it and blocks. The copy goes page by
page with a preemption point between pages (long IPC runs with interrupts enabled) and
revalidates the partner after each. A page fault in either space suspends the copy and
makes a nested page-fault IPC from the copier's chain on behalf of the thread whose space
faulted (the pager sees its tid and its address; the mapping lands in its space), bounded
by the partner's page-fault timeout. The passive partner is locked against deletion
while the copy runs, except while a page fault is handled: a deletion in between waits
(DYING) until the lock is released.

Copy strategies (identical results, different costs): `kernel-buffer` copies each piece
into a kernel buffer and out again (string_byte_kernel_buffer per byte, and a switch of
address spaces per transfer); `window` maps the receiver's buffer into the kernel's IPC
window and copies once (string_byte_window per byte, window_setup whenever the window
must be established: at the start, and after every thread switch or page fault, which
flush it).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from .abi import BR_COUNT, NEVER, IpcError, IpcOp, Label, Timeout
from .memory import USER_SPACE_BITS
from .sched import cancel_timer, make_ready, update_prio
from .states import CANCEL, DEAD, DYING, IPC_TRANSFER, READY, RECEIVE_WAIT, RECV_IN_PROGRESS
from .transfer import _deliver, _wake_receiver

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Thread
    from .result import IpcResult

# The transfer calls up into two layers above it: the IPC path, for the nested
# page-fault IPC of a copy, and the end of threads, for a deletion that waited for the
# lock. Each installs itself here when imported, so that this module imports neither.
def _not_installed(*_: Any) -> Any:
    raise RuntimeError("the IPC path or the end of threads has not installed its hook")


nested_ipc: Callable[..., Coroutine[Any, Any, IpcResult]] = _not_installed
delete_now: Callable[[Kernel, Thread], None] = _not_installed

STRING = 0x4
BUFFER_BDR_SHIFT = 15
BUFFER_BR = 6          # where `buffers=` puts the first string buffer
PAGE = 4096
_SPACE_END = 1 << USER_SPACE_BITS
_R, _W = 4, 2
PF_TAG = Label.PAGE_FAULT << 16 | 2
_ALL = 63 << 6
_KERNEL_IP = (1 << 64) - 1  # Fiasco's MR1 for a fault taken in kernel mode

OK = IpcError.OK
SEMSGCUT = IpcError.SEMSGCUT
SEABORTED = IpcError.SEABORTED
SESNDPFTO = IpcError.SESNDPFTO
SERCVPFTO = IpcError.SERCVPFTO


class Transfer:
    """The state of one long IPC, kept in both threads' TCBs (`Thread.xfer`) while it
    runs: who copies, what, how far (`done`: bytes per string), and what happened to it
    meanwhile (`abort`: a send-side error set by a cancel or a deletion)."""

    __slots__ = ("snd", "rcv", "copier", "label", "tag", "call", "strings", "buffers",
                 "done", "abort", "locked", "delete_pending", "window", "started")

    def __init__(self, snd: Thread, rcv: Thread, copier: Thread, label: int, tag: int,
                 call: bool, strings: list[tuple[int, int]]) -> None:
        self.snd = snd
        self.rcv = rcv
        self.copier = copier
        self.label = label
        self.tag = tag
        self.call = call
        self.strings = strings
        self.buffers = receive_buffers(rcv)
        self.done = [0] * len(strings)
        self.abort = OK
        self.locked = False
        self.delete_pending = False
        self.window = False
        self.started = False  # the copy has begun (a copier's nested fault IPC is not a start)

    def passive(self) -> Thread:
        return self.rcv if self.copier is self.snd else self.snd


def string_items(mr: Sequence[int], tag: int) -> list[tuple[int, int]] | None:
    """The (address, length) of each string item of a message, or None if it has none."""
    n = tag & 0x3F
    found: list[tuple[int, int]] | None = None
    for i in range(n, n + 2 * ((tag >> 6) & 0x3F), 2):
        w0 = mr[i]
        if w0 & 0xC == STRING:
            if found is None:
                found = []
            found.append((mr[i + 1], w0 >> 12))
    return found


def strings_fit(strings: list[tuple[int, int]]) -> bool:
    """Every string lies inside the address space (else the send fails, nothing done)."""
    return all(addr + length <= _SPACE_END for addr, length in strings)


def receive_buffers(th: Thread) -> list[tuple[int, int]]:
    """The string receive buffers `th` offers: (address, size) from its BRs."""
    br = th.utcb._br
    if br is None:
        return []
    j = (th.utcb.bdr >> BUFFER_BDR_SHIFT) & 0x1F
    out = []
    while j + 1 < BR_COUNT and br[j] & 0xC == STRING:
        addr, size = br[j + 1], br[j] >> 12
        if addr + size > _SPACE_END:
            size = 0  # a buffer outside the space takes nothing
        out.append((addr, size))
        j += 2
    return out


def _translate(th: Thread, addr: int, need: int) -> tuple[int, int]:
    """(physical address, bytes mapped from there on) for `addr`, or (-1, 0)."""
    m = th.task.space.lookup(addr)
    if m is None or not m.rights & need:
        return -1, 0
    return m.phys + addr - m.base, m.base + (1 << m.order) - addr


def revalidate(x: Transfer) -> IpcError:
    """After a preemption point or a page fault: is the transfer still on?"""
    if x.abort:
        return x.abort
    partner = x.passive()
    if partner.state & DEAD or not partner.alive or partner.xfer is not x:
        return SEABORTED
    return OK


async def copy_strings(k: Kernel, x: Transfer) -> IpcError:
    """Copy every string, in the copier's chain: OK, SEMSGCUT (a buffer too small or
    missing), or the send-side code of an abort or a page-fault timeout."""
    copier, snd, rcv = x.copier, x.snd, x.rcv
    cpu = copier.cpu
    view = k.phys.view
    costs = k.costs
    kernel_buffer = k.copy == "kernel-buffer"
    rate = costs.string_byte_kernel_buffer if kernel_buffer else costs.string_byte_window
    if kernel_buffer and snd.task is not rcv.task:
        cpu.now += costs.space_switch  # the copy switches to the other address space
    cut = False
    x.locked = True
    x.started = True
    for i, (saddr, slen) in enumerate(x.strings):
        if i >= len(x.buffers):
            cut = True
            continue
        baddr, bsize = x.buffers[i]
        n = slen if slen <= bsize else bsize
        cut = cut or slen > bsize
        off = 0
        faulted: tuple[Thread, int] | None = None  # the last fault: (whose space, where)
        while off < n:
            s, d = saddr + off, baddr + off
            src, srun = _translate(snd, s, _R)
            if src < 0:
                if faulted == (snd, s):
                    return SEABORTED  # the pager's reply left it unmapped: no retry in long IPC
                err = await _fault(k, x, snd, s, False)
                if err:
                    return err
                cpu = copier.cpu  # (moved meanwhile, the copier goes on where it is now)
                faulted = snd, s
                continue
            dst, drun = _translate(rcv, d, _W)
            if dst < 0:
                if faulted == (rcv, d):
                    return SEABORTED
                err = await _fault(k, x, rcv, d, True)
                if err:
                    return err
                cpu = copier.cpu
                faulted = rcv, d
                continue
            if not kernel_buffer and not x.window:
                cpu.now += costs.window_setup  # map the receiver's buffer into the window
                x.window = True
            span = min(n - off, srun, drun)
            # Copy up to the page in which the next event falls due: the preemption
            # point between pages is then exactly where it would be page by page.
            room = min(cpu.slice_end, cpu.next_event) - cpu.now
            if rate > 0 and room < span * rate:
                upto = s + max(0, int(room / rate))
                span = min(span, (upto | (PAGE - 1)) + 1 - s)
            if kernel_buffer:
                view[dst:dst + span] = bytes(view[src:src + span])
            else:
                view[dst:dst + span] = view[src:src + span]
            cpu.now += int(span * rate)
            off += span
            x.done[i] = off
            if (cpu.now >= cpu.slice_end or cpu.now >= cpu.next_event
                    or cpu.bitmap >> (copier.prio + 1)):
                await cpu.preemption_point(copier, True)
                cpu = copier.cpu
                x.window = False  # flushed by the switch
                err = revalidate(x)
                if err:
                    return err
        err = revalidate(x)
        if err:
            return err
    return SEMSGCUT if cut else OK


async def _fault(k: Kernel, x: Transfer, owner: Thread, addr: int, write: bool) -> IpcError:
    """A page fault in `owner`'s space during the copy: a nested page-fault IPC to its
    pager, from the copier's chain, on `owner`'s behalf; OK when it was resolved."""
    in_sender = owner is x.snd
    limit = (x.rcv if in_sender else x.snd).pf_timeout  # the partner's page-fault timeout
    pager = k.default_pager() if owner.pager_default else owner.pager
    if k.trace:
        k.record(x.copier, "page fault", f"{'write' if write else 'read'} at {addr:#x} in "
                 f"{owner.name}'s space during long IPC -> {pager.name if pager else 'no pager'}")
    if pager is None or pager.state & DEAD or not pager.alive:
        return SEABORTED
    copier = x.copier
    _unlock(k, x)   # a deletion that waited for the lock happens now
    err = revalidate(x)
    if err:
        return err
    pulling = copier.state == READY | RECV_IN_PROGRESS
    if pulling:
        k.set_state(copier, READY)
    utcb, mr = copier.utcb, copier.mr
    br = utcb.br
    saved = mr[0], mr[1], utcb.bdr, br[0], br[1]
    present = owner.task.space.lookup(addr) is not None  # mapped, without the right
    mr[0] = (addr & ~7) | (2 if write else 0) | (1 if present else 0)
    mr[1] = _KERNEL_IP
    br[0], br[1], utcb.bdr = 8, _ALL, 0
    copier.pf_target = owner
    copier.cpu.now += k.costs.page_fault
    to = NEVER if limit is NEVER else Timeout.at(copier.cpu.deadline_of(limit) or 0)
    r = await nested_ipc(k, copier, int(IpcOp.CALL), 0, PF_TAG, to, to, dest=pager,
                  dest_label=owner.tid)
    copier.pf_target = None
    mr[0], mr[1], utcb.bdr, br[0], br[1] = saved
    x.window = False
    if copier.state & DEAD:
        return SEABORTED
    if pulling:
        k.set_state(copier, READY | RECV_IN_PROGRESS)
    x.locked = True
    err = revalidate(x)
    if err:
        return err
    if r.error in (IpcError.SETIMEOUT, IpcError.RETIMEOUT):
        k.record(copier, "page fault", "page-fault timeout")
        return SESNDPFTO if in_sender else SERCVPFTO
    if r.error or r.tag.label < 0:
        return SEABORTED
    return OK


def _unlock(k: Kernel, x: Transfer) -> None:
    x.locked = False
    if x.delete_pending:
        x.delete_pending = False
        victim = x.passive()
        k.record(victim, "delete", "the transfer lock is released: deleted now")
        delete_now(k, victim)


def begin(k: Kernel, x: Transfer) -> None:
    """Rendezvous done: both threads point at the transfer."""
    x.snd.xfer = x
    x.rcv.xfer = x
    if k.trace:
        k.record(x.copier, "transfer", f"long IPC {x.snd.name} -> {x.rcv.name}: "
                 f"{len(x.strings)} strings, {sum(n for _, n in x.strings)} bytes, "
                 f"{x.copier.name} copies ({k.transfer}, {k.copy})")


def end(k: Kernel, x: Transfer, err: IpcError) -> IpcError:
    """The copy is over (`err`: its send-side outcome). Deliver the words and map items
    unless it was aborted, tell both sides; the passive partner is made ready (or, the
    sender of a call that succeeded, waits for the reply). Returns the send-side code.

    The passive partner may have left the transfer meanwhile (deleted, or aborted by a
    cancel and gone on to another IPC): then it is not touched, and the copy counts as
    aborted."""
    snd, rcv, copier = x.snd, x.rcv, x.copier
    passive = x.passive()
    present = passive.xfer is x and not passive.state & DEAD
    for th in (snd, rcv):
        if th.xfer is x:
            th.xfer = None
    strings = tuple(x.done)
    if not present:
        err = err or SEABORTED
    elif err in (OK, SEMSGCUT):
        err2 = _deliver(k, snd, rcv, x.label, x.tag, x.call and err == OK)
        if err == SEMSGCUT:
            rcv.wake_error = IpcError.REMSGCUT
        else:
            err = err2
        _string_returns(x, strings)
    elif passive is rcv:
        rcv.in_words = None
        rcv.in_tag = rcv.in_label = 0
        rcv.wake_error = IpcError(err | 1)
    if present:
        if passive is snd:
            snd.wake_error = err
        rcv.in_strings = strings
    deleted = present and x.delete_pending
    if deleted:
        # The partner's deletion waited for the lock: the transfer is complete, now it goes.
        _unlock(k, x)
    if copier.state & RECV_IN_PROGRESS:
        k.set_state(copier, READY)  # the pull is over
    if k.trace:
        k.record(copier, "transfer", f"long IPC {snd.name} -> {rcv.name} ended "
                 f"{err.name if err else 'OK'}: {list(strings)} bytes")
    if deleted or not present:
        return err
    if passive is rcv:
        rcv_err = rcv.wake_error
        _wake_receiver(k, snd, rcv)
        rcv.wake_error = rcv_err
        make_ready(rcv)
    else:
        snd.in_strings = strings
        if snd.timer is not None:
            cancel_timer(snd)
        if x.call and not err:
            snd.partner = rcv
            snd.in_words = None
            snd.in_tag = snd.in_label = 0
            snd.in_strings = None
            k.set_state(snd, RECEIVE_WAIT)
            deadline = snd.cpu.deadline_of(snd.rcv_timeout)
            snd.rcv_timeout = None
            if deadline is not None:
                snd.cpu.arm_timer(snd, deadline)
        else:
            snd.partner = None
            snd.rcv_timeout = None
            snd.wake_error = err
            k.set_state(snd, READY)
            make_ready(snd)
        if rcv.prio != rcv.priority or snd.prio > rcv.prio:
            update_prio(k, rcv)  # a caller now waits for our reply: we work for it
    return err


def empty_string_returns(snd: Thread, rcv: Thread, tag: int) -> None:
    """Write a return item of 0 bytes for each string item of a message that was cut
    without a transfer (the receiver had no buffers to offer)."""
    n = tag & 0x3F
    smr, rmr = snd.mr, rcv.mr
    for i in range(n, n + 2 * ((tag >> 6) & 0x3F), 2):
        if smr[i] & 0xC == STRING:
            rmr[i] = STRING
            rmr[i + 1] = 0


def _string_returns(x: Transfer, strings: tuple[int, ...]) -> None:
    """Write each string item's return item into the receiver's MRs."""
    tag = x.tag
    n = tag & 0x3F
    smr, rmr = x.snd.mr, x.rcv.mr
    k = 0
    for i in range(n, n + 2 * ((tag >> 6) & 0x3F), 2):
        if smr[i] & 0xC == STRING:
            got = strings[k]
            rmr[i] = got << 12 | STRING
            rmr[i + 1] = x.buffers[k][0] if k < len(x.buffers) else 0
            k += 1


def abort_passive(k: Kernel, victim: Thread, why: str) -> None:
    """End the passive side of a transfer now (a cancel, or the copier is gone): it
    reports the abort in its own phase; the copier learns at its next revalidation."""
    x = victim.xfer
    assert x is not None
    x.abort = SEABORTED
    victim.xfer = None
    if x.delete_pending:
        # Its deletion waited for the transfer lock, which goes with the transfer.
        x.delete_pending = False
        k.record(victim, "transfer", f"aborted: {why}; the deletion that waited goes now")
        delete_now(k, victim)
        return
    victim.in_strings = tuple(x.done)
    victim.wake_error = SEABORTED if victim is x.snd else IpcError.REABORTED
    victim.in_words = None
    if victim.timer is not None:
        cancel_timer(victim)
    victim.partner = None
    victim.rcv_timeout = None
    if k.trace:
        k.record(victim, "transfer", f"aborted: {why}")
    k.set_state(victim, READY | CANCEL)
    make_ready(victim)


def cancel(k: Kernel, victim: Thread) -> bool:
    """ex_regs(cancel) after rendezvous: the transfer is aborted on both sides."""
    x = victim.xfer
    if x is None:
        return False
    if victim is x.copier:
        if victim.state & (READY | RECV_IN_PROGRESS) and not victim.state & ~(READY | RECV_IN_PROGRESS):
            x.abort = SEABORTED  # the copier stops at its next revalidation
            k.record(victim, "transfer", "cancel after rendezvous: abort at the next check")
            return True
        return False  # in a nested page fault: that IPC is cancelled instead
    abort_passive(k, victim, "canceled after rendezvous")
    return True


def thread_ends(k: Kernel, th: Thread) -> None:
    """`th` dies in the middle of a transfer: its partner is told, nothing points at it."""
    x = th.xfer
    if x is None:
        return
    th.xfer = None
    other = x.rcv if th is x.snd else x.snd
    if th is x.copier:
        if other.xfer is x and other.state & IPC_TRANSFER:
            abort_passive(k, other, f"{th.name} died during the transfer")
    else:
        x.abort = SEABORTED  # the copier sees it at its next revalidation


def defer_delete(k: Kernel, th: Thread) -> bool:
    """A deletion of a thread locked in a transfer waits for the lock (DYING)."""
    x = th.xfer
    if x is None or th is x.copier or not x.locked:
        return False
    if not x.delete_pending:
        x.delete_pending = True
        k.set_state(th, th.state | DYING)
        k.record(th, "delete", "locked in a long IPC: deleted when the lock is released")
    return True


def expiry_ignored(th: Thread) -> bool:
    """A timeout that expires after the rendezvous of a long IPC is ignored (the lecture:
    once receive-in-progress is set)."""
    return bool(th.state & (IPC_TRANSFER | RECV_IN_PROGRESS))
