"""The lecture's races on two CPUs, each with its exact outcome and simulated times.

"On multi-processor systems operations are really parallel": a cancel of an ongoing IPC
is allowed from the other CPU (a bit in the state word, acted on when the cancelled
thread resumes on its own CPU); a deletion of the partner must be safe (the IPC path
revalidates its partner after every preemption point). `tests/test_multiprocessor.py`
shows the cases one by one; here each race is pinned down to the cycle, and where the
two CPUs act at the same moment, each order the chooser can take is a test.

Every kernel runs with `check=True`: the invariants cover both CPUs after every
operation.
"""

from __future__ import annotations

from typing import Any

from helpers import make_kernel, thread_named, when
from l4sim import Fpage, IpcError, Kernel, MapItem, Rights, StringItem, Timeout
from l4sim.kernel.states import DRQ_WAIT

PAGE = 4096


def _costs(k: Kernel) -> tuple[int, int, int]:
    """One IPC's kernel entry, a thread switch between tasks, an IPI."""
    c = k.costs
    return c.ipc_cost(0), c.thread_switch + c.space_switch, c.ipi


# --- concurrent deletion of a sender ------------------------------------------------------


def test_a_queued_sender_deleted_from_the_receivers_cpu_is_never_delivered() -> None:
    """A sender on CPU 0 queues at a busy receiver on CPU 1; a thread on CPU 1 deletes
    the sender before the receiver looks: the receive finds no message (it times out
    at exactly its deadline), and the sender dies of the deletion."""
    k = make_kernel(cpus=2)
    out: dict[str, Any] = {}

    async def receiver(t: Any) -> None:
        await t.compute(k.us(50))           # busy: the sender queues
        r = await t.wait(receive_timeout=Timeout.us(10))
        out["receiver"] = (r.error, t.now)

    async def sender(t: Any, sel: int) -> None:
        out["sender"] = await t.send(sel, words=[7])   # never returns: deleted

    async def killer(t: Any, sel: int) -> None:
        await t.sleep(Timeout.us(20))
        out["delete"] = (await t.delete(sel), t.now)

    r = k.new_task("r").new_thread(receiver, name="receiver", cpu=1)
    st = k.new_task("s")
    s = st.new_thread(sender, st.add_cap(r), name="sender", cpu=0)
    kt = k.new_task("k")
    kt.new_thread(killer, kt.add_cap(s), name="killer", cpu=1, priority=150)
    res = k.run()
    ipc, switch, _ = _costs(k)
    tick, op = k.costs.timer_tick, k.costs.kernel_op
    assert res.reason == "done" and "sender" not in out
    assert [(t.name, why) for t, why in res.died] == [("sender", "deleted")]
    # The killer's sleep ends (a timer tick), it preempts the receiver and deletes.
    assert out["delete"] == (IpcError.OK, ipc + k.us(20) + tick + switch + op)
    # The receiver computed 50 us (plus the killer's time on its CPU), then waited 10 us
    # for a message that is gone: its timeout fires at exactly its deadline.
    waits = ipc + switch + k.us(50) + tick + 2 * switch + op + ipc
    assert out["receiver"] == (IpcError.RETIMEOUT, waits + k.us(10) + tick)


