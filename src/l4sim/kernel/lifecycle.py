"""The end of threads and the deletion of objects, and the bookkeeping of who waits for
whom that makes them safe: nothing may point at a dead thread afterwards.

A caller waiting for its reply is found through its partner's one-shot reply capability
(`Thread.reply_caller`); every other closed receiver through the waiter index
(`Kernel.waiters`), so that a thread's end tells each of them without a scan.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from . import diagnose, longipc
from .errors import KernelInvariantError, ThreadDeleted, ThreadKilled
from .flexpage import release_task
from .ipc import ENOT_EXISTENT, SECANCELED
from .irq import detach as irq_detach
from .objects import IpcGate, Irq, KernelObject, Task, Thread
from .sched import cancel_timer, make_ready, update_prio
from .states import CANCEL, DEAD, LOCK_WAIT, READY, RECEIVE_WAIT, SEND_WAIT
from .waits import end_wait, leave_queues, wake_waiter

if TYPE_CHECKING:
    from .kernel import Kernel


def _dead_resume(_: None) -> Thread | None:
    raise RuntimeError("a deleted thread was resumed")


def thread_ended(k: Kernel, th: Thread, value: Any, exc: BaseException | None) -> None:
    if th.state & DEAD:
        return  # killed already: its chain only finished unwinding
    if exc is None:
        th.result = value
        th.returned = True
        end_thread(k, th, None)
    else:
        end_thread(k, th, diagnose.exception_reason(exc))


def foreign_await(k: Kernel, th: Thread) -> None:
    """`th` awaited something that is not an l4sim operation: it dies of it."""
    coro = th.coro
    where = diagnose.suspended_at(coro)
    end_thread(k, th, f"{where}: {diagnose.FOREIGN_AWAIT}" if where
                     else diagnose.FOREIGN_AWAIT)
    if coro is not None:
        th.coro = None
        th.resume = _dead_resume
        with contextlib.suppress(BaseException):
            coro.close()


def end_thread(k: Kernel, th: Thread, reason: str | None) -> None:
    """A thread ends (returned, died or deleted): leave every queue, tell every partner."""
    k.check_all = True  # its partners are told everywhere: the next check is a full one
    x = th.xfer
    if x is not None:
        longipc.thread_ends(k, th)
    if th.lock_victim is not None:  # it was waiting to delete a locked thread
        stop_waiting_for_lock(k, th)
    if th.deleters:  # deleters waited for our transfer lock: the deletion is done
        release_deleters(k, th)
    if th.state & (SEND_WAIT | RECEIVE_WAIT):
        partner = leave_queues(k, th)
        # (a thread sending to itself is its own partner: nothing to pass on)
        if partner is not None and partner is not th and partner.prio != partner.priority:
            update_prio(k, partner)
    if th.timer is not None:
        cancel_timer(th)
    th.drq = None  # a remote handshake in flight finds us gone
    if th.rq_prio >= 0:
        th.cpu.dequeue(th)
    for irq in list(th.irqs):  # its interrupts stay pending until bound again
        irq_detach(k, irq)
    q = th.sendq
    if q:
        for s in list(q):  # senders queued at a dying receiver end SECANCELED
            if isinstance(s, Thread):
                end_wait(k, s, SECANCELED, READY | CANCEL)
    waiting = dict(k.waiters.pop(th, {}))
    if th.reply_caller is not None:
        waiting[th.reply_caller] = None
    for other in sorted(waiting, key=lambda w: w.tid):
        if other.state == RECEIVE_WAIT and other.partner is th:
            other.wake_error = ENOT_EXISTENT  # its reply (or closed) partner is gone
            wake_waiter(k, other)
    th.reply_caller = None
    th.partner = None
    th.prio = th.priority  # nobody lends priority to a dead thread
    for gate in th.gates:
        gate.thread = None
    th.gates.clear()
    k.set_state(th, DEAD)
    if th.user is not None:
        th.user.fast = False  # the fast path must not run for it either
    k.record(th, "end", reason or "returned")
    th.exit_reason = reason
    if reason is not None:
        k.died.append((th, reason))


def kill(k: Kernel, th: Thread, reason: str) -> BaseException:
    """End the running thread `th` now (a fault nobody resolves, an exception nobody
    handles) and return the exception that unwinds its chain: dead from here on, it
    can make no system call while its `finally:` blocks run. A thread already dead
    (its chain being closed) is only unwound."""
    if th.state & DEAD:
        return ThreadDeleted()
    end_thread(k, th, reason)
    return ThreadKilled(reason)


def delete_object(k: Kernel, obj: KernelObject) -> None:
    """Delete a thread, task or gate: no reference to it is left anywhere."""
    k.check_all = True  # references go everywhere: the next check is a full one
    if isinstance(obj, Task):
        release_task(obj)
        # The calling thread (if it is in this task) goes last: it unwinds after.
        for th in sorted(obj.threads, key=lambda t: t.cpu.current is t):
            if th.alive:
                if th.xfer is not None:
                    th.xfer.abort = longipc.SEABORTED  # a task goes at once, lock or not
                    th.xfer.locked = False
                delete_object(k, th)
        obj.caps.clear()
        obj.caps.append(None)
        k.tasks.remove(obj)
    elif isinstance(obj, Thread):
        if obj.xfer is not None and longipc.defer_delete(k, obj):
            return  # locked in a long IPC: deleted when the copier releases the lock
        if not obj.state & DEAD:
            end_thread(k, obj, "deleted")
        elif obj.exit_reason is None and not obj.returned:
            k.died.append((obj, "deleted"))
        k.threads.pop(obj.tid, None)
        coro = obj.coro
        obj.coro = None
        obj.resume = _dead_resume
        if coro is not None and obj.cpu.current is not obj:
            # Closing runs the body's `finally:` blocks; a system call there raises
            # ThreadDeleted (`enter`), so the dead thread does nothing in the kernel.
            try:
                coro.close()
            except KernelInvariantError:
                raise
            except (Exception, ThreadDeleted, ThreadKilled):  # user code misbehaving
                pass
    elif isinstance(obj, Irq):
        if obj.thread is not None:
            irq_detach(k, obj)
        obj.pending = False
        for th in list(k.threads.values()):
            if th.state == RECEIVE_WAIT and th.partner is obj:  # a closed receive on it
                end_wait(k, th, ENOT_EXISTENT, READY | CANCEL)
    elif isinstance(obj, IpcGate):
        bound = obj.thread
        if bound is not None:
            if bound.sendq:
                for sender in list(bound.sendq):
                    if isinstance(sender, Thread) and sender.snd_gate is obj:
                        end_wait(k, sender, ENOT_EXISTENT, READY | CANCEL)
            bound.gates.remove(obj)
        obj.thread = None
        k.gates.remove(obj)
    obj.alive = False
    for task, sel in obj.cap_refs:
        caps = task.caps
        if sel < len(caps):
            cap = caps[sel]
            if cap is not None and cap.obj is obj:
                caps[sel] = None
    obj.cap_refs.clear()


async def wait_for_lock(k: Kernel, th: Thread, victim: Thread) -> None:
    """`th` deletes `victim`, which is locked in a long IPC: it waits (LOCK_WAIT) until
    the copier releases the lock and the deletion is done. With helping, it lends its
    priority to the copier meanwhile, if both are on one CPU (Fiasco's switch lock
    helps the lock's holder; across CPUs it only waits)."""
    if victim.deleters is None:
        victim.deleters = []
    victim.deleters.append(th)
    th.lock_victim = victim
    x = victim.xfer
    th.lock_holder = x.copier if x is not None else None
    k.set_state(th, LOCK_WAIT)
    k.record(th, "delete", f"waits for the transfer lock of {victim.name}")
    if x is not None and k.helping and x.copier.cpu is th.cpu:
        update_prio(k, x.copier)
    await th.cpu.block(th, None)


def release_deleters(k: Kernel, victim: Thread) -> None:
    """`victim` is gone: each thread that waited in delete() for its lock goes on, and
    the copier they helped runs at its own priority again."""
    waiting = victim.deleters or []
    victim.deleters = None
    for w in waiting:
        holder = w.lock_holder
        w.lock_victim = w.lock_holder = None
        k.set_state(w, READY)
        make_ready(w)
        if holder is not None and holder.prio != holder.priority:
            update_prio(k, holder)


def stop_waiting_for_lock(k: Kernel, th: Thread) -> None:
    """`th` ends while it waits to delete a locked thread: it waits no more."""
    victim, holder = th.lock_victim, th.lock_holder
    th.lock_victim = th.lock_holder = None
    if victim is not None and victim.deleters:
        victim.deleters.remove(th)
    if holder is not None and holder.prio != holder.priority:
        update_prio(k, holder)


longipc.delete_now = delete_object  # a deletion that waited for a transfer lock goes now
