"""Memory (S9, S10): flexpage IPC, the landing rule, map vs grant, rights, the mapping
database with recursive unmap, capability revocation, quotas, bad fpages, page faults.

The sender in most tests is a thread in sigma0's own task: it holds all physical memory
1:1 (the roots of the mapping database), so its mappings have depth 0.
"""

from __future__ import annotations

import bisect
import random
from typing import Any

import pytest

from l4sim import CapRights, Fpage, IpcError, Kernel, MapItem, MsgTag, Rights, Task, Thread
from l4sim.kernel.flexpage import landing
from l4sim.kernel.memory import TABLE_SIZE, AddressSpace, Mapping
from l4sim.lib.sigma0 import Ownership

KiB = 1 << 10
PAGE = 4 * KiB


def kernel() -> Kernel:
    return Kernel(check=True)


def owner(k: Kernel, body: Any, *args: Any, name: str = "A") -> Thread:
    """A thread in sigma0's task: all physical memory mapped 1:1 (root mappings)."""
    return k.sigma0.task.new_thread(body, *args, name=name, pager=None, priority=120)


def node(task: Task, addr: int) -> Mapping | None:
    return task.space.lookup(addr)


def pair(k: Kernel, send_body: Any, recv_body: Any, quota: int | None = None) -> tuple[Thread, Thread]:
    """Receiver B in its own task (no pager), sender A in sigma0's task with a capability to B."""
    tb = k.new_task("B") if quota is None else k.new_task("B", pt_quota=quota)
    b = tb.new_thread(recv_body, name="B", pager=None, priority=130)  # waits before A sends
    a = owner(k, send_body, k.sigma0.task.add_cap(b))
    return a, b


def chain(k: Kernel, *, a_frames: tuple[int, ...] = (0x500000,), a_rights: int = Rights.RWX,
          b_rights: int = Rights.RWX, c_at: int = 0x200000,
          b_after: Any = None) -> tuple[Task, Task, list[Any]]:
    """A (sigma0's task) maps each of `a_frames` in turn to B at 0x100000 (B waits for
    each); after the first, B maps its page on to C at `c_at`, then runs `b_after(t)`.
    Returns B's and C's tasks and a log of the IPC errors (C's, B's send, B's result)."""
    tb, tc = k.new_task("B"), k.new_task("C")
    log: list[Any] = []

    async def c_body(t: Any) -> None:
        log.append(("C", (await t.wait(window=Fpage.mem(c_at, 12))).error))

    c = tc.new_thread(c_body, name="C", pager=None, priority=90)
    csel = tb.add_cap(c)

    async def b_body(t: Any) -> None:
        await t.wait(window=Fpage.mem(0x100000, 12))
        r = await t.send(csel, items=[MapItem(Fpage.mem(0x100000, 12, b_rights))])
        log.append(("B", r.error))
        for _ in a_frames[1:]:
            await t.wait(window=Fpage.mem(0x100000, 12))
        if b_after is not None:
            log.append(("B after", await b_after(t)))

    b = tb.new_thread(b_body, name="B", pager=None, priority=100)

    async def a_body(t: Any, sel: int) -> None:
        for frame in a_frames:
            await t.send(sel, items=[MapItem(Fpage.mem(frame, 12, a_rights))])

    owner(k, a_body, k.sigma0.task.add_cap(b))
    return tb, tc, log


# --- the landing rule ------------------------------------------------------------------

@pytest.mark.parametrize(("snd", "rcv", "hot", "expect"), [
    # send fpage smaller than the window: window base + (hot mod R) aligned to S
    ((0x200000, 12), (0x100000, 16), 0x5000, (0x200000, 0x105000, 12)),
    ((0x200000, 12), (0x100000, 16), 0x15ABC, (0x200000, 0x105000, 12)),
    ((0x200000, 13), (0x100000, 16), 0x7000, (0x200000, 0x106000, 13)),
    # equal: lands at the window base whatever the send base
    ((0x200000, 14), (0x100000, 14), 0x3000, (0x200000, 0x100000, 14)),
    # larger: the window-sized part the send base selects, at the window base
    ((0x200000, 16), (0x100000, 14), 0x9000, (0x208000, 0x100000, 14)),
    ((0x200000, 16), (0x100000, 14), 0x1F000, (0x20C000, 0x100000, 14)),
    ((0x200000, 16), (0x100000, 12), 0x2000, (0x202000, 0x100000, 12)),
])
def test_landing_rule(snd: tuple[int, int], rcv: tuple[int, int], hot: int,
                      expect: tuple[int, int, int]) -> None:
    assert landing(snd, rcv, hot) == expect


