"""The IPC fast path: the lecture's "short cut" for the common case.

`call` and `reply_and_wait` of the user context *are* these two functions: each is a
system-call entry that, for words only and a partner already waiting on the same CPU
with no higher-priority thread ready, loads the MRs, transfers, and
switches straight to the partner, all in one generator frame that yields to the CPU
loop itself (the switch of `trap.py`, inlined). Being the method saves a Python call
and a frame per IPC, which is a quarter of the whole round trip. Finite timeouts are
taken too: the send phase ends at once (the partner waits), and the wait that follows
arms its timer when it blocks; the partner's wake-up cancels the partner's timer. With
several CPUs it serves partners on one CPU; other CPUs' steps may come between the switch
and the resume, which returns quietly only as the general path's exit would
(`sched.resumed_quietly`).

A call whose only item is one string goes to `stringpath.call_string`, the same short
cut for a long IPC. Map items and receive windows (a pager's sigma0 call and its
replies) take `call_to` and `_reply_typed`: the message loaded by the general path's
loader, then the same short cut with the items applied by `transfer_items`; the kernel's
page-fault IPC uses `call_to` too. Anything else takes the general path (`ipc.ipc`), which does the
same thing with every check, the declared state transitions and the trace. The fast path is used only when
the kernel neither checks invariants nor traces; `tests/test_fastpath.py` runs the same
programs both ways and compares every observable.

Note: these are generator functions flagged as native coroutines (`native_coroutine`):
like every IPC they must be awaited, and one that is not is reported as such.
"""

from __future__ import annotations

import types
from collections.abc import Generator, Iterable, Sequence
from typing import TYPE_CHECKING, cast

from .abi import (
    NEVER,
    ZERO,
    Fpage,
    IpcError,
    MapItem,
    MsgTag,
    StringItem,
    Timeout,
)
from .diagnose import native_coroutine, register_operation, word_error
from .flexpage import transfer_items
from .ipc import OP_CALL, OP_REPLY_AND_WAIT, _result_of_wait, ipc, tag_fits
from .longipc import string_items
from .message import load_words
from .objects import IpcGate, Thread
from .result import IpcResult, LongIpcResult, new_result
from .sched import (
    INFINITY,
    LAZY_TIMER,
    TIMER_SLACK,
    arm_lazy_timer,
    bound_dead_timers,
    cancel_timer,
    make_ready,
    quiet_result,
    update_prio,
)
from .states import READY, RECEIVE_WAIT
from .stringpath import call_string
from .transfer import _wake_receiver
from .waits import set_reply_cap

if TYPE_CHECKING:
    from ..user.context import UserContext
    from .kernel import Kernel
    from .sched import Cpu

OK = IpcError.OK
Trap = Generator[Thread | None, None, IpcResult]
Windows = Fpage | Sequence[Fpage] | None  # receive windows (`window=`)
Buffers = Sequence[tuple[int, int]] | None  # string receive buffers (`buffers=`)


def _with_label(label: int, n: int) -> int:
    if type(label) is not int:
        raise TypeError(f"a label is an int, got {type(label).__name__}")
    if not -(1 << 47) <= label < (1 << 47):
        raise OverflowError(f"label {label} does not fit 48 signed bits")
    return label << 16 | n


