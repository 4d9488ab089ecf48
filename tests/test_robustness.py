"""Hostile programs against the kernel's teardown paths: one regression test per bug
that fuzzing found (a thread's partner, its reply capability or its own coroutine going
away in the middle of an operation), plus the neighbours of each fix.

Every kernel runs with `check=True`: the invariants are verified after every operation,
so a test that ends without `KernelInvariantError` has also shown that nothing was left
dangling. Each test asserts the exact outcome the user sees.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import make_kernel
from l4sim import (
    Fpage,
    IpcError,
    Kernel,
    KernelInvariantError,
    MapItem,
    MsgTag,
    Rights,
    StringItem,
    Timeout,
)
from l4sim.kernel.abi import IpcOp


@pytest.fixture
def wall_clock_guard() -> Iterator[None]:
    """Fail (rather than hang the suite) if a run does not return within 20 s."""

    def alarm(*_: Any) -> None:
        raise TimeoutError("the run did not return: a hang")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --- the raw ABI -------------------------------------------------------------------------


@pytest.mark.parametrize("index", [58, 63])
def test_absolute_timeout_naming_a_missing_br_counts_as_expired(index: int) -> None:
    """An absolute raw timeout names the BR holding its point in time; the UTCB has 58.
    One naming BR 58..63 has no point in time and counts as already expired (as a
    relative one of mantissa 0 does): a send delivers only to a waiting receiver, a
    receive takes only a queued sender, and each phase is checked in its turn."""
    out: dict[str, Any] = {}
    bad = 0x8000 | index

    async def receiver(t: Any) -> None:
        r = await t.wait(receive_timeout=Timeout.us(10))
        out["rcv"] = (r.error, r.words)
        await t.sleep(Timeout.us(50))  # alive, not receiving

    async def sender(t: Any, sel: int) -> None:
        t.utcb.mr[0] = 7
        out["to waiting"] = (await t.ipc(sel, MsgTag(words=1), int(IpcOp.SEND), bad << 16)).error
        out["to gone"] = (await t.ipc(sel, MsgTag(words=1), int(IpcOp.SEND), bad << 16)).error
        out["receive"] = (await t.ipc(t.self_sel, MsgTag(), int(IpcOp.RECEIVE), bad)).error
        # A call to no capability fails in its send phase, whatever its receive half.
        out["call"] = (await t.ipc(17, MsgTag(), int(IpcOp.CALL), bad)).error

    k = make_kernel()
    r = k.new_task("r").new_thread(receiver, name="r", priority=200)
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(r), name="s")
    res = k.run()
    assert res.reason == "done" and not res.died
    assert out == {"rcv": (IpcError.OK, (7,)), "to waiting": IpcError.OK,
                   "to gone": IpcError.SETIMEOUT, "receive": IpcError.RETIMEOUT,
                   "call": IpcError.ENOT_EXISTENT}
    with pytest.raises(ValueError, match="BR63"):
        Timeout.from_raw(0x803F, bytearray(58 * 8))


def test_raw_tag_wider_than_a_word_raises_in_user_code() -> None:
    """A tag is one 64-bit word: a wider int is the Python API's misuse (OverflowError in
    the caller), and nothing reaches the receiver."""
    out: dict[str, Any] = {}

    async def receiver(t: Any) -> None:
        out["rcv"] = (await t.wait(receive_timeout=Timeout.us(20))).error

    async def sender(t: Any, sel: int) -> None:
        with pytest.raises(OverflowError, match="64-bit word"):
            t.ipc(sel, (1 << 80) | 1, int(IpcOp.SEND), 0)
        with pytest.raises(OverflowError):
            t.ipc(sel, -(1 << 63) - 1, int(IpcOp.SEND), 0)
        out["snd"] = "raised"

    k = make_kernel()
    r = k.new_task("r").new_thread(receiver, name="r", priority=200)
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(r), name="s")
    assert not k.run().died
    assert out == {"snd": "raised", "rcv": IpcError.RETIMEOUT}


def test_window_and_buffers_misuse_changes_no_register() -> None:
    """A valid `window=` with an invalid `buffers=` raises, and neither reaches the BRs."""
    out: dict[str, Any] = {}

    async def body(t: Any) -> None:
        await t.wait(window=Fpage.mem(0x100000, 12), receive_timeout=Timeout.zero())
        before = (bytes(t.utcb.br), t.utcb.bdr)
        with pytest.raises(ValueError, match="not inside the address space"):
            await t.wait(window=Fpage.mem(0x800000, 21),
                         buffers=[(0x1000, 16), (1 << 47, 4096)],
                         receive_timeout=Timeout.zero())
        with pytest.raises(TypeError, match="receive window"):
            await t.wait(window=[Fpage.mem(0x800000, 21), "x"], buffers=[(0x1000, 16)],
                         receive_timeout=Timeout.zero())
        out["same"] = (bytes(t.utcb.br), t.utcb.bdr) == before

    k = make_kernel()
    k.new_task("a").new_thread(body, name="a")
    assert not k.run().died
    assert out == {"same": True}


# --- a deleted thread makes no system call -------------------------------------------------


def _finally_system(check: bool, receiver_waits: bool) -> tuple[Kernel, Any, Any]:
    async def victim(t: Any, dst: int) -> None:
        try:
            await t.sleep(Timeout.never())
        finally:                                   # ordinary cleanup code
            await t.send(dst, words=[0xDEAD])

    async def receiver(t: Any) -> Any:
        if not receiver_waits:
            await t.sleep(Timeout.us(50))
        r = await t.wait(receive_timeout=Timeout.us(100))
        return r.error, r.words

    async def killer(t: Any, vsel: int) -> Any:
        await t.sleep(Timeout.us(5))
        return await t.delete(vsel)

    k = Kernel(check=check)
    r = k.new_task("r").new_thread(receiver, name="rcv", priority=50)
    vt = k.new_task("v")
    v = vt.new_thread(victim, vt.add_cap(r), name="victim")
    kt = k.new_task("k")
    kt.new_thread(killer, kt.add_cap(v), name="killer")
    return k, r, v


@pytest.mark.parametrize("receiver_waits", [True, False])
@pytest.mark.parametrize("check", [True, False])
def test_deleted_thread_finally_block_makes_no_system_call(check: bool,
                                                           receiver_waits: bool) -> None:
    """Deleting a thread closes its chain, which runs its `finally:` blocks; a system call
    there unwinds instead of entering the kernel: no message of the dead thread is
    delivered or queued (the fast path too, with check=False)."""
    k, r, _v = _finally_system(check, receiver_waits)
    res = k.run()
    assert r.result == (IpcError.RETIMEOUT, ())
    assert [(th.name, why) for th, why in res.died] == [("victim", "deleted")]
    assert res.reason == "done"


def test_host_deletion_of_a_task_whose_thread_cleans_up() -> None:
    """A host event deleting a task whose thread has a system call in a `finally:` block:
    the run goes on and ends normally (nothing escapes `k.run()`)."""
    log: list[str] = []

    async def cleanup_victim(t: Any) -> None:
        try:
            await t.sleep(Timeout.never())
        finally:
            log.append("finally ran")
            await t.send(1, words=[0xF1], send_timeout=Timeout.zero())
            log.append("after the send")  # never: the send unwinds the dead thread

    async def ticker(t: Any) -> None:
        await t.sleep(Timeout.us(20))

    k = make_kernel()
    vt = k.new_task("victim")
    vt.new_thread(cleanup_victim, name="victim")
    k.new_task("other").new_thread(ticker, name="ticker", priority=200)
    k.at(10_000, lambda: k.delete(vt))
    res = k.run()
    assert res.reason == "done"
    assert log == ["finally ran"]
    assert [(th.name, why) for th, why in res.died] == [("victim", "deleted")]


def test_dead_thread_computes_and_touches_no_memory_while_unwinding() -> None:
    """`compute` and `load`/`store` of mapped memory need no kernel entry, but a dead
    thread's `finally:` does neither: the clock does not move for it."""
    log: list[str] = []

    async def victim(t: Any) -> None:
        await t.store(0x10000, b"x")             # mapped now
        try:
            await t.sleep(Timeout.never())
        finally:
            try:
                await t.compute(1_000_000)
            finally:
                await t.store(0x10000, b"y")
                log.append("stored")

    k = make_kernel()
    v = k.new_task("v").new_thread(victim, name="victim")
    k.run()
    now = k.now
    k.delete(v)
    assert log == [] and k.now == now