def test_a_caller_deleted_from_the_other_cpu_while_its_server_works() -> None:
    """After the rendezvous of a call the server (CPU 1) holds the caller's reply
    capability; a thread on CPU 1 deletes the caller (CPU 0) meanwhile: the capability
    dies with it, so the server's reply finds no one (ENOT_EXISTENT), at once."""
    k = make_kernel(cpus=2)
    out: dict[str, Any] = {}

    async def server(t: Any) -> None:
        await t.wait()
        await t.compute(k.us(30))
        r = await t.reply(words=[1])
        out["reply"] = (r.error, t.now)

    async def client(t: Any, sel: int) -> None:
        out["call"] = await t.call(sel, words=[7])

    async def killer(t: Any, sel: int) -> None:
        await t.sleep(Timeout.us(10))
        out["delete"] = await t.delete(sel)

    s = k.new_task("s").new_thread(server, name="srv", cpu=1)
    ct = k.new_task("c")
    c = ct.new_thread(client, ct.add_cap(s), name="cli", cpu=0)
    kt = k.new_task("k")
    kt.new_thread(killer, kt.add_cap(c), name="killer", cpu=1, priority=150)
    res = k.run()
    ipc, switch, _ = _costs(k)
    tick, op = k.costs.timer_tick, k.costs.kernel_op
    assert res.reason == "done" and "call" not in out and out["delete"] == IpcError.OK
    assert [(t.name, why) for t, why in res.died] == [("cli", "deleted")]
    # The call's handshake ran on CPU 1 when its request arrived (the server waited
    # already); the server computed 30 us plus the killer's preemption, and replied.
    took = ipc + k.costs.ipi
    assert out["reply"] == (IpcError.ENOT_EXISTENT,
                            took + k.us(30) + tick + 2 * switch + op + ipc)


# --- concurrent deletion of a pager in the middle of a nested page fault ------------------


def _faulting_copy(k: Kernel, out: dict[str, Any]) -> Any:
    """A receiver on CPU 1 paged by `pager` (in sigma0's task, CPU 1: it maps frames
    1:1), which serves its first fault at once and takes its time over the second; a
    sender on CPU 0 copies two pages into the receiver's buffer, of which only the
    first is mapped: the copy faults on the second page, and the copier calls the pager
    on the receiver's behalf (a nested page-fault IPC)."""

    async def pager(t: Any) -> None:
        r = await t.wait()
        faults = 0
        while True:
            page = r.words[0] & ~0xFFF
            faults += 1
            if faults == 2:
                out["fault"] = (r.label, page, t.now)
                await t.compute(k.us(100))   # finding a frame takes a while
                out["pager replied"] = True   # (never: it is deleted first)
            item = MapItem(Fpage.mem(0x2000000 + page - 0x400000, 12, Rights.RW), send_base=page)
            r = await t.reply_and_wait(items=[item])

    async def receiver(t: Any) -> None:
        await t.store(0x400000, b"\0")      # the first buffer page is mapped, the second not
        r = await t.wait(buffers=[(0x400000, 2 * PAGE)])
        out["receiver"] = (r.error, r.string_bytes, t.now)

    async def sender(t: Any, rsel: int) -> None:
        await t.store(0x100000, b"S" * 2 * PAGE)
        await t.sleep(Timeout.us(50))
        r = await t.send(rsel, items=[StringItem(0x100000, 2 * PAGE)])
        out["sender"] = (r.error, r.string_bytes, t.now)

    pg = k.sigma0.task.new_thread(pager, name="pager", cpu=1, pager=None)
    rt = k.new_task("r")
    r = rt.new_thread(receiver, name="receiver", cpu=1, pager=pg)
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(r), name="sender", cpu=0)
    return pg