@native_coroutine
@types.coroutine
def call(t: UserContext, dest: int, words: Sequence[int] = (), label: int = 0,
         items: Iterable[MapItem | StringItem] = (), send_timeout: Timeout = NEVER,
         receive_timeout: Timeout = NEVER, pagefault_timeout: Timeout = NEVER,
         tag: MsgTag | None = None, window: Windows = None, buffers: Buffers = None) -> Trap:
    """Send to `dest` and wait for the reply from it (its gate's thread) only."""
    if tag is None:
        if not (not items and t.fast and type(dest) is int and window is None
                and buffers is None and pagefault_timeout is NEVER
                and (send_timeout is NEVER or type(send_timeout) is Timeout)
                and (receive_timeout is NEVER or type(receive_timeout) is Timeout)):
            if (t.fast and type(items) is list and len(items) == 1 and not words and not label
                    and type(items[0]) is StringItem and window is None and buffers is None
                    and send_timeout is NEVER and receive_timeout is NEVER
                    and pagefault_timeout is NEVER):
                return (yield from call_string(t, dest, items[0]))
            tagraw = t._prepare_call(dest, words, label, items, send_timeout, receive_timeout,
                                     pagefault_timeout, tag, window, buffers)
            if (t.fast and buffers is None and pagefault_timeout is NEVER
                    and (send_timeout is NEVER or type(send_timeout) is Timeout)
                    and (receive_timeout is NEVER or type(receive_timeout) is Timeout)):
                # Map items or a receive window (a pager's sigma0 call): the typed fast path.
                callee, clbl = _callee(t._th, dest)
                if callee is not None:
                    r = yield from call_to(t._k, t._th, callee, clbl, tagraw, receive_timeout)
                    if r is not None:
                        return r
            return cast(IpcResult, (yield from ipc(
                t._k, t._th, OP_CALL, dest, tagraw, send_timeout, receive_timeout,
                pf_to=pagefault_timeout)))
        th = t._th
        # The common message, two words: the receiver's snapshot is a tuple of them.
        if type(words) is tuple and len(words) == 2:
            snap = words
        elif type(words) is list and len(words) == 2:
            snap = (words[0], words[1])
        else:
            snap = None
        if snap is not None:
            mr = th.mr
            old = mr[0]
            try:
                mr[0], mr[1] = snap
            except (OverflowError, TypeError) as exc:
                mr[0] = old  # all or nothing, as `message.load_two_words`
                raise word_error(words, exc) from None
            n = 2
        else:
            n = load_words(th.mr, words) if words else 0
        msgtag = _with_label(label, n) if label else n
    else:
        # UTCB IPC: the message is already in the MRs; the tag says how much.
        if not (type(tag) is MsgTag and not words and not items and not label
                and t.fast and type(dest) is int and window is None and buffers is None
                and pagefault_timeout is NEVER
                and (send_timeout is NEVER or type(send_timeout) is Timeout)
                and (receive_timeout is NEVER or type(receive_timeout) is Timeout)):
            tagraw = t._prepare_call(dest, words, label, items, send_timeout, receive_timeout,
                                     pagefault_timeout, tag, window, buffers)
            return cast(IpcResult, (yield from ipc(
                t._k, t._th, OP_CALL, dest, tagraw, send_timeout, receive_timeout,
                pf_to=pagefault_timeout)))
        th = t._th
        msgtag = tag.raw
        n = msgtag & 0x3F
        snap = None
    caps = th.caps
    if 0 < dest < len(caps) and not msgtag & 0xFC0:  # typed items: the general path
        cap = caps[dest]
        if cap is not None and cap.rights & 4:
            obj = cap.obj
            dst: Thread | None
            if type(obj) is Thread:
                dst = obj
                lbl = th.tid
            elif type(obj) is IpcGate:
                dst = obj.thread
                lbl = obj.label
            else:
                dst = None
            # (A receiver in a closed wait for us takes the general path: ending that
            # wait also ends what ties it to us -- our reply capability for it and the
            # priority it lends us, or its entry among our waiters.)
            if dst is not None and dst.state == RECEIVE_WAIT and dst.partner is None:
                cpu = th.cpu
                cost = cpu.ipc_costs[n]
                if receive_timeout is NEVER:
                    deadline = None
                elif receive_timeout._mhz == t._k.mhz:  # (its cycles, known: as there)
                    deadline = cpu.now + cost + receive_timeout._rel
                    if deadline >= INFINITY:
                        deadline = None
                else:  # the reply wait's deadline, from the end of the send
                    deadline = _reply_deadline(cpu, receive_timeout, cost)
                if (dst.cpu is cpu and not cpu.bitmap >> (dst.prio + 1)
                        and (deadline is None or deadline > cpu.now + cost)):
                    # Transfer: one slice copy of the words; finish: the partner runs next.
                    if snap is not None:  # two words: the snapshot
                        dm = dst.mr
                        dm[0], dm[1] = snap
                        dst.in_words = snap
                    elif n:
                        w = th.mr[:n]
                        dst.mr[:n] = w
                        dst.in_words = w
                    else:
                        dst.in_words = None
                    dst.in_tag = msgtag
                    dst.in_label = lbl
                    if dst.reply_caller is None:
                        dst.reply_caller = th
                    else:  # its previous caller waits on, without a reply capability
                        set_reply_cap(t._k, dst, th)
                    entry = dst.timer
                    if entry is not None:  # its receive timeout ends with the wait
                        if entry is LAZY_TIMER:  # (`cancel_timer`, inlined)
                            dst.timer = None
                        else:
                            entry[2] = dst.timer = None
                            k = t._k
                            k.dead_timers += 1
                            if k.dead_timers > TIMER_SLACK:
                                bound_dead_timers(k)
                    dst.partner = None
                    dst.state = READY
                    th.partner = dst
                    th.state = RECEIVE_WAIT
                    cpu.entries += 1
                    cpu.now += cost
                    if deadline is not None:  # armed on block, cancelled by the reply
                        k = t._k  # (`arm_lazy_timer`, inlined)
                        k._seq += 1
                        th.timer_seq = k._seq
                        th.timer_at = deadline
                        th.timer = LAZY_TIMER
                        if not th.timer_listed:
                            th.timer_listed = True
                            cpu.lazy.append(th)
                        if deadline < cpu.next_event:
                            cpu.next_event = deadline
                    if th.prio > dst.prio:
                        update_prio(t._k, dst)
                    yield dst  # the switch
                    # (a long message's string counts take the general exit)
                    if (th.state == READY and not th.wake_error and th.in_strings is None
                            and cpu.now < cpu.slice_end and cpu.now < cpu.next_event
                            and (cpu.alone or (th.cpu is cpu  # (`resumed_quietly`, inlined)
                                               and not cpu.bitmap >> (th.prio + 1)))):
                        r = new_result(IpcResult)
                        r.error = OK
                        r.label = th.in_label
                        r._tag = th.in_tag
                        r._words = th.in_words
                        return r
                    k = t._k
                    # An error, the end of the timeslice or an event due: the general exit.
                    return cast(IpcResult, (yield from th.cpu.leave(th, _result_of_wait(k, th))))
    return cast(IpcResult, (yield from ipc(t._k, th, OP_CALL, dest, msgtag, send_timeout,
                                           receive_timeout)))