def test_deleted_thread_raising_an_exception_while_unwinding() -> None:
    """A deleted thread's `finally:` raises a CPU exception with no handler: it is only
    unwound (already dead), nothing escapes `k.run()`. Found by `l4sim fuzz`."""
    async def victim(t: Any) -> None:
        try:
            await t.wait(receive_timeout=Timeout.us(111))
        finally:
            await t.raise_exception(3, 0xF000)

    for check in (True, False):
        k = Kernel(check=check, timeslice=2000)
        th = k.new_task("v").new_thread(victim, name="victim", priority=50)
        k.at(20_000, lambda: k.delete(th))  # noqa: B023 (this iteration's kernel)
        res = k.run(until=3_000_000)
        assert [(t.name, why) for t, why in res.died] == [("victim", "deleted")]


def test_killed_thread_finally_block_makes_no_system_call() -> None:
    """A thread killed by a fault nobody resolves is dead at once: the `finally:` blocks
    its unwinding runs cannot send."""
    out: dict[str, Any] = {}

    async def faulter(t: Any, dst: int) -> None:
        try:
            await t.store(0x10000, b"x")         # no pager: killed
        finally:
            out["send"] = "tried"
            await t.send(dst, words=[1], send_timeout=Timeout.zero())
            out["send"] = "sent"

    async def receiver(t: Any) -> None:
        out["rcv"] = (await t.wait(receive_timeout=Timeout.us(10))).error

    k = make_kernel()
    r = k.new_task("r").new_thread(receiver, name="r", priority=200)
    ft = k.new_task("f")
    ft.new_thread(faulter, ft.add_cap(r), name="f", pager=None)
    res = k.run()
    assert out == {"rcv": IpcError.RETIMEOUT, "send": "tried"}
    assert [th.name for th, _ in res.died] == ["f"]
    assert "and no pager" in res.died[0][1]