def test_a_pager_deleted_from_the_other_cpu_in_the_middle_of_a_nested_fault() -> None:
    """The pager (CPU 1) holds the copier's page-fault call; a thread on CPU 0 deletes
    it: the copier's nested IPC ends ENOT_EXISTENT, so the long IPC is aborted -- the
    sender gets SEABORTED, the receiver REABORTED, both with the one page copied
    before the fault; nothing else is touched."""
    k = make_kernel(cpus=2)
    out: dict[str, Any] = {}
    pg = _faulting_copy(k, out)

    async def killer(t: Any, sel: int) -> None:
        await t.sleep(Timeout.us(80))
        out["delete"] = (await t.delete(sel), t.now)

    kt = k.new_task("k")
    kt.new_thread(killer, kt.add_cap(pg), name="killer", cpu=0)
    res = k.run()
    ipc, switch, _ = _costs(k)
    tick, op = k.costs.timer_tick, k.costs.kernel_op
    assert res.reason == "done"
    assert [(t.name, why) for t, why in res.died if t.name != "sigma0"] == [("pager", "deleted")]
    assert "pager replied" not in out
    serr, sbytes, swhen = out["sender"]
    rerr, rbytes, rwhen = out["receiver"]
    assert (serr, sbytes) == (IpcError.SEABORTED, (PAGE,))
    assert (rerr, rbytes) == (IpcError.REABORTED, (PAGE,))
    # The second fault reached the pager on CPU 1 by an IPI.
    faulted = next(e.time for e in k.events if e.event == "page fault"
                   and "during long IPC" in e.detail)
    assert out["fault"][:2] == (thread_named(k, "receiver").tid, 0x401000)
    assert out["fault"][2] == faulted + k.costs.page_fault + ipc + k.costs.ipi + switch
    # The killer's sleep ends on CPU 0 and it deletes the pager (on CPU 1) at once;
    # the copier, on CPU 0 too, runs next: its nested IPC ended ENOT_EXISTENT, so it
    # aborts the copy without another kernel entry.
    slept = when(k, "killer", "state", "receive_wait")
    deadline = slept + k.us(80)
    assert out["delete"] == (IpcError.OK, deadline + tick + switch + op)
    assert swhen == out["delete"][1] + switch
    # CPU 1 had computed the pager's work up to a quantum past CPU 0's next step (the
    # killer's timeout) when the deletion came: the receiver, woken by the IPI, runs
    # when that step ends.
    assert rwhen == deadline + k.quantum


# --- concurrent cancel: before, during and after the rendezvous -------------------------


def _in_flight(k: Kernel, out: dict[str, Any], action: str) -> None:
    """A sender on CPU 0 sends to a receiver on CPU 1 that waits already; its handshake
    is a remote request to CPU 1, in flight for an IPI's time. A thread on CPU 1 cancels
    or deletes the sender meanwhile."""

    async def receiver(t: Any) -> None:
        r = await t.wait(receive_timeout=Timeout.us(5))
        out["receiver"] = (r.error, t.now)

    async def sender(t: Any, sel: int) -> None:
        r = await t.send(sel, words=[7])
        out["sender"] = (r.error, t.now)

    async def other(t: Any, sel: int) -> None:
        if action == "cancel":
            out["cancel"] = (await t.ex_regs(sel, cancel=True), t.now)
        else:
            out["delete"] = (await t.delete(sel), t.now)

    r = k.new_task("r").new_thread(receiver, name="receiver", cpu=1)
    st = k.new_task("s")
    s = st.new_thread(sender, st.add_cap(r), name="sender", cpu=0)
    ot = k.new_task("o")
    ot.new_thread(other, ot.add_cap(s), name="other", cpu=1)


def test_a_cancel_while_the_handshake_is_in_flight_to_the_other_cpu() -> None:
    """During the rendezvous: the sender waits for its remote handshake (drq_wait) when
    the cancel comes. The cancel bit ends its wait at once (SECANCELED, reported when
    the IPI reaches its CPU); the request, arriving later, finds it gone and does
    nothing: the receiver never sees the message and times out."""
    k = make_kernel(cpus=2)
    out: dict[str, Any] = {}
    _in_flight(k, out, "cancel")
    assert k.run().reason == "done"
    ipc, switch, ipi = _costs(k)
    op, tick = k.costs.kernel_op, k.costs.timer_tick
    posted = ipc                        # the sender's request leaves CPU 0 ...
    cancel = ipc + switch + op          # ... the cancel on CPU 1 comes before it arrives
    assert cancel < posted + ipi
    assert out["cancel"] == (IpcError.OK, cancel)
    assert out["sender"] == (IpcError.SECANCELED, cancel + ipi)
    assert out["receiver"] == (IpcError.RETIMEOUT, ipc + k.us(5) + tick + switch)
    assert [(e.detail) for e in k.events if e.thread == "sender" and e.event == "state"] == [
        "ready", "drq_wait", "canceled", "ready", "dead"]