@native_coroutine
@types.coroutine
def reply_and_wait(t: UserContext, words: Sequence[int] = (), label: int = 0,
                   items: Iterable[MapItem | StringItem] = (), receive_timeout: Timeout = NEVER,
                   pagefault_timeout: Timeout = NEVER, tag: MsgTag | None = None,
                   window: Windows = None, buffers: Buffers = None) -> Trap:
    """Reply to the last caller (zero send timeout), then wait openly. If the reply
    fails, its error is returned and no receive happens (check `r.ok`).

    Loading the message and the transfer are the same steps as in `call`, written out
    again on purpose: a shared helper would cost a Python call, 6 % of a round trip."""
    if tag is None:
        if not (not items and t.fast and window is None and buffers is None
                and pagefault_timeout is NEVER
                and (receive_timeout is NEVER or type(receive_timeout) is Timeout)):
            tagraw = t._prepare_reply_and_wait(words, label, items, receive_timeout,
                                               pagefault_timeout, tag, window, buffers)
            if (t.fast and buffers is None and pagefault_timeout is NEVER
                    and (receive_timeout is NEVER or type(receive_timeout) is Timeout)):
                # Map items (a pager's reply) or a receive window: the typed fast path.
                r = yield from _reply_typed(t._k, t._th, tagraw, receive_timeout)
                if r is not None:
                    return r
            return cast(IpcResult, (yield from ipc(
                t._k, t._th, OP_REPLY_AND_WAIT, 0, tagraw, ZERO, receive_timeout,
                pf_to=pagefault_timeout)))
        th = t._th
        # The common message, two words: the receiver's snapshot is a tuple of them.
        if type(words) is tuple and len(words) == 2:
            snap = words
        elif type(words) is list and len(words) == 2:
            snap = (words[0], words[1])
        else:
            snap = None
        if snap is not None:
            mr = th.mr
            old = mr[0]
            try:
                mr[0], mr[1] = snap
            except (OverflowError, TypeError) as exc:
                mr[0] = old  # all or nothing, as `message.load_two_words`
                raise word_error(words, exc) from None
            n = 2
        else:
            n = load_words(th.mr, words) if words else 0
        msgtag = _with_label(label, n) if label else n
    else:
        if not (type(tag) is MsgTag and not words and not items and not label
                and t.fast and window is None and buffers is None
                and pagefault_timeout is NEVER
                and (receive_timeout is NEVER or type(receive_timeout) is Timeout)):
            tagraw = t._prepare_reply_and_wait(words, label, items, receive_timeout,
                                               pagefault_timeout, tag, window, buffers)
            return cast(IpcResult, (yield from ipc(
                t._k, t._th, OP_REPLY_AND_WAIT, 0, tagraw, ZERO, receive_timeout,
                pf_to=pagefault_timeout)))
        th = t._th
        msgtag = tag.raw
        n = msgtag & 0x3F
        snap = None
    c = th.reply_caller
    if (c is not None and c.state == RECEIVE_WAIT and c.partner is th
            and not th.sendq and not msgtag & 0xFC0):
        cpu = th.cpu
        cost = cpu.ipc_costs[n]
        if receive_timeout is NEVER:
            deadline = None
        elif receive_timeout._mhz == t._k.mhz:  # (its cycles, known: as there)
            deadline = cpu.now + cost + receive_timeout._rel
            if deadline >= INFINITY:
                deadline = None
        else:  # the open wait's deadline, from the end of the reply
            deadline = _reply_deadline(cpu, receive_timeout, cost)
        if (c.cpu is cpu and not cpu.bitmap >> (c.prio + 1)
                and (deadline is None or deadline > cpu.now + cost)):
            th.reply_caller = None
            if snap is not None:  # two words: the snapshot
                cm = c.mr
                cm[0], cm[1] = snap
                c.in_words = snap
            elif n:
                w = th.mr[:n]
                c.mr[:n] = w
                c.in_words = w
            else:
                c.in_words = None
            c.in_tag = msgtag
            c.in_label = th.tid
            entry = c.timer
            if entry is not None:  # the caller's reply wait ends: so does its timeout
                if entry is LAZY_TIMER:  # (`cancel_timer`, inlined)
                    c.timer = None
                else:
                    entry[2] = c.timer = None
                    k = t._k
                    k.dead_timers += 1
                    if k.dead_timers > TIMER_SLACK:
                        bound_dead_timers(k)
            c.partner = None
            c.state = READY
            th.state = RECEIVE_WAIT
            cpu.entries += 1
            cpu.now += cost
            if deadline is not None:
                th.in_words = None
                th.in_tag = th.in_label = 0
                k = t._k  # (`arm_lazy_timer`, inlined)
                k._seq += 1
                th.timer_seq = k._seq
                th.timer_at = deadline
                th.timer = LAZY_TIMER
                if not th.timer_listed:
                    th.timer_listed = True
                    cpu.lazy.append(th)
                if deadline < cpu.next_event:
                    cpu.next_event = deadline
            if th.prio != th.priority:
                update_prio(t._k, th)
            yield c  # the switch
            if (th.state == READY and not th.wake_error
                    and cpu.now < cpu.slice_end and cpu.now < cpu.next_event
                    and (cpu.alone or (th.cpu is cpu  # (`resumed_quietly`, inlined)
                                       and not cpu.bitmap >> (th.prio + 1)))):
                strings = th.in_strings
                if strings is None:
                    r = new_result(IpcResult)
                else:  # a long message's byte counts (as `_result_of_wait` reports them)
                    th.in_strings = None
                    r = new_result(LongIpcResult)
                    r._strings = strings
                r.error = OK
                r.label = th.in_label
                r._tag = th.in_tag
                r._words = th.in_words
                return r
            k = t._k
            return cast(IpcResult, (yield from th.cpu.leave(th, _result_of_wait(k, th))))
    return cast(IpcResult, (yield from ipc(t._k, th, OP_REPLY_AND_WAIT, 0, msgtag, ZERO,
                                           receive_timeout)))