@pytest.mark.parametrize(("send_order", "window_order", "hot", "lands_at", "from_phys"), [
    (12, 16, 0x5000, 0x105000, 0x200000),    # smaller than the window
    (16, 16, 0x5000, 0x100000, 0x200000),    # equal
    (16, 13, 0x6000, 0x100000, 0x206000),    # larger: only the selected part
    (12, 16, 0x3F000, 0x10F000, 0x200000),   # send base beyond the window wraps (mod R)
])
def test_landing_through_ipc(send_order: int, window_order: int, hot: int, lands_at: int,
                             from_phys: int) -> None:
    k = kernel()
    got: list[Any] = []

    async def recv(t: Any) -> None:
        r = await t.wait(window=Fpage.mem(0x100000, window_order, Rights.RWX))
        got.append((r.error, r.words, t.utcb.mr[1], t.utcb.mr[2]))

    async def send(t: Any, b: int) -> None:
        r = await t.send(b, words=[7], items=[MapItem(Fpage.mem(0x200000, send_order, Rights.RW),
                                                      send_base=hot)])
        got.append(r.error)

    _, b = pair(k, send, recv)
    k.run()
    assert got[0] == (IpcError.OK, (7,), MapItem(Fpage.mem(0, 12), hot).words()[0],
                      Fpage.mem(lands_at, min(send_order, window_order), Rights.RW).raw)
    assert got[1] == IpcError.OK
    size = 1 << min(send_order, window_order)
    # 4 KiB page-table entries, each from the matching source frame
    pages = [(m.base, m.order, m.phys, m.rights) for m in b.task.space.mappings()]
    assert pages == [(lands_at + i, 12, from_phys + i, Rights.RW) for i in range(0, size, PAGE)]


def test_several_items_and_send_bases_in_one_message() -> None:
    k = kernel()
    got: list[Any] = []

    async def recv(t: Any) -> None:
        r = await t.wait(window=Fpage.mem(0x400000, 20))
        got.append(r.error)

    async def send(t: Any, b: int) -> None:
        items = [MapItem(Fpage.mem(0x10000 * i, 12, Rights.R), send_base=0x3000 * i) for i in range(1, 5)]
        got.append((await t.send(b, items=items)).error)

    _, b = pair(k, send, recv)
    k.run()
    assert got == [IpcError.OK, IpcError.OK]
    for i in range(1, 5):
        m = node(b.task, 0x400000 + 0x3000 * i)
        assert m is not None and m.phys == 0x10000 * i and m.rights == Rights.R


# --- map, grant, rights, upgrade, replacement -----------------------------------------------

def test_map_keeps_the_senders_mapping_and_grant_moves_it() -> None:
    k = kernel()
    results: list[Any] = []
    tb = k.new_task("B")
    tc = k.new_task("C")

    async def recv(t: Any) -> None:
        results.append((await t.wait(window=Fpage.mem(0x10000000, 16))).error)
        # B grants its mapping on to C: B loses it, C's is the same node.
        results.append((await t.send(t_c, items=[MapItem(Fpage.mem(0x10000000, 12),
                                                          send_base=0x2000, grant=True)])).error)

    async def recv_c(t: Any) -> None:
        results.append((await t.wait(window=Fpage.mem(0x20000000, 16))).error)

    c = tc.new_thread(recv_c, name="C", pager=None, priority=100)
    t_c = tb.add_cap(c)
    b = tb.new_thread(recv, name="B", pager=None, priority=110)

    async def send(t: Any, sel: int) -> None:
        results.append((await t.send(sel, items=[MapItem(Fpage.mem(0x300000, 12))])).error)

    owner(k, send, k.sigma0.task.add_cap(b))
    k.run()
    assert results == [IpcError.OK] * 4
    s0 = k.sigma0.task
    root = node(s0, 0x300000)
    assert root is not None and root.parent is None  # the map kept the sender's mapping
    assert node(tb, 0x10000000) is None                # the grant removed B's
    m = node(tc, 0x20002000)
    assert m is not None and m.parent is root and m.phys == 0x300000 and m.depth == 1


def test_rights_are_the_item_rights_and_the_senders() -> None:
    k = kernel()
    out: list[Any] = []

    async def recv(t: Any) -> None:
        r = await t.wait(window=Fpage.mem(0x100000, 20))
        out.append(r.error)
        r = await t.wait(window=Fpage.mem(0x100000, 20))
        out.append(r.error)
        out.append(t.utcb.mr[1])  # an empty map: nothing landed

    async def send(t: Any, b: int) -> None:
        await t.send(b, items=[MapItem(Fpage.mem(0x500000, 12, Rights.R), send_base=0)])
        # An item with no rights maps nothing.
        await t.send(b, items=[MapItem(Fpage.mem(0x500000, 12, Rights.NONE), send_base=0x1000)])

    _, b = pair(k, send, recv)
    k.run()
    assert out == [IpcError.OK, IpcError.OK, 0]
    m = node(b.task, 0x100000)
    assert m is not None and m.rights == Rights.R
    assert node(b.task, 0x101000) is None


def test_rights_cannot_grow_down_the_tree() -> None:
    """B holds a read-only page and maps it on with RWX: C gets R."""
    k = kernel()
    _, tc, log = chain(k, a_frames=(0x900000,), a_rights=Rights.R, c_at=0x800000)
    k.run()
    assert sorted(log) == [("B", IpcError.OK), ("C", IpcError.OK)]
    mc = node(tc, 0x800000)
    assert mc is not None and mc.rights == Rights.R and mc.depth == 2