def test_a_deletion_while_the_handshake_is_in_flight_to_the_other_cpu() -> None:
    """The same moment, a deletion: the sender dies in drq_wait; the request finds it
    gone. Nothing is delivered, nothing points at the dead sender."""
    k = make_kernel(cpus=2)
    out: dict[str, Any] = {}
    _in_flight(k, out, "delete")
    res = k.run()
    ipc, switch, _ = _costs(k)
    assert res.reason == "done" and "sender" not in out
    assert [(t.name, why) for t, why in res.died] == [("sender", "deleted")]
    assert out["delete"] == (IpcError.OK, ipc + switch + k.costs.kernel_op)
    assert out["receiver"] == (IpcError.RETIMEOUT, ipc + k.us(5) + k.costs.timer_tick + switch)
    assert [e.detail for e in k.events if e.thread == "sender" and e.event == "state"] == [
        "ready", "drq_wait", "dead"]


def test_a_cancel_of_a_queued_sender_from_the_receivers_cpu_before_the_rendezvous() -> None:
    """Before the rendezvous: the remote handshake found the receiver busy, so the
    sender queued there; a cancel from the receiver's CPU takes it out (SECANCELED on
    the sender's CPU an IPI later), and the receiver's wait finds nothing."""
    k = make_kernel(cpus=2)
    out: dict[str, Any] = {}

    async def receiver(t: Any) -> None:
        await t.compute(k.us(20))
        r = await t.wait(receive_timeout=Timeout.zero())
        out["receiver"] = (r.error, t.now)

    async def sender(t: Any, sel: int) -> None:
        r = await t.send(sel, words=[7])
        out["sender"] = (r.error, t.now)

    async def canceller(t: Any, sel: int) -> None:
        await t.sleep(Timeout.us(10))
        out["cancel"] = (await t.ex_regs(sel, cancel=True), t.now)

    r = k.new_task("r").new_thread(receiver, name="receiver", cpu=1)
    st = k.new_task("s")
    s = st.new_thread(sender, st.add_cap(r), name="sender", cpu=0)
    ct = k.new_task("c")
    ct.new_thread(canceller, ct.add_cap(s), name="canceller", cpu=1, priority=150)
    assert k.run().reason == "done"
    ipc, switch, ipi = _costs(k)
    op, tick = k.costs.kernel_op, k.costs.timer_tick
    cancel = ipc + k.us(10) + tick + switch + op
    assert out["cancel"] == (IpcError.OK, cancel)
    assert out["sender"] == (IpcError.SECANCELED, cancel + ipi)
    # The receiver computed 20 us (and lent its CPU to the canceller), then found no one.
    assert out["receiver"] == (IpcError.RETIMEOUT,
                               ipc + switch + k.us(20) + tick + 2 * switch + op + ipc)
    assert [e.detail for e in k.events if e.thread == "sender" and e.event == "state"] == [
        "ready", "drq_wait", "send_wait", "canceled", "ready", "dead"]


def test_a_cancel_of_a_caller_in_its_reply_wait_after_the_rendezvous() -> None:
    """After the rendezvous: the call's handshake on CPU 1 moved the caller to its reply
    wait; a cancel from CPU 1 ends that wait (RECANCELED on CPU 0 an IPI later), and the
    server's reply, whose capability died with the wait, finds no one."""
    k = make_kernel(cpus=2)
    out: dict[str, Any] = {}

    async def server(t: Any) -> None:
        await t.wait()
        await t.compute(k.us(30))
        out["reply"] = ((await t.reply(words=[1])).error, t.now)

    async def client(t: Any, sel: int) -> None:
        out["call"] = ((await t.call(sel, words=[7])).error, t.now)

    async def canceller(t: Any, sel: int) -> None:
        await t.sleep(Timeout.us(10))
        out["cancel"] = (await t.ex_regs(sel, cancel=True), t.now)

    s = k.new_task("s").new_thread(server, name="srv", cpu=1)
    ct = k.new_task("c")
    c = ct.new_thread(client, ct.add_cap(s), name="cli", cpu=0)
    xt = k.new_task("x")
    xt.new_thread(canceller, xt.add_cap(c), name="canceller", cpu=1, priority=150)
    assert k.run().reason == "done"
    ipc, switch, ipi = _costs(k)
    op, tick = k.costs.kernel_op, k.costs.timer_tick
    cancel = ipc + k.us(10) + tick + switch + op
    assert out["cancel"] == (IpcError.OK, cancel)
    assert out["call"] == (IpcError.RECANCELED, cancel + ipi)
    took = ipc + ipi  # the call's handshake on CPU 1: the server waited already
    assert out["reply"] == (IpcError.ENOT_EXISTENT, took + k.us(30) + tick + 2 * switch + op + ipc)