# --- typed messages and kernel-made calls ------------------------------------------------
# Map items, receive windows and the page-fault IPC: the same fast path with the items
# applied by `transfer_items` (as `_deliver` does), one Python call more than the register
# path, which stays as it is. A failed item ends the IPC as on the general path.
TypedTrap = Generator[Thread | None, None, IpcResult | None]


def _callee(th: Thread, dest: int) -> tuple[Thread | None, int]:
    """The thread a call to selector `dest` goes to and the label it sees (None: the
    general path decides, with its errors)."""
    caps = th.caps
    if 0 < dest < len(caps):
        cap = caps[dest]
        if cap is not None and cap.rights & 4:
            obj = cap.obj
            if type(obj) is Thread:
                return obj, th.tid
            if type(obj) is IpcGate:
                return obj.thread, obj.label
    return None, 0


def _reply_deadline(cpu: Cpu, receive_timeout: Timeout, cost: int) -> int | None:
    """When the reply wait of a fast IPC costing `cost` ends (None: never): its receive
    timeout counts from the end of the send."""
    if receive_timeout is NEVER:
        return None
    deadline = receive_timeout.deadline(cpu.now + cost, cpu.k.mhz)  # (caches its cycles)
    return None if deadline is None or deadline >= INFINITY else deadline