def test_mapping_again_upgrades_a_child_of_the_same_source() -> None:
    k = kernel()

    async def recv(t: Any) -> None:
        await t.wait(window=Fpage.mem(0x100000, 12))
        first.append(node(t_task, 0x100000))
        await t.wait(window=Fpage.mem(0x100000, 12))

    async def send(t: Any, b: int) -> None:
        await t.send(b, items=[MapItem(Fpage.mem(0x500000, 12, Rights.R))])
        await t.send(b, items=[MapItem(Fpage.mem(0x500000, 12, Rights.RW))])

    first: list[Any] = []
    _, b = pair(k, send, recv)
    t_task = b.task
    k.run()
    m = node(b.task, 0x100000)
    assert m is not None and m is first[0]  # the same node, upgraded
    assert m.rights == Rights.RW and b.task.space.count == 1


def test_mapping_over_a_foreign_mapping_replaces_it() -> None:
    """B's page at 0x100000 came from frame X (and B mapped it on to C); A maps frame Y
    there: B's old mapping and everything derived from it are gone."""
    k = kernel()
    tb, tc, _ = chain(k, a_frames=(0x500000, 0x600000), c_at=0x700000)
    k.run()
    m = node(tb, 0x100000)
    assert m is not None and m.phys == 0x600000
    assert node(tc, 0x700000) is None and tc.space.count == 0


def test_memory_orders_below_a_page_map_nothing() -> None:
    k = kernel()
    out: list[Any] = []

    async def recv(t: Any) -> None:
        r = await t.wait(window=Fpage.mem(0x100000, 16))
        out.append((r.error, t.utcb.mr[1]))

    async def send(t: Any, b: int) -> None:
        out.append((await t.send(b, items=[MapItem(Fpage.mem(0x500000, 11))])).error)

    _, b = pair(k, send, recv)
    k.run()
    assert out == [(IpcError.OK, 0), IpcError.OK] and b.task.space.count == 0


def test_an_item_without_a_receive_window_cuts_the_message() -> None:
    k = kernel()
    out: list[Any] = []

    async def recv(t: Any) -> None:
        r = await t.wait()
        out.append((r.error, r.words))

    async def send(t: Any, b: int) -> None:
        out.append((await t.send(b, words=[5], items=[MapItem(Fpage.mem(0x500000, 12))])).error)

    _, b = pair(k, send, recv)
    k.run()
    assert out == [(IpcError.REMSGCUT, (5,)), IpcError.SEMSGCUT] and b.task.space.count == 0


# --- unmap ------------------------------------------------------------------------------------

def three_generations(k: Kernel, a_after: Any) -> tuple[Task, Task, list[Any]]:
    """A (sigma0's task) maps 0x500000 to B at 0x100000, B maps it to C at 0x200000;
    then A runs `a_after(t)`; then B and C each try a read and a write (pager=None: a fault kills)."""
    tb, tc = k.new_task("B"), k.new_task("C")
    log: list[Any] = []

    async def probe(t: Any, addr: int, who: str) -> None:
        await t.sleep(__import__("l4sim").Timeout.cycles(1_000_000))  # after A's unmap
        data = await t.load(addr, 4)
        log.append((who, "read", data))
        await t.store(addr, b"!")
        log.append((who, "write"))

    async def c_body(t: Any) -> None:
        await t.wait(window=Fpage.mem(0x200000, 12))
        await probe(t, 0x200000, "C")

    c = tc.new_thread(c_body, name="C", pager=None, priority=90)
    csel = tb.add_cap(c)

    async def b_body(t: Any) -> None:
        await t.wait(window=Fpage.mem(0x100000, 12))
        await t.send(csel, items=[MapItem(Fpage.mem(0x100000, 12))])
        await probe(t, 0x100000, "B")

    b = tb.new_thread(b_body, name="B", pager=None, priority=100)

    async def a_body(t: Any, sel: int) -> None:
        await t.store(0x500000, b"data")
        await t.send(sel, items=[MapItem(Fpage.mem(0x500000, 12, Rights.RW))])
        await t.sleep(__import__("l4sim").Timeout.cycles(100_000))
        log.append(("A", "unmapped", await a_after(t)))

    owner(k, a_body, k.sigma0.task.add_cap(b))
    return tb, tc, log


def test_recursive_unmap_through_three_generations_in_three_tasks() -> None:
    k = kernel()
    tb, tc, log = three_generations(k, lambda t: t.unmap(Fpage.mem(0x500000, 12, Rights.RWX)))
    res = k.run()
    assert ("A", "unmapped", 2) in log
    assert tb.space.count == 0 and tc.space.count == 0
    assert node(k.sigma0.task, 0x500000) is not None  # A keeps its own (not self_too)
    reasons = {th.name: why for th, why in res.died}
    assert "read page fault at 0x100000" in reasons["B"] and "no pager" in reasons["B"]
    assert "read page fault at 0x200000" in reasons["C"]


def test_partial_revocation_downgrades_every_descendant() -> None:
    k = kernel()
    tb, tc, log = three_generations(k, lambda t: t.unmap(Fpage.mem(0x500000, 12, Rights.W)))
    res = k.run()
    assert ("A", "unmapped", 0) in log
    assert ("B", "read", b"data") in log and ("C", "read", b"data") in log
    assert ("B", "write") not in log and ("C", "write") not in log
    for task, addr in ((tb, 0x100000), (tc, 0x200000)):
        m = node(task, addr)
        assert m is not None and m.rights == Rights.R
    reasons = {th.name: why for th, why in res.died}
    assert "write page fault at 0x100000" in reasons["B"]