def test_direct_switch_target_deleted_by_a_host_event() -> None:
    """A host event due during a call deletes the server the call switches to directly:
    the CPU loop does not resume the dead server; the caller learns its partner is gone."""
    for check in (True, False):
        k = Kernel(check=check)

        async def server(t: Any) -> str:
            await t.wait()
            return "server resumed"

        srv = k.new_task("s").new_thread(server, name="server")

        async def client(t: Any, sel: int) -> IpcError:
            await t.compute(1000)
            k.at(t.now + 1, lambda: k.delete(srv))  # noqa: B023 (this iteration's kernel)
            return (await t.call(sel, words=[1])).error

        ct = k.new_task("c")
        cl = ct.new_thread(client, ct.add_cap(srv), name="client")
        res = k.run()
        assert [(th.name, why) for th, why in res.died] == [("server", "deleted")]
        assert srv.result is None
        assert cl.result == IpcError.ENOT_EXISTENT


def test_kernel_bug_is_never_reported_as_the_threads_exception() -> None:
    """A thread with an exception handler: a `KernelInvariantError` in its chain is a bug
    of l4sim, so it leaves `k.run()` instead of going to the handler as the thread's own."""
    told: list[Any] = []

    async def handler(t: Any) -> None:
        r = await t.wait()
        told.append(r.tag.label)

    async def body(t: Any) -> None:
        await t.sleep(Timeout.us(1))
        raise KernelInvariantError("planted", "a kernel bug surfacing in this chain")

    k = make_kernel()
    h = k.new_task("h").new_thread(handler, name="handler")
    k.new_task("b").new_thread(body, name="b", exc_handler=h)
    with pytest.raises(KernelInvariantError, match="planted"):
        k.run()
    assert told == []


