"""User-memory (long) IPC (S11): one test per lecture case, each under every combination
of copy strategy (kernel buffer, IPC window) and transfer algorithm (symmetric,
sender-driven), with identical final memory contents and error codes.

Scenarios are built by tests/longipc_scenarios.py: S sends a string to R; P, a pager,
serves the pages a scenario leaves unmapped and records each fault.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l4sim import IpcError, Kernel, StringItem, Timeout
from longipc_scenarios import BUF, COMBOS, PAGE, SRC, T0, Outcome, pattern, run_case

E = IpcError


def all_combos(**kw: Any) -> Outcome:
    """Run the scenario under all four combinations; they must agree. Returns one."""
    outs = [run_case(c, t, **kw) for c, t in COMBOS]
    first = outs[0].comparable()
    for (c, t), o in zip(COMBOS, outs, strict=True):
        assert o.comparable() == first, f"{c}/{t} differs from {COMBOS[0]}"
    return outs[0]


def unmapped(n: int) -> bytes:
    return b"?" * n


# --- success, with and without faults --------------------------------------------------------

@pytest.mark.parametrize("sender_first", [True, False], ids=["sender-first", "receiver-first"])
def test_string_copied_without_faults(sender_first: bool) -> None:
    o = all_combos(sender_first=sender_first)
    assert o.snd == (E.OK, (3 * PAGE,))
    assert o.rcv == (E.OK, (5,), (3 * PAGE,))
    assert o.buffer == pattern(3 * PAGE) and o.faults == [] and o.died == []


@pytest.mark.parametrize("sender_first", [True, False], ids=["sender-first", "receiver-first"])
def test_fault_in_the_senders_space(sender_first: bool) -> None:
    o = all_combos(sender_first=sender_first, snd_unmapped=True)
    assert o.snd == (E.OK, (3 * PAGE,)) and o.rcv == (E.OK, (5,), (3 * PAGE,))
    # the pager sees the sender's tid and its address, a read fault, page by page
    assert o.faults == [("S", SRC + i * PAGE, False) for i in range(3)]
    assert o.buffer == pattern(3 * PAGE)


@pytest.mark.parametrize("sender_first", [True, False], ids=["sender-first", "receiver-first"])
def test_fault_in_the_receivers_window(sender_first: bool) -> None:
    o = all_combos(sender_first=sender_first, rcv_unmapped=True)
    assert o.snd == (E.OK, (3 * PAGE,)) and o.rcv == (E.OK, (5,), (3 * PAGE,))
    assert o.faults == [("R", BUF + i * PAGE, True) for i in range(3)]
    assert o.buffer == pattern(3 * PAGE)
    # the mapping landed in R's space (R's pager served R)
    k = o.kernel
    r_task = next(t for t in k.tasks if t.name == "R")
    assert [m.base for m in r_task.space.mappings()] == [BUF + i * PAGE for i in range(3)]


def test_faults_on_both_sides_in_one_transfer() -> None:
    o = all_combos(snd_unmapped=True, rcv_unmapped=True)
    assert o.snd == (E.OK, (3 * PAGE,)) and o.rcv == (E.OK, (5,), (3 * PAGE,))
    assert o.faults == [f for i in range(3)
                        for f in (("S", SRC + i * PAGE, False), ("R", BUF + i * PAGE, True))]
    assert o.buffer == pattern(3 * PAGE)


def test_an_unaligned_string_crossing_pages() -> None:
    k = Kernel(check=True)
    got: dict[str, Any] = {}

    async def rcv(t: Any) -> None:
        r = await t.wait(buffers=[(0x500FF0, 0x30), (0x600000, 4)])
        got["r"] = (r.error, r.string_bytes, await t.load(0x500FF0, 0x30), await t.load(0x600000, 4))

    async def snd(t: Any, d: int) -> None:
        await t.store(0x7FFE8, b"A" * 0x30)
        await t.store(0x90000, b"wxyz")
        r = await t.send(d, items=[StringItem(0x7FFE8, 0x30), StringItem(0x90000, 4)])
        got["s"] = (r.error, r.string_bytes)

    r_th = k.new_task("R").new_thread(rcv, name="R", priority=110)
    ts = k.new_task("S")
    ts.new_thread(snd, ts.add_cap(r_th), name="S")
    k.run()
    assert got["s"] == (E.OK, (0x30, 4))
    assert got["r"] == (E.OK, (0x30, 4), b"A" * 0x30, b"wxyz")


# --- abnormal ends ----------------------------------------------------------------------------

def test_pager_refuses_aborts_both_sides_and_kills_nobody() -> None:
    o = all_combos(rcv_unmapped=True, pager="refuse")
    assert o.snd == (E.SEABORTED, (0,))
    assert o.rcv == (E.REABORTED, (), (0,))
    assert o.died == [] and o.reason == "done"
    assert o.buffer == unmapped(3 * PAGE)


def test_a_reply_that_maps_nothing_aborts_no_retry_in_long_ipc() -> None:
    o = all_combos(snd_unmapped=True, pager="empty")
    assert o.snd == (E.SEABORTED, (0,)) and o.rcv == (E.REABORTED, (), (0,))
    assert o.faults == [("S", SRC, False)]  # once: there is no retry during long IPC


def test_pagefault_timeout_in_the_receivers_space() -> None:
    """The sender's page-fault timeout bounds faults in the receiver's space."""
    o = all_combos(rcv_unmapped=True, pager="slow", pager_delay=100_000,
                   snd_pf_to=Timeout.cycles(20_000))
    assert o.snd == (E.SERCVPFTO, (0,)) and o.rcv == (E.RERCVPFTO, (), (0,))
    assert o.died == []


def test_pagefault_timeout_in_the_senders_space() -> None:
    """The receiver's page-fault timeout bounds faults in the sender's space."""
    o = all_combos(snd_unmapped=True, pager="slow", pager_delay=100_000,
                   rcv_pf_to=Timeout.cycles(20_000))
    assert o.snd == (E.SESNDPFTO, (0,)) and o.rcv == (E.RESNDPFTO, (), (0,))


def test_a_pagefault_timeout_long_enough_lets_it_through() -> None:
    o = all_combos(rcv_unmapped=True, pager="slow", pager_delay=10_000,
                   snd_pf_to=Timeout.cycles(50_000))
    assert o.snd == (E.OK, (3 * PAGE,)) and o.buffer == pattern(3 * PAGE)


def test_a_zero_pagefault_timeout_fails_at_the_first_fault() -> None:
    o = all_combos(rcv_unmapped=True, snd_pf_to=Timeout.zero())
    assert o.snd == (E.SERCVPFTO, (0,)) and o.rcv == (E.RERCVPFTO, (), (0,))


def test_message_cut_reports_the_bytes_that_arrived() -> None:
    o = all_combos(size=3 * PAGE, bufsize=PAGE + 100)
    assert o.snd == (E.SEMSGCUT, (PAGE + 100,))
    assert o.rcv == (E.REMSGCUT, (5,), (PAGE + 100,))  # the words arrived too
    assert o.buffer == pattern(3 * PAGE)[:PAGE + 100]


def test_no_receive_buffer_is_a_message_cut() -> None:
    k = Kernel(check=True)
    got: dict[str, Any] = {}

    async def rcv(t: Any) -> None:
        r = await t.wait()
        got["r"] = (r.error, r.words, r.string_bytes)

    async def snd(t: Any, d: int) -> None:
        await t.store(SRC, b"x")
        r = await t.send(d, words=[1], items=[StringItem(SRC, 1)])
        got["s"] = (r.error, r.string_bytes)

    r_th = k.new_task("R").new_thread(rcv, name="R", priority=110)
    ts = k.new_task("S")
    ts.new_thread(snd, ts.add_cap(r_th), name="S")
    k.run()
    assert got == {"s": (E.SEMSGCUT, (0,)), "r": (E.REMSGCUT, (1,), (0,))}


def test_a_string_outside_the_address_space_is_an_error_and_changes_nothing() -> None:
    k = Kernel(check=True)
    got: dict[str, Any] = {}

    async def rcv(t: Any) -> None:
        r = await t.wait(buffers=[(BUF, 16)], receive_timeout=Timeout.us(100))
        got["r"] = r.error

    async def snd(t: Any, d: int) -> None:
        r = await t.send(d, items=[StringItem((1 << 47) - 8, 16)])
        got["s"] = (r.error, r.string_bytes)

    r_th = k.new_task("R").new_thread(rcv, name="R", priority=110)
    ts = k.new_task("S")
    ts.new_thread(snd, ts.add_cap(r_th), name="S")
    k.run()
    assert got == {"s": (E.SEMSGCUT, (0,)), "r": E.RETIMEOUT}


def test_cancel_before_rendezvous() -> None:
    o = all_combos(sender_first=True, action="cancel_snd", act_at=T0 // 2)
    assert o.snd == (E.SECANCELED, ()) and o.rcv is None  # R waits on, nobody sends
    assert o.buffer == bytes(3 * PAGE) and o.faults == []


@pytest.mark.parametrize("side", ["rcv", "snd"])
def test_cancel_after_rendezvous_aborts_both_sides(side: str) -> None:
    """A cancel during the copy (at a preemption point between pages) aborts the IPC on
    both sides; the bytes copied so far are reported, and are in the buffer."""
    size = 16 * PAGE
    o = all_combos(size=size, action=f"cancel_{side}", act_at=T0 + 3 * PAGE, even_costs=True)
    assert o.snd is not None and o.rcv is not None
    assert o.snd[0] == E.SEABORTED and o.rcv[0] == E.REABORTED
    done = o.snd[1][0]
    assert 0 < done < size and done % PAGE == 0 and o.rcv[2] == (done,)
    assert o.buffer == pattern(done) + bytes(size - done)


def test_partner_deleted_while_the_pager_works() -> None:
    """The receiver is deleted while a fault in its space is being resolved (the lock is
    released then): the sender is told SEABORTED, nothing points at R any more."""
    o = all_combos(rcv_unmapped=True, pager="slow", pager_delay=100_000, action="delete_rcv",
                   act_at=T0 + 20_000, sender_first=False)  # S copies, R is the partner
    assert o.snd == (E.SEABORTED, (0,)) and o.rcv is None
    assert o.died == [("R", "deleted")]
    k = o.kernel
    assert all(th.name != "R" for th in k.threads.values())
    assert all(th.xfer is None for th in k.threads.values())


def test_the_receiver_is_locked_against_deletion_during_the_copy() -> None:
    """A deletion while the copy runs (not in a fault) waits for the lock: the transfer
    completes, then the receiver is deleted."""
    size = 16 * PAGE
    o = all_combos(size=size, action="delete_rcv", act_at=T0 + 3 * PAGE, even_costs=True,
                   sender_first=False)  # S copies, R is the partner
    assert o.snd == (E.OK, (size,))
    assert o.rcv is None and o.died == [("R", "deleted")]


def test_sender_deleted_during_the_copy_aborts_the_receiver() -> None:
    size = 16 * PAGE
    o = all_combos(size=size, sender_first=False, action="delete_snd", act_at=T0 + 3 * PAGE,
                   even_costs=True)
    assert o.rcv is not None and o.rcv[0] == E.REABORTED and o.snd is None
    assert ("S", "deleted") in o.died


def test_nested_fault_cancelled() -> None:
    """The copier is cancelled while its nested page-fault IPC waits for the pager: the
    nested IPC ends, and the long IPC is aborted on both sides."""
    o = all_combos(rcv_unmapped=True, pager="slow", pager_delay=100_000, action="cancel_snd",
                   act_at=T0 + 20_000, sender_first=False)
    assert o.snd == (E.SEABORTED, (0,)) and o.rcv == (E.REABORTED, (), (0,))
    assert o.died == []


def test_timeout_racing_with_the_partners_arrival_is_ignored_after_rendezvous() -> None:
    """R waits with a receive timeout that expires while S, which arrived just before,
    is still copying: the expiry is ignored (receive in progress), the IPC succeeds."""
    size = 16 * PAGE
    o = all_combos(size=size, sender_first=False, rcv_timeout=Timeout.at(T0 + 4 * PAGE),
                   even_costs=True, trace=True)
    assert o.snd == (E.OK, (size,)) and o.rcv == (E.OK, (5,), (size,))
    k = o.kernel
    assert any(e.event == "timeout" and "ignored" in e.detail for e in k.events)


def test_long_call_and_reply() -> None:
    o = all_combos(call=True, snd_unmapped=True, sender_first=True)
    assert o.snd == (E.OK, ()) and o.rcv == (E.OK, (5,), (3 * PAGE,))


def test_copy_strategies_differ_in_cost_only() -> None:
    times = {}
    for c, t in COMBOS:
        o = run_case(c, t, size=16 * PAGE)
        times[c, t] = o.kernel.now
        assert o.snd == (E.OK, (16 * PAGE,))
    assert times["kernel-buffer", "symmetric"] > times["window", "symmetric"]


# --- property -----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, 3 * PAGE), src_off=st.integers(0, PAGE - 1),
       buf_off=st.integers(0, PAGE - 1), bufsize=st.integers(0, 3 * PAGE),
       snd_unmapped=st.booleans(), rcv_unmapped=st.booleans(),
       combo=st.sampled_from(COMBOS), sender_first=st.booleans())
def test_the_buffer_holds_exactly_the_reported_prefix(size: int, src_off: int, buf_off: int,
                                                      bufsize: int, snd_unmapped: bool,
                                                      rcv_unmapped: bool, combo: tuple[str, str],
                                                      sender_first: bool) -> None:
    """Random sizes, offsets, buffer sizes and unmapped pages on both sides: the receiver's
    buffer holds exactly the prefix its result reports, and nothing beyond it changed."""
    from l4sim import Fpage, MapItem, Rights

    copy, transfer = combo
    k = Kernel(check=True, copy=copy, transfer=transfer)
    data = bytes((i * 13 + 1) & 0xFF or 1 for i in range(size))
    got: dict[str, Any] = {}
    src, buf = 0x100000 + src_off, 0x800000 + buf_off

    async def pager(t: Any) -> None:
        r = await t.wait()
        while True:
            page = r.words[0] & ~0xFFF
            frame = (0x3000000 + page - 0x800000) if page >= 0x800000 else (0x2000000 + page - 0x100000)
            r = await t.reply_and_wait(items=[MapItem(Fpage.mem(frame, 12, Rights.RW), send_base=page)])

    p = k.sigma0.task.new_thread(pager, name="P", priority=200, pager=None)
    k.phys.write(0x2000000 + src_off, data)

    async def rcv(t: Any) -> None:
        if not rcv_unmapped:
            await t.store(buf, b"\xee" * bufsize)
        if sender_first:
            await t.sleep(Timeout.us(40))
        r = await t.wait(buffers=[(buf, bufsize)])
        got["r"] = (r.error, r.string_bytes)

    async def snd(t: Any, d: int) -> None:
        if not snd_unmapped:
            await t.store(src, data)
        if not sender_first:
            await t.sleep(Timeout.us(40))
        r = await t.send(d, items=[StringItem(src, size)])
        got["s"] = (r.error, r.string_bytes)

    rt = k.new_task("R")
    r_th = rt.new_thread(rcv, name="R", pager=p)
    ts = k.new_task("S")
    ts.new_thread(snd, ts.add_cap(r_th), name="S", pager=p)
    res = k.run()
    assert res.died == [] and res.reason == "done"
    n = min(size, bufsize)
    want = E.OK if size <= bufsize else E.SEMSGCUT
    assert got["s"] == (want, (n,)) and got["r"] == (IpcError(want | 1) if want else E.OK, (n,))
    seen = bytearray()
    for a in range(buf, buf + bufsize):
        m = rt.space.lookup(a)
        seen += k.phys.read(m.phys + a - m.base, 1) if m is not None else b"?"
    fill = (b"\xee" if not rcv_unmapped else b"\x00")
    assert bytes(seen[:n]) == data[:n]
    rest = bytes(seen[n:])
    assert all(ch in (fill[0], ord("?")) for ch in rest)


# --- the file-server example ---------------------------------------------------------------

def test_file_server_example_under_every_combination() -> None:
    from helpers import load_example

    fs = load_example("file_server")
    results = {}
    for copy, transfer in COMBOS:
        k, out = fs.read_once(copy, transfer, check=True)
        assert out["ok"] and out["length"] == fs.FILE_SIZE and out["string_bytes"] == (fs.FILE_SIZE,)
        results[copy, transfer] = (out["write_cycles"], out["read_cycles"])
        client = next(t for t in k.tasks if t.name == "client")
        # the read buffer was faulted in page by page during the reply
        buf = [m for m in client.space.mappings() if fs.BUFFER_AT <= m.base < fs.BUFFER_AT + fs.FILE_SIZE]
        assert len(buf) == fs.FILE_SIZE // PAGE
    # one copy is cheaper than two; the sender-driven write pays for its extra switch
    w = results
    assert w["window", "symmetric"][1] < w["kernel-buffer", "symmetric"][1]
    assert w["window", "sender-driven"][0] > w["window", "symmetric"][0]
    assert w["window", "symmetric"][1] == w["window", "sender-driven"][1]  # the reply: sender copies


def test_file_server_runs_from_the_command_line() -> None:
    from click.testing import CliRunner

    from helpers import EXAMPLES
    from l4sim.cli import main

    res = CliRunner().invoke(main, ["run", str(EXAMPLES / "file_server.py")])
    assert res.exit_code == 0, res.output
    assert "kernel-buffer  sender-driven" in res.output
    assert "read 65536 bytes into a buffer that was not paged in" in res.output


def test_faults_at_the_same_address_in_both_spaces() -> None:
    """The sender's string and the receiver's buffer at one virtual address, both not
    paged in: two faults per page, one in each space, and the copy completes."""
    k = Kernel(check=True)
    got: dict[str, Any] = {}

    async def rcv(t: Any) -> None:
        r = await t.wait(buffers=[(0x400000, 2 * PAGE)])
        got["r"] = (r.error, r.string_bytes, await t.load(0x400000 + PAGE, 4))

    async def snd(t: Any, d: int) -> None:
        r = await t.send(d, items=[StringItem(0x400000, 2 * PAGE)])
        got["s"] = (r.error, r.string_bytes)

    r_th = k.new_task("R").new_thread(rcv, name="R", priority=110)
    ts = k.new_task("S")
    ts.new_thread(snd, ts.add_cap(r_th), name="S")
    res = k.run()
    assert res.died == []
    assert got == {"s": (E.OK, (2 * PAGE,)), "r": (E.OK, (2 * PAGE,), bytes(4))}


def test_misused_buffers_and_windows_raise_and_leave_the_brs_alone() -> None:
    from l4sim import Fpage

    k = Kernel(check=True)
    seen: list[Any] = []

    async def body(t: Any) -> None:
        await t.wait(receive_timeout=Timeout.zero(), buffers=[(0x1000, 16)])
        before = (tuple(t.utcb.br), t.utcb.bdr)
        for kw in ({"buffers": [(0x1000, 16), (0x2000, "x")]}, {"buffers": [(-1, 4)]},
                   {"buffers": [(1 << 47, 1)]}, {"buffers": [0x1000]},
                   {"window": [Fpage.mem(0, 12), Fpage.mem(0x1000, 12)]}, {"window": "x"}):
            try:
                await t.wait(receive_timeout=Timeout.zero(), **kw)
            except (TypeError, ValueError) as e:
                seen.append(type(e).__name__)
        seen.append((tuple(t.utcb.br), t.utcb.bdr) == before)

    k.new_task("T").new_thread(body, name="T", pager=None)
    k.run()
    assert seen == ["TypeError", "ValueError", "ValueError", "TypeError", "ValueError", "TypeError", True]