# --- concurrent cancel during a long IPC's copy -----------------------------------------


def test_a_cancel_of_the_passive_receiver_during_the_copy_to_the_cycle() -> None:
    """The sender copies 64 pages on CPU 0 into the receiver's buffer on CPU 1. After
    its first page, a thread on CPU 1 cancels the receiver: the cancel lands at once
    there (one switch and one kernel operation after the canceller is made), the
    receiver ends REABORTED one switch later with the page copied so far, and the copier
    on CPU 0 finds the abort at the start of its next step -- where its clock stood --
    and ends SEABORTED with the same byte count."""
    from helpers import run_until_the_copy
    from test_multiprocessor import _long_pair

    k = make_kernel(cpus=2)
    size = 64 * PAGE
    r, _, out = _long_pair(k, size, copier_cpu=0, receiver_cpu=1)

    async def canceller(t: Any, sel: int) -> None:
        out["cancel"] = (await t.ex_regs(sel, cancel=True), t.now)

    run_until_the_copy(k, 5_000)
    copier_at, other_at = k.cpus[0].now, k.cpus[1].now
    assert copier_at > other_at  # the copier ran ahead (within a quantum)
    ct = k.new_task("c")
    ct.new_thread(canceller, ct.add_cap(r), name="canceller", cpu=1)
    assert k.run().reason == "done"
    c = k.costs
    switch = c.thread_switch + c.space_switch
    cancel_err, cancel_at = out["cancel"]
    assert (cancel_err, cancel_at) == (IpcError.OK, other_at + switch + c.kernel_op)
    assert out["receiver"] == (IpcError.REABORTED, (PAGE,), cancel_at + switch)
    assert out["sender"] == (IpcError.SEABORTED, (PAGE,), copier_at)


def test_a_cancel_does_not_stop_a_reply_in_flight_to_the_other_cpu() -> None:
    """A reply is a send that never waits. To a caller on another CPU its handshake runs
    there an IPI later, while the server waits for the outcome; a cancel of the server in
    that moment does not stop the reply (the kernel is still doing it): the caller gets
    its answer, and the server goes on to its receive phase as if nothing happened."""
    k = make_kernel(cpus=2)
    out: dict[str, Any] = {}

    async def server(t: Any) -> None:
        await t.wait()
        r = await t.reply_and_wait(words=[5], receive_timeout=Timeout.us(50))
        out["reply_and_wait"] = (r.error, t.now)

    async def client(t: Any, sel: int) -> None:
        r = await t.call(sel, words=[7])
        out["call"] = (r.error, r.words, t.now)

    s = k.new_task("s").new_thread(server, name="srv", cpu=0)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(s), name="cli", cpu=1)
    while not (s.state & DRQ_WAIT and s.drq is not None and s.drq.reply):  # reply in flight
        assert k.step() is not None
    posted = k.cpus[0].now
    k.cancel(s)
    assert k.run().reason == "done"
    ipc, _, ipi = _costs(k)
    assert out["call"][:2] == (IpcError.OK, (5,))
    err, when = out["reply_and_wait"]
    # Not SECANCELED: the reply landed, and the receive phase waited its 50 us out.
    assert err == IpcError.RETIMEOUT and when > posted + ipi + k.us(50) - ipc