# --- replies, reply capabilities and reports ---------------------------------------------


def test_reply_with_string_outside_the_space_keeps_the_reply_capability() -> None:
    """A malformed reply (a string past the end of the space) fails with SEMSGCUT before
    anything happens: the reply capability stays, a correct reply reaches the caller."""
    out: dict[str, Any] = {}

    async def client(t: Any, box: list[int]) -> Any:
        r = await t.call(box[0], words=[1])
        return r.error, r.words

    async def server(t: Any) -> None:
        await t.wait()
        out["bad"] = (await t.reply(items=[StringItem((1 << 47) - 16, 100)])).error
        out["good"] = (await t.reply(words=[2])).error

    k = make_kernel()
    box: list[int] = []
    ct = k.new_task("c")
    c = ct.new_thread(client, box, name="client", priority=10)
    s = k.new_task("s").new_thread(server, name="server", priority=50)
    box.append(ct.add_cap(s))
    assert k.run().reason == "done"
    assert out == {"bad": IpcError.SEMSGCUT, "good": IpcError.OK}
    assert c.result == (IpcError.OK, (2,))


def test_server_ending_after_a_malformed_reply_tells_its_caller() -> None:
    """The same malformed reply, then the server ends: the caller is not left waiting
    where nothing can find it; it learns its partner is gone."""
    async def client(t: Any, box: list[int]) -> IpcError:
        return (await t.call(box[0], words=[1])).error

    async def server(t: Any) -> IpcError:
        await t.wait()
        return (await t.reply(items=[StringItem((1 << 47) - 16, 100)])).error

    k = make_kernel()
    box: list[int] = []
    ct = k.new_task("c")
    c = ct.new_thread(client, box, name="client", priority=10)
    s = k.new_task("s").new_thread(server, name="server", priority=50)
    box.append(ct.add_cap(s))
    assert k.run().reason == "done"
    assert (s.result, c.result) == (IpcError.SEMSGCUT, IpcError.ENOT_EXISTENT)


def test_preemption_report_is_not_taken_for_a_reply() -> None:
    """A server's preempter is its caller, waiting for the reply: the report is lost (the
    caller waits for a reply, not for any message from the server), and the reply comes."""
    async def client(t: Any, box: list[int]) -> Any:
        r = await t.call(box[0], words=[1])
        return r.error, r.tag.label, r.words

    async def server(t: Any) -> IpcError:
        await t.wait()
        await t.compute(50_000)          # preempted in here by 'hi'
        return (await t.reply(words=[42])).error

    async def hi(t: Any) -> None:
        await t.sleep(Timeout.us(5))
        await t.compute(100)

    k = make_kernel()
    ctask = k.new_task("c")
    box: list[int] = []
    c = ctask.new_thread(client, box, name="client", priority=10)
    s = k.new_task("s").new_thread(server, name="server", priority=50, preempter=c)
    box.append(ctask.add_cap(s))
    k.new_task("h").new_thread(hi, name="hi", priority=200)
    assert k.run().reason == "done"
    assert c.result == (IpcError.OK, 0, (42,))
    assert s.result == IpcError.OK
    assert [e.detail for e in k.events if e.event == "preemption"] == [
        "report to client lost: not waiting"]