def _typed_ok(th: Thread, msgtag: int) -> bool:
    """A message the typed fast path takes: well formed, without string items."""
    return not msgtag & 0xFC0 or (tag_fits(msgtag) and string_items(th.mr, msgtag) is None)


@types.coroutine
def call_to(k: Kernel, th: Thread, dst: Thread, lbl: int, msgtag: int,
            receive_timeout: Timeout = NEVER) -> TypedTrap:
    """The fast path of a call of `th` to `dst` (seen with label `lbl`) whose message is
    in the MRs, typed items included; None, with nothing done, if it does not apply."""
    if not (dst.state == RECEIVE_WAIT and dst.partner is None  # (closed waits: general)
            and _typed_ok(th, msgtag)):
        return None
    cpu = th.cpu
    n = msgtag & 0x3F
    cost = cpu.ipc_costs[n]
    deadline = _reply_deadline(cpu, receive_timeout, cost)
    if not (dst.cpu is cpu and not cpu.bitmap >> (dst.prio + 1)
            and (deadline is None or deadline > cpu.now + cost)):
        return None
    cpu.entries += 1
    cpu.now += cost
    w = th.mr[:n] if n else None
    if w is not None:
        dst.mr[:n] = w
    dst.in_words = w
    dst.in_tag = msgtag
    dst.in_label = lbl
    nitems = (msgtag >> 6) & 0x3F
    if nitems:
        err = transfer_items(k, th, dst, n, nitems)
        if err:  # as `_deliver` and the general path's send phase end
            dst.wake_error = IpcError(err | 1)
            _wake_receiver(k, th, dst)
            make_ready(dst)
            return cast(IpcResult, (yield from cpu.leave(th, IpcResult(err))))
    dst.wake_error = OK
    if dst.reply_caller is None:
        dst.reply_caller = th
    else:
        set_reply_cap(k, dst, th)
    cancel_timer(dst)  # its receive timeout ends with the wait
    dst.partner = None
    dst.state = READY
    th.partner = dst
    th.state = RECEIVE_WAIT
    if deadline is not None:  # armed on block, cancelled by the reply
        arm_lazy_timer(k, cpu, th, deadline)
    if th.prio > dst.prio:
        update_prio(k, dst)
    yield dst
    r = quiet_result(th, cpu)
    if r is not None:
        return r
    return cast(IpcResult, (yield from th.cpu.leave(th, _result_of_wait(k, th))))


@types.coroutine
def _reply_typed(k: Kernel, th: Thread, msgtag: int, receive_timeout: Timeout) -> TypedTrap:
    """`reply_and_wait`'s fast path for a message already in the MRs, typed items
    included; None, with nothing done, if it does not apply."""
    c = th.reply_caller
    if not (c is not None and c.state == RECEIVE_WAIT and c.partner is th
            and not th.sendq and _typed_ok(th, msgtag)):
        return None
    cpu = th.cpu
    n = msgtag & 0x3F
    cost = cpu.ipc_costs[n]
    deadline = _reply_deadline(cpu, receive_timeout, cost)
    if not (c.cpu is cpu and not cpu.bitmap >> (c.prio + 1)
            and (deadline is None or deadline > cpu.now + cost)):
        return None
    cpu.entries += 1
    cpu.now += cost
    th.reply_caller = None
    w = th.mr[:n] if n else None
    if w is not None:
        c.mr[:n] = w
    c.in_words = w
    c.in_tag = msgtag
    c.in_label = th.tid
    nitems = (msgtag >> 6) & 0x3F
    if nitems:
        err = transfer_items(k, th, c, n, nitems)
        if err:  # as `_deliver` and the general path's send phase end
            if th.prio != th.priority:
                update_prio(k, th)
            c.wake_error = IpcError(err | 1)
            _wake_receiver(k, th, c)
            make_ready(c)
            return cast(IpcResult, (yield from cpu.leave(th, IpcResult(err))))
    c.wake_error = OK
    cancel_timer(c)  # its receive timeout ends with the wait
    c.partner = None
    c.state = READY
    th.state = RECEIVE_WAIT
    th.in_words = None
    th.in_tag = th.in_label = 0
    if deadline is not None:  # armed on block, cancelled by the reply
        arm_lazy_timer(k, cpu, th, deadline)
    if th.prio != th.priority:
        update_prio(k, th)
    yield c
    r = quiet_result(th, cpu)
    if r is not None:
        return r
    return cast(IpcResult, (yield from th.cpu.leave(th, _result_of_wait(k, th))))


register_operation(call, "call")
register_operation(reply_and_wait, "reply_and_wait")