def test_unmap_self_too_removes_the_callers_own_mapping() -> None:
    k = kernel()
    tb, tc, log = chain(k, b_after=lambda t: t.unmap(Fpage.mem(0x100000, 12, Rights.RWX), self_too=True))
    k.run()
    assert ("B after", 2) in log and tb.space.count == 0 and tc.space.count == 0
    root = node(k.sigma0.task, 0x500000)
    assert root is not None and not root.children


def test_deleting_a_task_unmaps_what_it_mapped() -> None:
    k = kernel()
    tb, tc, _ = chain(k)
    k.run()
    assert tc.space.count == 1
    k.delete(tb)
    assert tc.space.count == 0 and tb.space.count == 0
    root = node(k.sigma0.task, 0x500000)
    assert root is not None and not root.children


def test_depth_limit() -> None:
    """Mappings ping-pong between two tasks, one level deeper each time, until the
    depth limit (255) makes the map fail: SEMAPFAILED, nothing changed."""
    k = kernel()
    ta, tb = k.new_task("P"), k.new_task("Q")
    errors: list[IpcError] = []
    rounds = 130

    async def p_body(t: Any) -> None:
        await t.wait(window=Fpage.mem(0x100000, 12))
        for i in range(rounds):
            src = 0x100000 + i * PAGE * 2 if i else 0x100000
            r = await t.call(q_sel, items=[MapItem(Fpage.mem(src, 12))],
                             window=Fpage.mem(0x100000 + (i + 1) * PAGE * 2, 12))
            errors.append(r.error)
            if r.error:
                return

    async def q_body(t: Any) -> None:
        r = await t.wait(window=Fpage.mem(0x40000000, 12))
        i = 0
        while r.ok:
            items = [MapItem(Fpage.mem(0x40000000 + i * PAGE, 12))]
            i += 1
            r = await t.reply_and_wait(items=items, window=Fpage.mem(0x40000000 + i * PAGE, 12))

    q = tb.new_thread(q_body, name="Q", pager=None, priority=100)
    q_sel = ta.add_cap(q)

    async def seed(t: Any, sel: int) -> None:
        await t.send(sel, items=[MapItem(Fpage.mem(0x500000, 12))])

    p = ta.new_thread(p_body, name="P", pager=None, priority=90)
    # P must hold the first page before it starts: give it from sigma0's task directly.
    owner(k, seed, k.sigma0.task.add_cap(p))
    del p
    k.run()
    deepest = max((m.depth for t in (ta, tb) for m in t.space.mappings()), default=0)
    assert deepest == 255
    assert errors[-1] in (IpcError.SEMAPFAILED, IpcError.REMAPFAILED)
    assert all(e == IpcError.OK for e in errors[:-1])


# --- quotas and bad fpages ------------------------------------------------------------------

def test_page_table_quota_exhaustion_fails_the_map_and_changes_nothing() -> None:
    """B's quota allows the top-level table plus three: the first 4 KiB page needs a page
    table, a directory and a pointer table (three); a page in another 2 MiB region needs
    one more, which fails: SEMAPFAILED / REMAPFAILED, the first item stays."""
    k = kernel()
    out: list[Any] = []

    async def recv(t: Any) -> None:
        r = await t.wait(window=Fpage.mem(0, 30))
        out.append(r.error)

    async def send(t: Any, b: int) -> None:
        r = await t.send(b, words=[1], items=[MapItem(Fpage.mem(0x500000, 12), send_base=0x1000),
                                              MapItem(Fpage.mem(0x600000, 12), send_base=0x201000)])
        out.append(r.error)

    _, b = pair(k, send, recv, quota=4 * PAGE)
    k.run()
    assert out == [IpcError.REMAPFAILED, IpcError.SEMAPFAILED]
    assert [(m.base, m.phys) for m in b.task.space.mappings()] == [(0x1000, 0x500000)]
    assert b.task.space.pt_bytes == 4 * PAGE


@pytest.mark.parametrize("fpage_raw", [
    Fpage.mem(0, 48, Rights.RW).raw,          # larger than the address space
    Fpage.mem(1 << 47, 12).raw,               # beyond the end of the address space
    (0x500000 | 12 << 6 | 0 << 4 | 6),        # special type, not "all"
])
def test_a_bad_fpage_is_an_error_result_and_changes_nothing(fpage_raw: int) -> None:
    k = kernel()
    out: list[Any] = []

    async def recv(t: Any) -> None:
        out.append((await t.wait(window=Fpage.mem(0, 40))).error)

    async def send(t: Any, b: int) -> None:
        mr = t.utcb.mr
        mr[0] = 0x1000 | 8   # send base | map item
        mr[1] = fpage_raw
        out.append((await t.send(b, tag=MsgTag(items=1))).error)

    _, b = pair(k, send, recv)
    before = k.mapdb.dump()
    k.run()
    assert out == [IpcError.REMAPFAILED, IpcError.SEMAPFAILED]
    assert b.task.space.count == 0 and k.mapdb.dump() == before


