"""The transfer at a rendezvous: the words into the receiver's MRs, the typed items
(flexpage.py), the reply capability of a call, and the end of the receiver's wait.

Both the IPC path (`ipc.py`) and user-memory IPC (`longipc.py`, which delivers the words
and items once the strings are copied) use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .abi import IpcError
from .flexpage import transfer_items
from .sched import cancel_timer, update_prio
from .states import READY
from .tracelog import message_text
from .waits import forget_waiter, set_reply_cap

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Thread

OK = IpcError.OK


def _deliver(k: Kernel, snd: Thread, rcv: Thread, label: int, tag: int, call: bool) -> IpcError:
    """Transfer: copy the untyped words into the receiver's MRs, apply the typed items
    (flexpage.py); set its reply capability. A failed item ends the transfer with a
    send-side error for the sender and its receive-side twin for the receiver, the words
    (and the items before it) delivered."""
    n = tag & 0x3F
    if n:
        w = snd.mr[:n]
        rcv.mr[:n] = w
        rcv.in_words = w
    else:
        rcv.in_words = None
    rcv.in_tag = tag
    rcv.in_label = label
    (k.executing or snd.cpu).charge_transfer(n)  # the CPU that copies: a DRQ's is the receiver's
    nitems = (tag >> 6) & 0x3F
    if nitems:
        err = transfer_items(k, snd, rcv, n, nitems)
        if err:
            rcv.wake_error = IpcError(err | 1)
            if k.trace:
                k.record(snd, "transfer", f"to {rcv.name}: {n} words, items failed: {err.name}"
                         + message_text(tag, label, rcv.in_words))
            return err
    rcv.wake_error = OK
    if call:
        set_reply_cap(k, rcv, snd)
    if k.trace:
        k.record(snd, "transfer", f"to {rcv.name}: {n} words" + (f", {nitems} items" if nitems else "")
                 + message_text(tag, label, rcv.in_words))
    return OK


def _end_receive_wait(k: Kernel, snd: Thread, rcv: Thread) -> None:
    """Rendezvous: `rcv`'s wait for a sender ends with our message. If it was waiting for
    our reply and we sent it something else, the reply capability we hold for it ends
    with that wait."""
    if rcv.partner is snd:
        forget_waiter(k, snd, rcv)
    if snd.reply_caller is rcv:
        snd.reply_caller = None
        if snd.prio != snd.priority:
            update_prio(k, snd)


def _wake_receiver(k: Kernel, snd: Thread, rcv: Thread) -> None:
    """The receiver's wait is over: it becomes ready (the caller decides where it runs)."""
    if rcv.timer is not None:
        cancel_timer(rcv)
    _end_receive_wait(k, snd, rcv)
    rcv.partner = None
    if k.check or k.trace:
        k.set_state(rcv, READY)
    else:
        rcv.state = READY  # (set_state checks and records only)