def test_long_send_to_a_caller_waiting_for_our_reply_ends_the_reply_capability() -> None:
    """A long IPC *sent* (not replied) to a caller that waits for our reply ends that
    wait at the rendezvous, as a short one does: our reply capability goes with it, also
    while the copy waits for a page fault in our space."""
    out: dict[str, Any] = {}

    async def client(t: Any, box: list[int]) -> None:
        r = await t.call(box[0], words=[1], buffers=[(0x40000, 64)])
        out["client"] = (r.error, r.string_bytes)

    async def server(t: Any, cbox: list[int]) -> None:
        await t.wait()
        r = await t.send(cbox[0], items=[StringItem(0x10000, 64)])  # faults in our space
        out["send"] = (r.error, r.string_bytes)
        out["late reply"] = (await t.reply(words=[1])).error

    k = make_kernel()
    ct = k.new_task("c")
    box: list[int] = []
    cbox: list[int] = []
    ct.new_thread(client, box, name="client", priority=10)
    st = k.new_task("s")
    s = st.new_thread(server, cbox, name="server", priority=50)
    box.append(ct.add_cap(s))
    cbox.append(st.add_cap(k.threads[1]))
    assert k.run().reason == "done"
    assert out == {"client": (IpcError.OK, (64,)), "send": (IpcError.OK, (64,)),
                   "late reply": IpcError.ENOT_EXISTENT}


# --- long IPC: the passive side goes away ------------------------------------------------


def test_copier_end_does_not_wake_a_partner_aborted_by_cancel() -> None:
    """The passive receiver of a long IPC is cancelled while the copier waits for a page
    fault, and goes on to a new IPC. The copier's end finds it gone: it is not touched
    (its new send times out as it should), and the copier reports the abort."""
    for check in (True, False):
        out: dict[str, Any] = {}

        async def pager(t: Any, rbox: list[int]) -> None:
            r = await t.wait()
            out["cancel"] = await t.ex_regs(rbox[0], cancel=True)  # noqa: B023
            await t.store(0x10000, b"page")
            await t.reply(items=[MapItem(Fpage.mem(0x10000, 12), send_base=r.words[0] & ~0xFFF)])

        async def receiver(t: Any, other: int) -> None:
            out["wait"] = (await t.wait(buffers=[(0x40000, 64)])).error  # noqa: B023
            out["new send"] = (await t.send(other, words=[7],  # noqa: B023
                                            send_timeout=Timeout.us(100))).error

        async def sender(t: Any, rsel: int) -> None:
            out["sender"] = (await t.send(rsel, items=[StringItem(0x20000, 64)])).error  # noqa: B023

        async def other(t: Any) -> None:
            await t.sleep(Timeout.us(500))

        k = Kernel(check=check)
        o = k.new_task("o").new_thread(other, name="other", priority=10)
        rt = k.new_task("r")
        rth = rt.new_thread(receiver, rt.add_cap(o), name="receiver", priority=150)
        pt = k.new_task("p")
        rbox: list[int] = []
        p = pt.new_thread(pager, rbox, name="pager", priority=200)
        rbox.append(pt.add_cap(rth))
        st = k.new_task("s")
        st.new_thread(sender, st.add_cap(rth), name="sender", priority=100, pager=p)
        assert not k.run().died
        assert out == {"cancel": IpcError.OK, "wait": IpcError.REABORTED,
                       "sender": IpcError.SEABORTED, "new send": IpcError.SETIMEOUT}


def test_sender_deleted_while_the_receiver_pulls_and_waits_on_a_fault() -> None:
    """Symmetric transfer, the receiver pulls a queued sender's string and faults in the
    sender's space; the pager deletes the sender. The receiver's pull ends aborted and it
    is plainly ready again (no receive-in-progress left behind)."""
    out: dict[str, Any] = {}

    async def pager(t: Any, sbox: list[int]) -> None:
        r = await t.wait()
        out["delete"] = await t.delete(sbox[0])
        await t.store(0x10000, b"page")
        await t.reply(items=[MapItem(Fpage.mem(0x10000, 12), send_base=r.words[0] & ~0xFFF)])

    async def sender(t: Any, rsel: int) -> None:
        await t.send(rsel, items=[StringItem(0x20000, 64)])

    async def receiver(t: Any) -> str:
        await t.sleep(Timeout.us(10))
        r = await t.wait(buffers=[(0x40000, 64)])
        out["receiver"] = (r.error, r.string_bytes)
        r = await t.wait(receive_timeout=Timeout.us(1))   # nothing stale is left for it
        out["next wait"] = r.error
        return str(t._th.state_name)

    k = make_kernel(transfer="symmetric")
    rth = k.new_task("r").new_thread(receiver, name="receiver", priority=100)
    pt = k.new_task("p")
    sbox: list[int] = []
    p = pt.new_thread(pager, sbox, name="pager", priority=200)
    st = k.new_task("s")
    s = st.new_thread(sender, st.add_cap(rth), name="sender", priority=90, pager=p)
    sbox.append(pt.add_cap(s))
    res = k.run()
    assert [(th.name, why) for th, why in res.died] == [("sender", "deleted")]
    assert out == {"delete": IpcError.OK, "receiver": (IpcError.REABORTED, (0,)),
                   "next wait": IpcError.RETIMEOUT}
    assert rth.result == "ready"