def test_address_bits_below_the_order_are_ignored() -> None:
    """SPEC S14 (Fiasco): an fpage 0x501000/16 is the region 0x500000/16."""
    k = kernel()
    out: list[Any] = []

    async def recv(t: Any) -> None:
        out.append((await t.wait(window=Fpage.mem(0x1000000, 16))).error)

    async def send(t: Any, b: int) -> None:
        out.append((await t.send(b, items=[MapItem(Fpage.mem(0x501000, 16, Rights.RW))])).error)

    _, b = pair(k, send, recv)
    k.run()
    assert out == [IpcError.OK, IpcError.OK]
    pages = b.task.space.mappings()
    assert len(pages) == 16 and pages[0].phys == 0x500000 and pages[0].base == 0x1000000


def test_fpage_layout_is_fiascos() -> None:
    fp = Fpage.mem(0x12345000, 12, Rights.RW)
    assert fp.raw == 0x12345000 | 12 << 6 | 1 << 4 | 6
    assert Fpage.io(0x3F8, 3).raw == 0x3F8 << 12 | 3 << 6 | 2 << 4 | 6
    assert Fpage.obj(5, 0, CapRights.R).raw == 5 << 12 | 3 << 4 | 4
    assert Fpage.all().raw == 63 << 6 | 0xF
    assert MapItem(fp, send_base=0x7000, grant=True).words() == (0x7000 | 8 | 2, fp.raw)


# --- I/O ports --------------------------------------------------------------------------------

def test_io_ports_map_like_memory() -> None:
    k = kernel()
    out: list[Any] = []

    async def recv(t: Any) -> None:
        out.append((await t.wait(window=Fpage.io(0, 16))).error)

    async def send(t: Any, b: int) -> None:
        out.append((await t.send(b, items=[MapItem(Fpage.io(0x3F8, 3), send_base=0x3F8 << 12)])).error)

    _, b = pair(k, send, recv)
    k.run()
    assert out == [IpcError.OK, IpcError.OK]
    m = b.task.io.lookup(0x3F8)
    assert m is not None and m.base == 0x3F8 and m.order == 3 and b.task.io.lookup(0x400) is None


# --- capabilities -----------------------------------------------------------------------------

def test_capability_mapped_on_and_revoked_is_gone_from_every_descendant() -> None:
    """A holds a gate capability, maps it to B, B maps it to C; C calls through it; A
    revokes: B's and C's are gone, and C's next call fails ENOT_EXISTENT."""
    k = kernel()
    ts, ta, tb, tc = (k.new_task(n) for n in ("S", "A", "B", "C"))
    calls: list[Any] = []

    async def server(t: Any) -> None:
        r = await t.wait()
        while True:
            r = await t.reply_and_wait(words=[r.label])

    srv = ts.new_thread(server, name="srv", pager=None, priority=200)
    gate_sel = ta.add_cap(k.new_gate(srv, label=0x77))

    async def c_body(t: Any) -> None:
        await t.wait(window=Fpage.obj(40, 0))
        calls.append(await t.call(40, words=[1]))
        await t.sleep(__import__("l4sim").Timeout.cycles(500_000))
        calls.append(await t.call(40, words=[2]))

    c = tc.new_thread(c_body, name="C", pager=None, priority=90)
    csel = tb.add_cap(c)

    async def b_body(t: Any) -> None:
        await t.wait(window=Fpage.obj(30, 0))
        await t.send(csel, items=[MapItem(Fpage.obj(30, 0, CapRights.ALL))])

    b = tb.new_thread(b_body, name="B", pager=None, priority=100)
    bsel = ta.add_cap(b)

    async def a_body(t: Any) -> None:
        await t.send(bsel, items=[MapItem(Fpage.obj(gate_sel, 0, CapRights.R | CapRights.W))])
        await t.sleep(__import__("l4sim").Timeout.cycles(200_000))
        revoked.append(await t.unmap(Fpage.obj(gate_sel, 0, CapRights.R)))

    revoked: list[int] = []
    ta.new_thread(a_body, name="A", pager=None, priority=80)
    k.run()
    assert calls[0].ok and calls[0].words == (0x77,)
    assert revoked == [2]
    assert calls[1].error == IpcError.ENOT_EXISTENT
    assert tb.caps[30] is None and tc.caps[40] is None
    cap = ta.caps[gate_sel]
    assert cap is not None and not cap.children


def test_capability_rights_are_reduced_and_downgraded() -> None:
    k = kernel()
    ta, tb = k.new_task("A"), k.new_task("B")
    irq = k.new_irq()
    irq_sel = ta.add_cap(irq)

    async def b_body(t: Any) -> None:
        await t.wait(window=Fpage.obj(8, 0))

    b = tb.new_thread(b_body, name="B", pager=None, priority=100)
    bsel = ta.add_cap(b)

    async def a_body(t: Any) -> None:
        await t.send(bsel, items=[MapItem(Fpage.obj(irq_sel, 0, CapRights.R | CapRights.S))])
        await t.unmap(Fpage.obj(irq_sel, 0, CapRights.S))

    ta.new_thread(a_body, name="A", pager=None, priority=90)
    k.run()
    cap = tb.caps[8]
    assert cap is not None and cap.obj is irq and cap.rights == CapRights.R
    print(k.mapdb.dump("caps"))
    assert "B[8] <Irq irq1> r---" in k.mapdb.dump("caps")


