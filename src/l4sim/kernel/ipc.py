"""The IPC path: one operation with a send phase and a receive phase.

Every function here runs in the coroutine chain of the thread that entered the kernel
(its kernel stack). The three phases of the lecture are visible in `ipc`:
handshake (find the partner and check its state), transfer (copy the words, remember
the reply capability) and finish (wake the partner, pick who runs next).

The general path handles every case; `fastpath.py` holds the lecture's "fast path for
special cases" (register/UTCB words, partner already waiting, same CPU, nothing to time
out), which falls back to it for anything else. Tests run the same scenarios on both
and compare.

Speed: `ipc` is one generator frame that yields to the CPU loop itself (each coroutine
level costs every IPC on the way down and back up), with the rare cases in helpers.
Neither checking nor tracing, it inlines the capability lookup, the words' transfer and
the receiver's wake-up; a checked or traced run calls the functions it inlines
(`resolve_send`, `transfer._deliver`, `transfer._wake_receiver`), and
`tests/test_ipc_general_speed.py` compares the two.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any, Final

from . import longipc
from .abi import MR_COUNT, NEVER, IpcError, IpcOp, Timeout
from .diagnose import native_coroutine, register_operation
from .irq import deliver_irq
from .irq import unmask as unmask_irq
from .message import load_two_words
from .objects import IpcGate, Irq, Thread
from .result import IpcResult, new_result, result_with
from .sched import INFINITY, cancel_timer, make_ready, quiet_result, update_prio
from .sendq import SenderQueue
from .states import (
    CANCEL,
    DEAD,
    DRQ_WAIT,
    IPC_TRANSFER,
    READY,
    RECEIVE_WAIT,
    RECV_IN_PROGRESS,
    SEND_WAIT,
    TIMEOUT,
)
from .transfer import _deliver, _end_receive_wait, _wake_receiver
from .waits import add_waiter, end_wait, forget_waiter, set_reply_cap

if TYPE_CHECKING:
    from .kernel import Kernel

OK = IpcError.OK
ENOT_EXISTENT = IpcError.ENOT_EXISTENT
SETIMEOUT = IpcError.SETIMEOUT
RETIMEOUT = IpcError.RETIMEOUT
SECANCELED = IpcError.SECANCELED
RECANCELED = IpcError.RECANCELED
SEMSGCUT = IpcError.SEMSGCUT
REMSGCUT = IpcError.REMSGCUT
REMAPFAILED = IpcError.REMAPFAILED
SEMAPFAILED = IpcError.SEMAPFAILED

_R = 4  # CapRights.R: needed to invoke an object

# IpcOp bits as plain ints, as `ipc` takes its operation: IntFlag arithmetic runs Python
# code on every test.
_SEND, _RECEIVE, _OPEN_WAIT, _REPLY = (int(IpcOp.SEND), int(IpcOp.RECEIVE),
                                       int(IpcOp.OPEN_WAIT), int(IpcOp.REPLY))
OP_SEND, OP_RECEIVE, OP_WAIT, OP_CALL = _SEND, _RECEIVE, int(IpcOp.WAIT), int(IpcOp.CALL)
OP_REPLY, OP_REPLY_AND_WAIT = _SEND | _REPLY, int(IpcOp.REPLY_AND_WAIT)

EMPTY_OK = IpcResult(OK)
_SEND_BLOCKED = SEND_WAIT | DRQ_WAIT  # states of a sender blocked in its send phase

# The general IPC operation is a generator flagged as a native coroutine: it yields the
# thread to switch to (or None) to the CPU loop and returns the result.
IpcTrap = Generator["Thread | None", None, IpcResult]


def resolve_send(th: Thread, sel: int) -> tuple[Thread, int, IpcGate | None] | None:
    """Handshake, part 1: the thread a send to selector `sel` reaches, the label it will
    see, and the gate it goes through. None if the capability is empty, out of range,
    lacks R, names the wrong kind of object, or its thread is gone."""
    caps = th.task.caps
    if not 0 < sel < len(caps):
        return None
    cap = caps[sel]
    if cap is None or not cap.rights & _R:
        return None
    obj = cap.obj
    if type(obj) is Thread:
        if obj.state & 0x200 or not obj.alive:  # DEAD
            return None
        return obj, th.tid, None
    if type(obj) is IpcGate:
        dst = obj.thread
        if dst is None or dst.state & 0x200:
            return None
        return dst, obj.label, obj
    return None


def resolve_object(th: Thread, sel: int, rights: int = _R) -> object | None:
    """The live object selector `sel` names in `th`'s task, if its capability has all of
    `rights` (R at least: needed to invoke anything)."""
    caps = th.task.caps
    if not 0 < sel < len(caps):
        return None
    cap = caps[sel]
    rights |= _R
    if cap is None or cap.rights & rights != rights or not cap.obj.alive:
        return None
    return cap.obj


def resolve_thread(th: Thread, sel: int) -> Thread | None:
    """The thread selector `sel` names (not a dead one), or None."""
    obj = resolve_object(th, sel)
    return obj if type(obj) is Thread and not obj.state & 0x200 else None


def resolve_source(th: Thread, sel: int) -> Thread | Irq | None:
    """The sender a closed receive from selector `sel` accepts: the thread or IRQ it
    names, or the thread bound to the gate it names (as a call's reply wait does)."""
    obj = resolve_object(th, sel)
    if type(obj) is IpcGate:
        obj = obj.thread
    if type(obj) is Irq:
        return obj
    return obj if type(obj) is Thread and not obj.state & 0x200 else None


def resolve_irq(th: Thread, sel: int, right: int = _R) -> Irq | None:
    """The IRQ selector `sel` names, if the capability has `right` (and R)."""
    obj = resolve_object(th, sel, right)
    return obj if type(obj) is Irq else None


def tag_fits(tag: int) -> bool:
    """A tag is well formed if its words and typed items (two words each) fit the MRs."""
    return (tag & 0x3F) + 2 * ((tag >> 6) & 0x3F) <= MR_COUNT


def _result_of_wait(k: Kernel, th: Thread) -> IpcResult:
    """Finish: after a blocked thread runs again, its state word says how its wait ended."""
    st = th.state
    if st != READY:  # cancel or timeout bit set by whoever woke us
        k.set_state(th, READY)
    err = th.wake_error
    strings = th.in_strings
    if strings is not None:
        th.in_strings = None
    if err:
        th.wake_error = OK
        if err in (REMSGCUT, REMAPFAILED):
            return result_with(err, th.in_label, th.in_tag, th.in_words, strings)
        return result_with(err, 0, 0, None, strings)
    return result_with(OK, th.in_label, th.in_tag, th.in_words, strings)


def _deliver_cut(k: Kernel, snd: Thread, rcv: Thread, label: int, tag: int,
                 nstrings: int) -> IpcError:
    """A long message for a thread that is copying one of its own (it waits for the
    reply to a page fault of its copy): it has no string buffers to offer, so the
    strings are cut, as for any receiver that offers none -- the words and map items
    arrive, each string with 0 bytes, and a call ends there (no reply capability)."""
    err = _deliver(k, snd, rcv, label, tag, False)
    longipc.empty_string_returns(snd, rcv, tag)
    zeros = (0,) * nstrings
    rcv.in_strings = snd.in_strings = zeros
    if not err:
        rcv.wake_error = REMSGCUT
        err = SEMSGCUT
    return err


class Handshake:
    """What a sender finds at its receiver (Fiasco's check of the receiver in `do_ipc`;
    seL4's case over the endpoint's state). Small ints: matched on every general IPC."""

    WAITING: Final = 0       # the receiver waits in exactly receive-wait and accepts us
    WAITING_LONG: Final = 1  # ... and we carry strings it can take: a long IPC
    BUSY: Final = 2          # the receiver is not ready for us
    REMOTE: Final = 3        # the receiver is on another CPU: the handshake runs there


def handshake(th: Thread, dst: Thread, strings: list[tuple[int, int]] | None) -> int:
    """The `Handshake` case of a send from `th` to `dst` carrying `strings`."""
    if dst.state == RECEIVE_WAIT and (dst.partner is None or dst.partner is th):
        # (a receiver copying a long IPC of its own has no buffers for ours: it is cut)
        return 1 if strings is not None and dst.xfer is None else 0
    return 2


def first_accepted(th: Thread, src: Thread | Irq | None) -> Thread | Irq | None:
    """Sender arrived first: the first queued sender that a receive accepts (open: the
    head of the queue; closed: that thread or IRQ), or None."""
    q = th.sendq
    if not q:
        return None
    if src is None:
        return q.first()
    return src if src.sends_to(th) else None


@types.coroutine
def _ipc(k: Kernel, th: Thread, op: int, sel: int, tag: int,
        snd_to: Timeout = NEVER, rcv_to: Timeout = NEVER,
        unmask: Irq | None = None, dest: Thread | None = None,
        dest_label: int | None = None, pf_to: Timeout = NEVER,
        pair: tuple[int, int] | None = None) -> IpcTrap:
    """The general IPC operation, the lecture's way: the kernel entry, the send phase (if
    op has SEND), then, if it succeeded, the receive phase (if op has RECEIVE; open if
    OPEN_WAIT, else closed on `sel`); `op` is a plain int of IpcOp bits (`OP_CALL`, ...).
    With `unmask`, that IRQ is unmasked first, in the same kernel entry (Fiasco's irq
    receive / irq wait). With `dest`, the kernel sends to that thread on the caller's
    behalf, without a capability (exception and page-fault IPC), seen with `dest_label`
    (default: the caller's tid). `pf_to` is how long a long IPC may wait for page faults
    in the partner's space. `pair`: the message is these two words, loaded into the MRs
    as the IPC starts (a word that does not fit raises there, the MRs untouched); the
    tuple is then the receiver's snapshot of them (none is copied).

    One generator frame that yields to the CPU loop itself (the switch of `trap.py`,
    inlined), with the common cases written out and the rare ones in helpers: every
    coroutine level on this path costs each IPC twice, on the way down and back up."""
    res: IpcResult
    done: IpcResult | None
    if pair is not None:  # two words, loaded as the IPC runs (as on the fast path)
        load_two_words(th.mr, pair)
    if pf_to is not NEVER:
        res = yield from _ipc_with_pf_timeout(k, th, op, sel, tag, snd_to, rcv_to, pf_to)
        return res
    cpu = th.cpu
    if th.state & DEAD or cpu.preempts or k.entry_limit < INFINITY:
        yield from cpu.enter(th)  # (else `Cpu.enter_now`, inlined)
        cpu = th.cpu
    else:
        cpu.entries += 1
        cpu.now += cpu.ipc_costs[0]
    if unmask is not None:
        unmask_irq(k, unmask)
    plain = k.plain  # (kernel code runs atomically up to the switch)
    woken: Thread | None = None  # the partner this operation made ready, not yet queued
    src: Thread | Irq | None = None
    if op & _SEND:
        # --- the send phase: find the receiver, handshake, transfer or wait to be taken.
        # A malformed message fails before anything happens (a reply keeps its capability).
        if tag & 0xFC0:  # typed items (words alone always fit: at most 63)
            if (tag & 0x3F) + 2 * ((tag >> 6) & 0x3F) > MR_COUNT:  # (`tag_fits`, inlined)
                res = yield from cpu.leave(th, IpcResult(SEMSGCUT))
                return res
            strings = longipc.string_items(th.mr, tag)
            if strings is not None and not longipc.strings_fit(strings):
                res = yield from cpu.leave(th, result_with(SEMSGCUT, 0, 0, None,
                                                             (0,) * len(strings)))
                return res
        else:
            strings = None
        call = op & 6 == 2  # RECEIVE without OPEN_WAIT: a call's reply wait follows
        gate: IpcGate | None
        if op & _REPLY:
            # The one-shot reply capability: consumed by this reply, even a failed one.
            dst = th.reply_caller
            if dst is None or dst.state != RECEIVE_WAIT or dst.partner is not th:
                th.reply_caller = None
                if th.prio != th.priority:
                    update_prio(k, th)
                res = yield from cpu.leave(th, IpcResult(ENOT_EXISTENT))
                return res
            if dst.cpu is cpu:
                th.reply_caller = None
                if th.prio != th.priority:
                    update_prio(k, th)
            # (a caller on another CPU waits until the remote handshake ends its wait:
            # that consumes the capability there)
            label, gate, call = th.tid, None, False
        else:
            dst = None
            if dest is not None:
                if not dest.state & DEAD:
                    dst, label, gate = dest, th.tid if dest_label is None else dest_label, None
            elif not plain:
                target = resolve_send(th, sel)
                if target is not None:
                    dst, label, gate = target
            else:  # (`resolve_send`, inlined when neither checking nor tracing: no tuple)
                caps = th.caps  # (the task's list itself)
                if 0 < sel < len(caps):
                    cap = caps[sel]
                    if cap is not None and cap.rights & _R:
                        obj = cap.obj
                        if type(obj) is Thread:
                            if not obj.state & DEAD and obj.alive:
                                dst, label, gate = obj, th.tid, None
                        elif type(obj) is IpcGate:
                            bound = obj.thread
                            if bound is not None and not bound.state & DEAD:
                                dst, label, gate = bound, obj.label, obj
            if dst is None:
                res = yield from cpu.leave(th, IpcResult(ENOT_EXISTENT))
                return res
        if call:
            src = dst
        # Handshake: what do we find at the receiver? (`handshake`, inlined; on another
        # CPU: ask its CPU.)
        if dst.cpu is not cpu:
            # A remote request (Fiasco's DRQ) runs the handshake on the receiver's
            # CPU; we wait for its outcome as a queued sender waits for its receiver.
            post_drq(k, Drq(k, th, dst, label, tag, call, gate, strings,
                            cpu.deadline_of(snd_to), rcv_to, bool(op & _REPLY)))
        elif dst.state == RECEIVE_WAIT and (dst.partner is None or dst.partner is th):
            if strings is None:
                # The receiver waits for us: transfer, and wake it (it runs when we block).
                if tag & 0xFC0 or not plain:
                    err = _deliver(k, th, dst, label, tag, call)
                    _wake_receiver(k, th, dst)
                else:
                    # `_deliver` and `_wake_receiver` for words only, inlined when neither
                    # checking nor tracing (a checked run calls them: the tests compare).
                    n = tag & 0x3F
                    if pair is not None:  # (the entry's tuple: it is the snapshot)
                        dm = dst.mr
                        dm[0], dm[1] = pair
                        dst.in_words = pair
                    elif n:
                        w = th.mr[:n]
                        dst.mr[:n] = w
                        dst.in_words = w
                    else:
                        dst.in_words = None
                    costs = cpu.ipc_costs  # (the copy, on our CPU: the receiver's too)
                    cpu.now += costs[n] - costs[0]
                    dst.in_tag = tag
                    dst.in_label = label
                    dst.wake_error = err = OK
                    if call:
                        if dst.reply_caller is None:
                            dst.reply_caller = th
                        else:
                            set_reply_cap(k, dst, th)
                    if dst.timer is not None:
                        cancel_timer(dst)
                    if k.waiters and dst.partner is th:
                        forget_waiter(k, th, dst)
                    if th.reply_caller is dst:
                        th.reply_caller = None
                        if th.prio != th.priority:
                            update_prio(k, th)
                    dst.partner = None
                    dst.state = READY  # (set_state checks and records only)
                woken = dst
                if err:
                    make_ready(dst)
                    res = yield from cpu.leave(th, IpcResult(err))
                    return res
            elif dst.xfer is not None:
                # The receiver is in a long IPC of its own: no buffers for ours.
                err = _deliver_cut(k, th, dst, label, tag, len(strings))
                th.in_strings = None
                _wake_receiver(k, th, dst)
                woken = dst
                if err:
                    make_ready(dst)
                    res = yield from cpu.leave(th, result_with(err, 0, 0, None,
                                                                 (0,) * len(strings)))
                    return res
            else:
                # Long IPC, the receiver arrived first: we copy, it sleeps (both algorithms).
                done = yield from _send_long(k, th, op, dst, label, tag, call, strings)
                if done is not None:
                    return done
        else:
            # The receiver is not ready: enqueue and block, unless we may not wait.
            r = _queue_sender(k, th, dst, label, tag, gate, call, snd_to, rcv_to)
            if r is not None:
                res = yield from cpu.leave(th, r)
                return res
        if woken is None and th.state & _SEND_BLOCKED:  # (a receiver woken: we are not)
            # Blocked in the send phase: whoever takes our message (or ends the wait)
            # leaves the outcome in our TCB.
            if not plain:
                done = yield from _send_wait(k, th, op, call)
                if done is not None:
                    return done
            else:
                # (`_send_wait`, inlined when neither checking nor tracing: nobody was
                # woken, so the scheduler picks; a short message's outcome is read here)
                yield None
                th.snd_call = False
                if th.xfer is not None or th.in_strings is not None:  # a long message
                    done = yield from _after_send_wait(k, th, op, call)
                    if done is not None:
                        return done
                elif call or th.wake_error or th.state != READY:
                    cpu = th.cpu  # (it may have migrated meanwhile)
                    done = None if cpu.preempts else quiet_result(th, cpu)
                    if done is None:
                        done = yield from cpu.leave(th, _result_of_wait(k, th))
                    return done
                elif not op & _RECEIVE:
                    res = yield from th.cpu.leave(th, EMPTY_OK)
                    return res
            woken = None
        if not op & _RECEIVE:
            if woken is not None:
                make_ready(woken)
            res = yield from th.cpu.leave(th, EMPTY_OK)
            return res
        if op & _OPEN_WAIT:
            src = None
    # --- the receive phase: take a sender that arrived first, or wait for one (or for a
    # call's reply); `woken`, the partner the send phase made ready, runs when we block.
    elif not op & _OPEN_WAIT:
        src = resolve_source(th, sel)
        if src is None:
            res = yield from th.cpu.leave(th, IpcResult(ENOT_EXISTENT))
            return res
    if th.sendq:
        # Did a sender arrive first? Take the first queued one that this receive accepts.
        first = first_accepted(th, src)
        if first is not None:
            res = yield from _take_first(k, th, first, woken)
            return res
    # Receiver arrives first (or a call's send is done): prepare to receive and block.
    cpu = th.cpu
    if rcv_to is NEVER:
        deadline = None
    else:
        deadline = cpu.deadline_of(rcv_to)
        if deadline is not None and deadline <= cpu.now:
            res = yield from cpu.leave(th, _may_not_wait(k, th, src, woken))
            return res
    th.partner = src
    th.in_words = None
    th.in_tag = th.in_label = 0
    if plain:
        th.state = RECEIVE_WAIT  # (set_state checks and records only)
    else:
        k.set_state(th, RECEIVE_WAIT)
    if deadline is not None:
        cpu.arm_timer(th, deadline)
    if type(src) is Thread and src is not th:
        if src.reply_caller is th:
            if th.prio > src.prio:
                update_prio(k, src)  # the server now works for us: it inherits our priority
        else:
            add_waiter(k, src, th)
    # Blocked: switch to the partner we woke (`Cpu.block` and `Cpu.switch_target`, inlined
    # for the common case: no check, and nobody woken or the partner here and of the
    # highest ready priority).
    if plain and (woken is None or (woken.cpu is cpu
                                    and not cpu.bitmap >> (woken.prio + 1))):
        yield woken
    else:
        yield cpu.switch_target(th, woken)
    # (what the kernel is configured with does not change meanwhile: every CPU
    # preempts, or none)
    quiet = plain and not cpu.preempts
    cpu = th.cpu  # (it may have migrated meanwhile)
    # Finish: the state word says how the wait ended (`_result_of_wait` and
    # `Cpu.must_leave`, inlined for a message with nothing due).
    now = cpu.now
    if (quiet and th.state == READY and not th.wake_error and th.in_strings is None
            and now < cpu.slice_end and now < cpu.next_event
            and not cpu.bitmap >> (th.prio + 1)):
        res = new_result(IpcResult)
        res.error = OK
        res.label = th.in_label
        res._tag = th.in_tag
        res._words = th.in_words
        return res
    res = _result_of_wait(k, th)
    if cpu.must_leave(th, res.error):
        res = yield from cpu.leave(th, res)
        return res
    return res


if TYPE_CHECKING:
    def ipc(k: Kernel, th: Thread, op: int, sel: int, tag: int, snd_to: Timeout = NEVER,
            rcv_to: Timeout = NEVER, unmask: Irq | None = None, dest: Thread | None = None,
            dest_label: int | None = None, pf_to: Timeout = NEVER,
            pair: tuple[int, int] | None = None) -> Coroutine[Any, Any, IpcResult]: ...
else:
    # A generator flagged as a native coroutine (as the fast path's entries are): awaited
    # like any `async def`, and one dropped without `await` is reported as such.
    ipc = native_coroutine(_ipc)

longipc.nested_ipc = ipc  # the transfer's nested page-fault IPC is this operation


async def _ipc_with_pf_timeout(k: Kernel, th: Thread, op: int, sel: int, tag: int,
                               snd_to: Timeout, rcv_to: Timeout, pf_to: Timeout) -> IpcResult:
    th.pf_timeout = pf_to
    try:
        return await ipc(k, th, op, sel, tag, snd_to, rcv_to)
    finally:
        th.pf_timeout = NEVER


async def _send_long(k: Kernel, th: Thread, op: int, dst: Thread, label: int, tag: int,
                     call: bool, strings: list[tuple[int, int]]) -> IpcResult | None:
    """The send phase of a long IPC whose receiver arrived first: we copy, it sleeps
    (both algorithms). The operation's result if it ends here, else None."""
    x = longipc.Transfer(th, dst, th, label, tag, call, strings)
    _end_receive_wait(k, th, dst)
    k.set_state(dst, IPC_TRANSFER)
    longipc.begin(k, x)
    err = longipc.end(k, x, await longipc.copy_strings(k, x))
    if err or not op & _RECEIVE:
        return await th.cpu.leave(th, result_with(err, 0, 0, None, tuple(x.done)))
    return None


def _queue_sender(k: Kernel, th: Thread, dst: Thread, label: int, tag: int,
                  gate: IpcGate | None, call: bool, snd_to: Timeout,
                  rcv_to: Timeout) -> IpcResult | None:
    """The receiver is not ready: `th` queues at it (SEND_WAIT), or, if its send timeout
    is over, the send ends with SETIMEOUT (the result, to leave with)."""
    deadline = th.cpu.deadline_of(snd_to)
    if deadline is not None and deadline <= th.cpu.now:
        return IpcResult(SETIMEOUT)
    q = dst.sendq
    if q is None:
        q = dst.sendq = SenderQueue()
    q.enqueue(th, th.prio)
    th.partner = dst
    th.snd_label = label
    th.snd_tag = tag
    th.snd_gate = gate
    th.snd_call = call
    th.rcv_timeout = rcv_to
    k.set_state(th, SEND_WAIT)
    if deadline is not None:
        th.cpu.arm_timer(th, deadline)
    if th.prio > dst.prio:
        update_prio(k, dst)
    return None


async def _send_wait(k: Kernel, th: Thread, op: int, call: bool) -> IpcResult | None:
    """Blocked in the send phase (queued, or a remote handshake in flight): whoever takes
    our message (or ends the wait) leaves the outcome in our TCB. The operation's result
    if it ends here, else None (a send-and-open-wait goes on to its receive phase)."""
    await th.cpu.block(th, None)
    th.snd_call = False
    return await _after_send_wait(k, th, op, call)


async def _after_send_wait(k: Kernel, th: Thread, op: int, call: bool) -> IpcResult | None:
    """`_send_wait` after the wait: what whoever ended it left in our TCB."""
    mine: longipc.Transfer | None = th.xfer
    if mine is not None and mine.copier is th and not mine.started:
        # We copy: the receiver took us and woke us (sender-driven), or our
        # remote handshake found it waiting.
        err = longipc.end(k, mine, await longipc.copy_strings(k, mine))
        if err or not op & _RECEIVE:
            return await th.cpu.leave(th, result_with(err, 0, 0, None, tuple(mine.done)))
        return None
    if th.in_strings is not None and not call:
        # Our long message was taken (and copied by the receiver): its byte counts.
        done = th.in_strings
        th.in_strings = None
        if th.state != READY:
            k.set_state(th, READY)
        err = th.wake_error
        th.wake_error = OK
        if err or not op & _RECEIVE:
            return await th.cpu.leave(th, result_with(err, 0, 0, None, done))
        return None
    if call or th.wake_error or th.state != READY:
        return await th.cpu.leave(th, _result_of_wait(k, th))
    if not op & _RECEIVE:
        return await th.cpu.leave(th, EMPTY_OK)
    return None  # a send-and-open-wait whose send was taken: on to the receive phase


async def _take_first(k: Kernel, th: Thread, first: Thread | Irq,
                      woken: Thread | None) -> IpcResult:
    """The receive phase found a sender that arrived first: take it."""
    if woken is not None:  # the partner of our send phase queues behind us
        make_ready(woken)
    if type(first) is Irq:
        # An interrupt is pending for us: its one bit is the message.
        assert th.sendq is not None
        th.sendq.remove(first)
        first.queued = False
        return await th.cpu.leave(th, deliver_irq(k, first, th))
    assert type(first) is Thread
    stag = first.snd_tag
    strings = longipc.string_items(first.mr, stag) if stag & 0xFC0 else None
    if strings is not None and th.xfer is None:
        # A long message: we pull it (symmetric), or the sender copies.
        res = await take_long_sender(k, th, first, strings)  # (it may move meanwhile)
        return await th.cpu.leave(th, res)
    # A short message (or, while we copy one of our own, strings we cut).
    return await th.cpu.leave(th, take_queued_sender(k, th, first, strings))


def _may_not_wait(k: Kernel, th: Thread, src: Thread | Irq | None,
                  woken: Thread | None) -> IpcResult:
    """A receive whose timeout is already over: RETIMEOUT without waiting."""
    if type(src) is Thread and src.reply_caller is th:
        # A call that may not wait for its reply: the reply capability ends with it.
        src.reply_caller = None
        if src.prio != src.priority:
            update_prio(k, src)
    if woken is not None:
        make_ready(woken)
    return IpcResult(RETIMEOUT)


class Drq:
    """A remote request (Fiasco's DRQ): the handshake of a send from `th` to `dst`,
    which runs on `dst`'s CPU when the inter-processor interrupt that carries it
    arrives, the cost model's `ipi` after it was sent. It is its own event: calling it
    runs the handshake (no closure per request)."""

    __slots__ = ("k", "th", "dst", "label", "tag", "call", "gate", "strings", "deadline",
                 "rcv_to", "reply")

    def __init__(self, k: Kernel, th: Thread, dst: Thread, label: int, tag: int, call: bool,
                 gate: IpcGate | None, strings: list[tuple[int, int]] | None,
                 deadline: int | None, rcv_to: Timeout, reply: bool) -> None:
        self.k = k
        self.th = th
        self.dst = dst
        self.label = label
        self.tag = tag
        self.call = call
        self.gate = gate
        self.strings = strings
        self.deadline = deadline  # the send timeout's end (None: never)
        self.rcv_to = rcv_to      # a call's reply timeout, which starts at the handshake
        self.reply = reply

    def __call__(self) -> None:
        remote_handshake(self.k, self)


def post_drq(k: Kernel, req: Drq) -> None:
    """Send the handshake of `req` to its receiver's CPU; the sender waits (DRQ_WAIT)."""
    th, there = req.th, req.dst.cpu
    here = th.cpu
    th.drq = req
    k.set_state(th, DRQ_WAIT)
    if k.trace:
        k.record(th, "drq", f"handshake with {req.dst.name}: from cpu{here.index} "
                 f"to cpu{there.index}")
    there.push_event([here.now + k.costs.ipi, k.next_seq(), None, req])


def remote_handshake(k: Kernel, req: Drq) -> None:
    """The handshake of a send, run on the receiver's CPU (the kernel's data is shared;
    the decision is that CPU's). The same cases as on one CPU, each ending the sender's
    DRQ wait with its outcome; its wake-up goes back by IPI."""
    th, dst = req.th, req.dst
    if th.drq is not req:
        return  # the sender was canceled or deleted while the request was in flight
    th.drq = None
    here = k.executing or dst.cpu
    strings = req.strings
    if req.reply and th.reply_caller is dst:
        th.reply_caller = None  # the one-shot reply capability is used now
        if th.prio != th.priority:
            update_prio(k, th)
    if dst.state & 0x200 or not dst.alive:  # DEAD: the partner went meanwhile
        return _answer(k, th, ENOT_EXISTENT)
    case = handshake(th, dst, strings)
    if req.reply and case == Handshake.BUSY:
        return _answer(k, th, ENOT_EXISTENT)  # the caller stopped waiting for our reply
    match case:
        case Handshake.WAITING_LONG:
            # Long IPC, the receiver waits: it sleeps, and we copy on our own CPU.
            assert strings is not None
            x = longipc.Transfer(th, dst, th, req.label, req.tag, req.call, strings)
            _end_receive_wait(k, th, dst)
            k.set_state(dst, IPC_TRANSFER)
            longipc.begin(k, x)
            _answer(k, th, OK)
        case Handshake.WAITING:
            # The receiver waits for us: transfer, wake it here, and tell the sender.
            if strings is None:
                err = _deliver(k, th, dst, req.label, req.tag, req.call)
            else:  # the receiver is in a long IPC of its own: no buffers for ours
                err = _deliver_cut(k, th, dst, req.label, req.tag, len(strings))
            _wake_receiver(k, th, dst)
            make_ready(dst)
            if err or not req.call:
                return _answer(k, th, err)
            # A call: its atomic switch to the reply wait happens here, with the handshake.
            deadline = here.deadline_of(req.rcv_to)
            if deadline is not None and deadline <= here.now:
                dst.reply_caller = None  # it may not wait: the reply capability ends
                if dst.prio != dst.priority:
                    update_prio(k, dst)
                return _answer(k, th, RETIMEOUT)
            th.partner = dst
            th.in_words = None
            th.in_tag = th.in_label = 0
            k.set_state(th, RECEIVE_WAIT)
            if deadline is not None:
                th.cpu.arm_timer(th, deadline)
            if th.prio > dst.prio:
                update_prio(k, dst)  # the server now works for us: it inherits our priority
        case Handshake.BUSY:
            # The receiver is not ready: the sender queues, unless its timeout is over.
            if req.deadline is not None and req.deadline <= here.now:
                return _answer(k, th, SETIMEOUT)
            q = dst.sendq
            if q is None:
                q = dst.sendq = SenderQueue()
            q.enqueue(th, th.prio)
            th.partner = dst
            th.snd_label = req.label
            th.snd_tag = req.tag
            th.snd_gate = req.gate
            th.snd_call = req.call
            th.rcv_timeout = req.rcv_to
            k.set_state(th, SEND_WAIT)
            if req.deadline is not None:
                th.cpu.arm_timer(th, req.deadline)
            if th.prio > dst.prio:
                update_prio(k, dst)
    return None


def _answer(k: Kernel, th: Thread, err: IpcError) -> None:
    """End a sender's DRQ wait with `err` (OK: its send is done); an IPI wakes it."""
    th.wake_error = err
    k.set_state(th, READY)
    make_ready(th)


def take_queued_sender(k: Kernel, th: Thread, snd: Thread,
                       strings: list[tuple[int, int]] | None = None) -> IpcResult:
    """Symmetric algorithm, case 2: the receiver dequeues the sender, transfers and wakes it.

    A call's sender switches atomically to waiting for our reply and stays blocked.
    `strings`: the sender's strings, which we (copying a long IPC of our own) cut."""
    q = th.sendq
    assert q is not None
    q.remove(snd)
    if snd.timer is not None:
        cancel_timer(snd)
    call = snd.snd_call
    if strings is not None:
        err = _deliver_cut(k, snd, th, snd.snd_label, snd.snd_tag, len(strings))
        th.in_strings = None
        th.wake_error = OK
        result = result_with(REMSGCUT if err == SEMSGCUT else IpcError(err | 1), th.in_label,
                             th.in_tag, th.in_words, (0,) * len(strings))
        snd.wake_error = err
        call = False
        err = OK  # (reported above, with the string counts)
    else:
        err = _deliver(k, snd, th, snd.snd_label, snd.snd_tag, call)
        result = IpcResult(OK, th.in_label, th.in_tag, th.in_words)
    if err:
        th.wake_error = OK
        result = IpcResult(IpcError(err | 1), th.in_label, th.in_tag, th.in_words)
        snd.wake_error = err
        call = False
    snd.snd_label = snd.snd_tag = 0
    snd.snd_gate = None
    if call:
        snd.partner = th
        snd.in_words = None
        snd.in_tag = snd.in_label = 0
        k.set_state(snd, RECEIVE_WAIT)
        deadline = snd.cpu.deadline_of(snd.rcv_timeout)
        snd.rcv_timeout = None
        if deadline is not None:
            snd.cpu.arm_timer(snd, deadline)  # an expired one fires at the next preemption point
    else:
        snd.partner = None
        k.set_state(snd, READY)
        make_ready(snd)
    if th.prio != th.priority or snd.prio > th.prio:
        update_prio(k, th)
    return result


async def take_long_sender(k: Kernel, th: Thread, snd: Thread,
                           strings: list[tuple[int, int]]) -> IpcResult:
    """The receiver takes a queued sender whose message has strings. Symmetric: it pulls
    the message itself (receive-in-progress), the sender sleeps. Sender-driven: it wakes
    the sender to copy and blocks until the sender is done."""
    q = th.sendq
    assert q is not None
    q.remove(snd)
    if snd.timer is not None:
        cancel_timer(snd)
    x = longipc.Transfer(snd, th, snd, snd.snd_label, snd.snd_tag, snd.snd_call, strings)
    snd.snd_label = snd.snd_tag = 0
    snd.snd_gate = None
    if snd.prio > th.prio or th.prio != th.priority:
        update_prio(k, th)
    if k.transfer == "sender-driven":
        snd.partner = None
        snd.rcv_timeout = None if not x.call else snd.rcv_timeout
        k.set_state(snd, READY)
        k.set_state(th, IPC_TRANSFER)
        th.partner = None
        longipc.begin(k, x)
        await th.cpu.block(th, snd)  # wake up the sender and block
        return _result_of_wait(k, th)
    x.copier = th
    k.set_state(snd, IPC_TRANSFER)
    k.set_state(th, READY | RECV_IN_PROGRESS)
    longipc.begin(k, x)
    err = longipc.end(k, x, await longipc.copy_strings(k, x))
    strings_done = tuple(x.done)
    th.in_strings = None  # we pulled it: the result is ours now, not a later wait's
    th.wake_error = OK    # ... and so is any error: none is left for a later wait
    if err and err not in (SEMSGCUT, SEMAPFAILED):
        return result_with(IpcError(err | 1), 0, 0, None, strings_done)
    return result_with(IpcError(err | 1) if err else OK, th.in_label, th.in_tag, th.in_words,
                       strings_done)


def cancel_ipc(k: Kernel, victim: Thread) -> bool:
    """ex_regs(cancel): end `victim`'s wait before rendezvous. False if it was not waiting."""
    st = victim.state
    if st == SEND_WAIT:
        err = SECANCELED
    elif st == RECEIVE_WAIT:
        err = RECANCELED
    elif st == DRQ_WAIT:
        req = victim.drq
        if req is not None and req.reply:
            # A reply is a send that never waits: its handshake in flight on the other
            # CPU is the kernel still doing the reply, which a cancel does not stop.
            return False
        victim.drq = None  # the request in flight finds the sender gone
        err = SECANCELED
    else:
        return longipc.cancel(k, victim)  # after rendezvous: aborted
    end_wait(k, victim, err, READY | CANCEL)
    return True


def expire(k: Kernel, victim: Thread) -> None:
    """A timeout expired: SETIMEOUT in the send phase, RETIMEOUT in the receive phase."""
    victim.timer = None
    if longipc.expiry_ignored(victim):
        k.record(victim, "timeout", "ignored: the long IPC's transfer has begun")
        return
    err = SETIMEOUT if victim.state == SEND_WAIT else RETIMEOUT
    end_wait(k, victim, err, READY | TIMEOUT)


register_operation(ipc, "ipc")
register_operation(_ipc_with_pf_timeout, "ipc")