def test_cancel_of_a_passive_partner_whose_deletion_waits_for_the_lock() -> None:
    """A passive receiver locked in a long copy is deleted (the deletion waits for the
    lock), then cancelled: the abort releases the lock, so the deletion goes through at
    once and the copier learns of the abort."""
    out: dict[str, Any] = {}
    size = 64 * 4096

    async def receiver(t: Any) -> None:
        await t.store(0x400000, bytes(size))            # buffer mapped: no faults
        out["receiver"] = (await t.wait(buffers=[(0x400000, size)])).error

    async def sender(t: Any, rsel: int) -> None:
        await t.store(0x100000, b"s" * size)
        await t.sleep(Timeout.us(100))
        r = await t.send(rsel, items=[StringItem(0x100000, size)])
        out["sender"] = r.error

    k = make_kernel()
    rth = k.new_task("r").new_thread(receiver, name="receiver", priority=100)
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(rth), name="sender", priority=100)

    def delete_then_cancel() -> None:
        k.delete(rth)
        out["dying"] = rth.state_name
        k.cancel(rth)
        out["after cancel"] = rth.state_name

    for _ in range(1000):  # run on until the sender copies (it is preemptible in there)
        k.run(until=k.now + 10_000)
        if rth.state_name == "ipc_transfer":
            break
    assert rth.state_name == "ipc_transfer"
    k.at(k.now + 10, delete_then_cancel)
    res = k.run()
    assert out == {"dying": "transfer_dying", "after cancel": "dead",
                   "sender": IpcError.SEABORTED}
    assert [(th.name, why) for th, why in res.died] == [("receiver", "deleted")]


def test_protection_fault_during_long_ipc_carries_the_present_bit() -> None:
    """A write fault on a page mapped read-only, met by the copy into the receiver's
    buffer, reaches the pager with the present bit, as the same fault from `t.store`
    does: the default pager refuses it, so the long IPC aborts and the shared page stays."""
    secret = b"shared-read-only"
    out: dict[str, Any] = {}

    async def owner(t: Any, rsel: int) -> None:
        await t.store(0x10000, secret)
        await t.send(rsel, items=[MapItem(Fpage.mem(0x10000, 12, Rights.R), send_base=0x800000)])

    async def reader(t: Any) -> None:
        await t.wait(window=Fpage.mem(0x800000, 12))
        r = await t.wait(buffers=[(0x800000, 16)], receive_timeout=Timeout.us(200))
        out["string"] = (r.error, r.string_bytes)
        out["sees"] = await t.load(0x800000, len(secret))

    async def writer(t: Any, rsel: int) -> None:
        await t.store(0x20000, b"W" * 16)
        await t.sleep(Timeout.us(20))
        await t.send(rsel, items=[StringItem(0x20000, 16)])

    k = make_kernel()
    rt = k.new_task("reader")
    rth = rt.new_thread(reader, name="reader", priority=120)
    ot = k.new_task("owner")
    ot.new_thread(owner, ot.add_cap(rth), name="owner", priority=110)
    wt = k.new_task("writer")
    wt.new_thread(writer, wt.add_cap(rth), name="writer", priority=100)
    k.run()
    assert out == {"string": (IpcError.REABORTED, (0,)), "sees": secret}
    faults = [e.detail for e in k.events if e.event == "page fault" and "long IPC" in e.detail]
    assert faults and faults[0].startswith("write at 0x800000 in reader's space")