# --- page faults --------------------------------------------------------------------------

def test_page_fault_with_no_pager_kills_the_thread_with_a_clear_reason() -> None:
    k = kernel()
    task = k.new_task("T")

    async def body(t: Any) -> None:
        await t.store(0x4000, b"x")

    th = task.new_thread(body, name="T", pager=None)
    res = k.run()
    assert res.reason == "done"
    [(dead, why)] = res.died
    assert dead is th
    assert why.startswith("write page fault at 0x4000 (") and why.endswith("and no pager")
    assert "test_memory.py:" in why


def test_page_fault_ipc_message_and_saved_registers() -> None:
    """The pager sees label -2, MR0 = address | write bit, MR1 = the code location of the
    access; the faulting thread's MR0/MR1/BDR/BRs are as they were afterwards."""
    k = kernel()
    seen: list[Any] = []

    async def pager(t: Any) -> None:
        r = await t.wait()
        while True:
            seen.append((r.tag.label, r.tag.words, r.words[0], k.code_location(r.words[1])))
            page = r.words[0] & ~0xFFF
            r = await t.reply_and_wait(items=[MapItem(Fpage.mem(0x700000, 12), send_base=page)])

    pg = owner(k, pager, name="pager")
    task = k.new_task("T")

    async def body(t: Any) -> Any:
        mr, utcb = t.utcb.mr, t.utcb
        mr[0], mr[1] = 11, 22
        utcb.br[0], utcb.br[1], utcb.bdr = 33, 44, 55
        await t.store(0x4008, b"hi")
        data = await t.load(0x4008, 2)
        return data, tuple(mr[:2]), (utcb.br[0], utcb.br[1], utcb.bdr)

    th = task.new_thread(body, name="T", pager=pg)
    res = k.run()
    assert res.died == []
    assert th.result == (b"hi", (11, 22), (33, 44, 55))
    [(label, words, mr0, where)] = seen
    assert (label, words, mr0) == (-2, 2, 0x4008 | 2)
    assert where.endswith("test_memory.py:" + str(_line_of("await t.store(0x4008")))
    assert k.phys.read(0x700008, 2) == b"hi"


def _line_of(text: str) -> int:
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if text in line and "_line_of" not in line)


def test_a_refusing_pager_kills_the_thread() -> None:
    k = kernel()

    async def pager(t: Any) -> None:
        await t.wait()
        while True:
            await t.reply_and_wait(label=-1)

    pg = k.new_task("P").new_thread(pager, name="pager", pager=None)

    async def body(t: Any) -> None:
        await t.load(0x9000, 1)

    th = k.new_task("T").new_thread(body, name="T", pager=pg)
    res = k.run()
    [(dead, why)] = res.died
    assert dead is th and "read page fault at 0x9000" in why and "refused by pager" in why


def test_a_reply_that_maps_nothing_faults_again() -> None:
    k = kernel()
    count = [0]

    async def pager(t: Any) -> None:
        await t.wait()
        while True:
            count[0] += 1
            await t.reply_and_wait()

    pg = k.new_task("P").new_thread(pager, name="pager", pager=None)

    async def body(t: Any) -> None:
        await t.load(0x9000, 1)

    k.new_task("T").new_thread(body, name="T", pager=pg)
    res = k.run(max_steps=40)
    assert res.reason == "steps" and count[0] >= 5


def test_default_pager_gives_zero_filled_pages_and_refuses_protection_faults() -> None:
    k = kernel()
    ta, tb = k.new_task("A"), k.new_task("B")

    async def b_body(t: Any) -> Any:
        r = await t.wait(window=Fpage.mem(0x100000, 12))
        assert r.ok
        data = await t.load(0x100000, 3)
        await t.store(0x100000, b"no")   # read-only page: a protection fault, refused
        return data

    b = tb.new_thread(b_body, name="B", priority=100)
    bsel = ta.add_cap(b)

    async def a_body(t: Any) -> Any:
        zero = await t.load(0x5000, 8)
        await t.store(0x5000, b"abc")
        await t.send(bsel, items=[MapItem(Fpage.mem(0x5000, 12, Rights.R))])
        return zero

    a = ta.new_thread(a_body, name="A", priority=90)
    res = k.run()
    assert a.result == bytes(8)
    reasons = dict((th.name, why) for th, why in res.died)
    assert "write page fault at 0x100000" in reasons["B"] and "refused by anon-pager" in reasons["B"]
    assert "A" not in reasons


def test_access_spanning_pages_faults_in_each() -> None:
    k = kernel()

    async def body(t: Any) -> Any:
        await t.store(0x10FFE, b"abcd")            # two pages
        await t.store_word(0x20000, 0x1122334455667788)
        return await t.load(0x10FFE, 4), await t.load_word(0x20000)

    th = k.new_task("T").new_thread(body, name="T")
    k.run()
    assert th.result == (b"abcd", 0x1122334455667788)
    assert [m.base for m in th.task.space.mappings()] == [0x10000, 0x11000, 0x20000]


