"""Who waits for whom, and the end of a wait.

A sender waits in its partner's sender queue; a caller waiting for its reply is found
through its partner's one-shot reply capability (`Thread.reply_caller`); every other
closed receiver through the waiter index (`Kernel.waiters`). These functions keep the
three consistent, so that whoever ends a wait -- a partner, a timeout, a cancel, a
deletion -- finds every thread concerned without a scan and leaves no reference behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .abi import IpcError
from .objects import Thread
from .sched import cancel_timer, make_ready, update_prio
from .states import READY, RECEIVE_WAIT, SEND_WAIT

if TYPE_CHECKING:
    from .kernel import Kernel


def set_reply_cap(k: Kernel, holder: Thread, caller: Thread) -> None:
    """`holder` received a call from `caller`: it now holds the one-shot reply
    capability to it. A previous caller still waiting keeps waiting, without one
    (found through the waiter index) and no longer lends its priority."""
    old = holder.reply_caller
    holder.reply_caller = caller
    if old is not None and old is not caller:
        if old.state == RECEIVE_WAIT and old.partner is holder:
            k.waiters.setdefault(holder, {})[old] = None
        if holder.prio != holder.priority:
            update_prio(k, holder)


def add_waiter(k: Kernel, partner: Thread, waiter: Thread) -> None:
    """`waiter` waits in a closed receive on `partner` without holding its reply
    capability: remember it, so that `partner`'s end can tell it."""
    if partner.reply_caller is not waiter:
        k.waiters.setdefault(partner, {})[waiter] = None


def forget_waiter(k: Kernel, partner: Thread, waiter: Thread) -> None:
    ws = k.waiters.get(partner)
    if ws is not None:
        ws.pop(waiter, None)
        if not ws:
            del k.waiters[partner]


def leave_queues(k: Kernel, victim: Thread) -> Thread | None:
    """Take a waiting thread out of the sender queue it sits in, drop the reply capability
    that names it, and disarm its timer. Returns the partner whose priority may drop."""
    partner = victim.partner
    if victim.state == SEND_WAIT:
        assert isinstance(partner, Thread) and partner.sendq is not None
        partner.sendq.remove(victim)
        victim.snd_gate = None
        victim.snd_call = False
        victim.rcv_timeout = None
    elif isinstance(partner, Thread) and partner.reply_caller is victim:
        partner.reply_caller = None
    else:
        if isinstance(partner, Thread) and partner is not victim:
            forget_waiter(k, partner, victim)
        partner = None
    if victim.timer is not None:
        cancel_timer(victim)
    victim.partner = None
    if k.check and isinstance(partner, Thread):
        k.touched.add(partner)  # its queue or reply capability changed
    return partner if isinstance(partner, Thread) else None


def wake_waiter(k: Kernel, th: Thread, new_state: int = READY) -> None:
    """A receive-wait ends with what the waker left in `th`'s TCB (a message, or
    `wake_error`): disarm the timer, forget the partner, make it ready."""
    if th.timer is not None:
        cancel_timer(th)
    th.partner = None
    k.set_state(th, new_state)
    make_ready(th)


def end_wait(k: Kernel, victim: Thread, err: IpcError, new_state: int) -> None:
    """End a wait abnormally: leave every queue, record the error for the victim to
    report when it runs again, make it ready."""
    partner = leave_queues(k, victim)
    victim.wake_error = err
    k.set_state(victim, new_state)
    make_ready(victim)
    if partner is not None and partner.prio != partner.priority:
        update_prio(k, partner)