# --- runs that end ------------------------------------------------------------------------


def test_anonymous_pager_after_sigma0_is_deleted_kills_with_no_pager() -> None:
    """sigma0 deleted before the anonymous-memory pager was ever made: the first default
    fault kills the thread with "no pager", in the kernel's words, not a Python error."""
    seen: dict[str, Any] = {}

    async def a(t: Any) -> None:
        seen["delete sigma0"] = await t.delete(t.pager_sel)

    async def b(t: Any) -> None:
        await t.sleep(Timeout.us(1))
        try:
            await t.store(0x10000, b"x")
        except Exception as e:
            seen["caught"] = repr(e)
            raise

    k = make_kernel()
    k.new_task("a").new_thread(a, name="a", pager=k.sigma0)
    k.new_task("b").new_thread(b, name="b")
    res = k.run()
    assert seen == {"delete sigma0": IpcError.OK}
    died = dict((th.name, why) for th, why in res.died)
    assert died["sigma0"] == "deleted"
    assert died["b"].startswith("write page fault at 0x10000") and died["b"].endswith("no pager")
    assert k.default_pager() is None


def test_max_steps_ends_a_run_whose_thread_only_computes(wall_clock_guard: None) -> None:
    """A thread that computes forever enters the kernel only through timer interrupts
    (the end of each timeslice): each is a step, so `max_steps` ends the run."""
    async def spin(t: Any) -> None:
        while True:
            await t.compute(1000)

    k = make_kernel(trace=False)
    k.new_task("a").new_thread(spin, name="spin")
    res = k.run(max_steps=100)
    assert (res.reason, res.steps) == ("steps", 100)
    # 100 timeslices of 10 ms, each ended by a tick: the run stopped at the 100th tick.
    assert res.now == 100 * (k.timeslice + k.costs.timer_tick)
    res = k.run(max_steps=5)
    assert (res.reason, res.steps) == ("steps", 105)


def test_a_pager_replying_with_strings_to_a_copier_cuts_them() -> None:
    """The copier of a long IPC faults, and its pager replies to the fault with a string
    of its own: the copier is in a transfer already and offers no buffers, so the string
    is cut (0 bytes) and the copier's transfer goes on intact. Found by l4sim fuzz."""
    out: dict[str, Any] = {}

    async def pager(t: Any) -> None:
        r = await t.wait()                                    # the copier's fault
        await t.store(0x30000, b"junk")
        out["pager reply"] = (await t.reply(items=[StringItem(0x30000, 4)])).error
        r = await t.wait()                                    # the same fault again
        await t.store(0x10000, b"page")
        await t.reply(items=[MapItem(Fpage.mem(0x10000, 12), send_base=r.words[0] & ~0xFFF)])

    async def receiver(t: Any) -> None:
        await t.store(0x40000, bytes(16))
        r = await t.wait(buffers=[(0x40000, 16)])
        out["receiver"] = (r.error, r.string_bytes)

    async def sender(t: Any, rsel: int) -> None:
        await t.sleep(Timeout.us(5))
        r = await t.send(rsel, items=[StringItem(0x20000, 8)])  # not mapped: faults
        out["sender"] = (r.error, r.string_bytes)

    for transfer in ("symmetric", "sender-driven"):
        out.clear()
        k = make_kernel(transfer=transfer)
        r = k.new_task("r").new_thread(receiver, name="receiver", priority=100)
        pt = k.new_task("p")
        p = pt.new_thread(pager, name="pager", priority=200)
        st = k.new_task("s")
        st.new_thread(sender, st.add_cap(r), name="sender", priority=150, pager=p)
        assert k.run().reason == "done"
        # The cut reply left the page unmapped: no retry in long IPC, the copy aborts.
        assert out == {"pager reply": IpcError.SEMSGCUT,
                       "receiver": (IpcError.REABORTED, (0,)),
                       "sender": (IpcError.SEABORTED, (0,))}, transfer