def test_mapped_access_does_not_enter_the_kernel() -> None:
    k = kernel()

    async def body(t: Any) -> int:
        await t.store(0x10000, b"x")
        before = k.entries
        for _ in range(10):
            await t.load(0x10000, 1)
            await t.store(0x10000, b"y")
        return k.entries - before

    th = k.new_task("T").new_thread(body, name="T")
    k.run()
    assert th.result == 0


def test_python_misuse_of_memory_access_raises() -> None:
    k = kernel()
    errors: list[type] = []

    async def body(t: Any) -> None:
        for call in (lambda: t.load(-1, 4), lambda: t.load(0, "x"), lambda: t.store(0, "str"),
                     lambda: t.unmap(0x1000)):
            try:
                await call()
            except (TypeError, ValueError) as e:
                errors.append(type(e))

    k.new_task("T").new_thread(body, name="T", pager=None)
    k.run()
    assert errors == [ValueError, TypeError, TypeError, TypeError]


def test_a_bad_address_or_length_names_the_argument() -> None:
    k = kernel()
    said: list[str] = []

    async def body(t: Any) -> None:
        for addr, n in (("0", 4), (0, 4.0), (0x1000, True), (-8, 4), (0, -1)):
            try:
                await t.load(addr, n)
            except (TypeError, ValueError) as e:
                said.append(str(e))

    k.new_task("T").new_thread(body, name="T", pager=None)
    k.run()
    assert said == ["addr must be an int, got str", "n must be an int, got float",
                    "n must be an int, got bool",
                    "addr and n must not be negative, got -0x8, 4",
                    "addr and n must not be negative, got 0x0, -1"]


def test_windows_are_laid_out_in_the_brs_and_bdr() -> None:
    k = kernel()
    seen: list[Any] = []

    async def body(t: Any) -> None:
        await t.wait(receive_timeout=__import__("l4sim").Timeout.zero(),
                     window=[Fpage.obj(16, 4), Fpage.mem(0x100000, 20)])
        u = t.utcb
        seen.append((u.br[0], u.br[1], u.br[2], u.br[3], u.bdr))

    k.new_task("T").new_thread(body, name="T", pager=None)
    k.run()
    # the object window at BR0 (BDR bits 10-14 = 0), the memory window at BR2 (bits 0-4 = 2)
    assert seen == [(8, Fpage.obj(16, 4).raw, 8, Fpage.mem(0x100000, 20).raw, 2)]


def test_sigma0_hands_each_region_out_once_and_stays_fast() -> None:
    from l4sim.lib.sigma0 import Ownership

    own = Ownership(1 << 20)
    got = []
    for client in (1, 2, 1):
        a = own.find_free(12)
        assert a is not None
        own.take(a, a + PAGE, client)
        got.append(a)
    assert got == [0xFF000, 0xFE000, 0xFD000]           # highest free page first
    assert not own.may_take(got[1], got[1] + PAGE, 1)   # client 2's page is not client 1's
    assert own.may_take(got[0], got[0] + PAGE, 1)       # a client may ask again for its own
    assert not own.may_take(0xFF000, 0x101000, 1)       # beyond physical memory
    big = Ownership(1 << 30)
    for _ in range(2000):                               # consecutive pages of one client
        a = big.find_free(12)
        assert a is not None
        big.take(a, a + PAGE, 7)
    assert len(big.regions) == 1                        # merged: find_free stays O(1)


def test_unmapping_part_of_a_mapping_with_many_children() -> None:
    """A holds 64 MiB (sigma0's root); it maps 100 pages and one 2 MiB superpage to B,
    then unmaps single pages and a range: exactly the children inside go (the index of
    children by frame agrees with a scan)."""
    k = kernel()
    tb = k.new_task("B")
    removed: list[int] = []

    async def b_body(t: Any) -> None:
        for _ in range(5):
            assert (await t.wait(window=Fpage.mem(0x40000000, 30))).ok

    b = tb.new_thread(b_body, name="B", pager=None, priority=130)

    async def a_body(t: Any, sel: int) -> None:
        for i in range(0, 100, 25):
            await t.send(sel, items=[MapItem(Fpage.mem((i + j) * PAGE, 12), send_base=(i + j) * PAGE)
                                     for j in range(25)])
        await t.send(sel, items=[MapItem(Fpage.mem(0x600000, 21), send_base=0x600000)])
        removed.append(await t.unmap(Fpage.mem(5 * PAGE, 12, Rights.RWX)))
        removed.append(await t.unmap(Fpage.mem(0x601000, 12, Rights.RWX)))  # inside the superpage
        removed.append(await t.unmap(Fpage.mem(0x40000, 16, Rights.W)))     # downgrade 16 pages
        removed.append(await t.unmap(Fpage.mem(0x10000, 15, Rights.RWX)))   # pages 16..23

    owner(k, a_body, k.sigma0.task.add_cap(b))
    k.run()
    assert removed == [1, 1, 0, 8]
    pages = {m.base - 0x40000000: m for m in tb.space.mappings() if m.order == 12}
    assert [m.order for m in tb.space.mappings()] == [12] * len(pages)  # the superpage went
    want = [i * PAGE for i in range(100) if i != 5 and not 16 <= i < 24]
    assert sorted(pages) == want
    for off, m in pages.items():
        assert m.rights == (Rights.R | Rights.X if 0x40000 <= off < 0x50000 else Rights.RWX)


