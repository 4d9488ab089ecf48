"""Interrupt objects as senders: trigger, unmask, bind, detach.

An IRQ is a sender of the kernel's: when it triggers, its bound thread receives a message
(label -1, the bound label) if it waits for it; otherwise the IRQ queues in the thread's
sender queue at priority 255 -- once: one pending bit, triggers coalesce. After a
delivery the IRQ stays masked until its receiver unmasks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .abi import IpcError
from .result import IpcResult
from .sendq import SenderQueue
from .states import RECEIVE_WAIT
from .waits import wake_waiter

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Irq, Thread



IRQ_TAG = -1 << 16  # MsgTag(label=-1): the IRQ protocol


def deliver_irq(k: Kernel, irq: Irq, th: Thread) -> IpcResult:
    """Interrupt IPC: one bit of information, tag label -1 and the bound label; the
    source is masked until its receiver unmasks it."""
    irq.pending = False
    irq.masked = True
    th.in_tag = IRQ_TAG
    th.in_label = irq.label
    th.in_words = None
    th.wake_error = IpcError.OK
    if k.trace:
        k.record(th, "irq", f"{irq.name} delivered, masked")
    return IpcResult(IpcError.OK, irq.label, IRQ_TAG, None)


def trigger(k: Kernel, irq: Irq) -> None:
    """The source fires: deliver to its thread if that waits for it, else queue the
    IRQ in its sender queue at priority 255; masked, unbound or already pending, the
    trigger only sets (or coalesces into) the pending bit."""
    if irq.pending or irq.masked or irq.thread is None:
        irq.pending = True
        return
    th = irq.thread
    if th.state == RECEIVE_WAIT and (th.partner is None or th.partner is irq):
        deliver_irq(k, irq, th)
        wake_waiter(k, th)
        return
    irq.pending = True
    irq.queued = True
    q = th.sendq
    if q is None:
        q = th.sendq = SenderQueue()
    q.enqueue(irq, 255)  # kernel senders queue at the top priority
    if k.check:
        k.touched.add(th)
    k.record(th, "irq", f"{irq.name} queued")


def unmask(k: Kernel, irq: Irq) -> None:
    """Enable the source again; a trigger held while it was masked is delivered now."""
    if not irq.masked:
        return
    irq.masked = False
    if irq.pending and not irq.queued:
        irq.pending = False
        trigger(k, irq)


def bind(k: Kernel, irq: Irq, th: Thread, label: int) -> None:
    """Attach `th` to the IRQ with `label`; a pending trigger is delivered now."""
    if irq.thread is not None:
        detach(k, irq)
    irq.thread = th
    irq.label = label
    th.irqs.append(irq)
    if irq.pending and not irq.masked:
        irq.pending = False
        trigger(k, irq)


def detach(k: Kernel, irq: Irq) -> None:
    """Detach the IRQ from its thread; a queued delivery goes back to pending."""
    th = irq.thread
    if th is None:
        return
    if irq.queued:
        assert th.sendq is not None
        th.sendq.remove(irq)
        irq.queued = False
    th.irqs.remove(irq)
    irq.thread = None
    if k.check:
        k.touched.add(th)