def test_a_grant_of_part_of_a_larger_entry_is_demoted_to_a_map() -> None:
    """As in Fiasco ("can't grant page from superpage, demoting to map"): A grants one page
    of sigma0's 64 MiB root; B gets a mapping derived from it and A keeps the root."""
    k = kernel()
    out: list[Any] = []

    async def recv(t: Any) -> None:
        out.append((await t.wait(window=Fpage.mem(0x100000, 12))).error)

    async def send(t: Any, b: int) -> None:
        out.append((await t.send(b, items=[MapItem(Fpage.mem(0x500000, 12), grant=True)])).error)

    _, b = pair(k, send, recv)
    k.run()
    assert out == [IpcError.OK, IpcError.OK]
    root = node(k.sigma0.task, 0x500000)
    m = node(b.task, 0x100000)
    assert root is not None and root.order == 26 and m is not None and m.parent is root


def test_fits_page_is_fits_of_one_page() -> None:
    """`fits_page` answers as `fits([(base, 12)])` up to the quota's last table, in a
    known page table and in new ones."""
    for quota in range(TABLE_SIZE, 8 * TABLE_SIZE, TABLE_SIZE):
        space = AddressSpace(None, "c", 1, 47, 12, quota)
        for page in (0x10_0000, 0x10_1000, 0x30_0000, 0x4000_0000, 0x80_0000_0000):
            for probe in (page, page + PAGE, page + (1 << 21), page + (1 << 30)):
                assert space.fits_page(probe) == space.fits([(probe, 12)])
            if space.fits_page(page):
                space.insert(Mapping(space, page, 12, 0, 7, None))


def _reference_take(own: Ownership, start: int, end: int, client: int) -> None:
    """`Ownership.take` as it was first written (the model the faster one must follow)."""
    starts, regions = own.starts, own.regions
    i = bisect.bisect_right(starts, start)
    n = len(regions)
    if (i and regions[i - 1][1] > start) or (i < n and starts[i] < end):
        return
    right = i < n and starts[i] == end and regions[i][2] == client
    left = i > 0 and regions[i - 1][1] == start and regions[i - 1][2] == client
    if left and right:
        regions[i - 1] = (regions[i - 1][0], regions[i][1], client)
        del starts[i], regions[i]
    elif right:
        regions[i] = (start, regions[i][1], client)
        starts[i] = start
    elif left:
        regions[i - 1] = (regions[i - 1][0], end, client)
    else:
        starts.insert(i, start)
        regions.insert(i, (start, end, client))


def test_sigma0_books_find_free_and_take() -> None:
    """`Ownership.find_free` against a brute-force search, and `take` against its first
    version, on a seeded mix of takes by two clients (merged, separate, overlapping)."""
    rng = random.Random(7)
    size = 64 * PAGE
    own, ref = Ownership(size), Ownership(size)
    for _ in range(400):
        for order in (12, 13, 14, 16):
            step = 1 << order
            want = next((c for c in range(size - step, -1, -step)
                         if not own.owner_of(c, c + step)), None)
            assert own.find_free(order) == want
        order = rng.choice((12, 12, 12, 13))
        free = own.find_free(order)
        start = rng.randrange(0, size >> order) << order
        if free is not None and rng.random() < 0.5:
            start = free  # as sigma0 hands out pages: from the top down
        client = rng.choice((1, 2))
        own.take(start, start + (1 << order), client)
        _reference_take(ref, start, start + (1 << order), client)
        assert (own.starts, own.regions) == (ref.starts, ref.regions)
        # find_free's search starts below owned_above: all above it is someone's
        above = own.owned_above
        assert all(own.owner_of(p, p + PAGE) for p in range(above, size, PAGE))
    assert own.owned_above < size
    # Pages handed out from the top down: the search starts right below the last one.
    top = Ownership(size)
    for n in range(1, 11):
        page = top.find_free(12)
        assert page == size - n * PAGE
        top.take(page, page + PAGE, 1)
        assert top.owned_above == page


@pytest.mark.parametrize("check", [False, True])
def test_store_of_a_memoryview_writes_its_bytes_whatever_its_items(check: bool) -> None:
    """A memoryview of 4-byte items stores all its bytes (not one per item), and a
    strided one stores the bytes it shows, in one page and across two."""
    from array import array

    k = Kernel(check=check)
    wide = memoryview(array("I", [0x04030201, 0x08070605]))
    strided = memoryview(b"a-b-c-d-e-")[::2]

    async def body(t: Any) -> list[bytes]:
        seen = []
        for addr in (0x10000 + 16, 0x11000 - 3):
            await t.store(addr, wide)
            seen.append(await t.load(addr, 8))
            await t.store(addr + 0x4000, strided)
            seen.append(await t.load(addr + 0x4000, 5))
        return seen

    th = k.new_task("T").new_thread(body, name="T")
    k.run()
    assert th.result == [wide.tobytes(), b"abcde"] * 2
