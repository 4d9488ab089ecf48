"""Scheduling and IPC (lecture: "IPC and Scheduling"; SPEC S2 run(), S7).

Fixed priorities, round robin with a timeslice, preemption inside compute at exactly the
simulated time of the event, the direct switch to the partner after a rendezvous,
non-blocking sends, priority inheritance, and how a run ends.
"""

from __future__ import annotations

import pytest

from helpers import ipc_cost, make_kernel, switch_cost, trace, when
from l4sim import IpcError, Timeout

OK = IpcError.OK


# --- priorities and round robin ------------------------------------------------------------

def test_higher_priority_runs_first():
    k = make_kernel()
    order = []

    async def body(t, name):
        order.append(name)

    task = k.new_task("t")
    for name, prio in (("low", 10), ("mid", 100), ("high", 200), ("mid2", 100)):
        task.new_thread(body, name, name=name, priority=prio)
    assert k.run().reason == "done"
    assert order == ["high", "mid", "mid2", "low"]


def test_equal_priority_threads_start_in_creation_order():
    k = make_kernel()
    order = []

    async def body(t, i):
        order.append(i)

    task = k.new_task("t")
    for i in range(5):
        task.new_thread(body, i, name=f"t{i}")
    k.run()
    assert order == [0, 1, 2, 3, 4]


def test_round_robin_with_timeslice_exact_interleaving():
    """Two computing threads of one priority share the CPU in timeslices of 1000 cycles:
    at each expiry the timer tick is charged, then the running one goes to the back with a
    fresh slice."""
    k = make_kernel(timeslice=1_000)
    done = {}

    async def worker(t, name):
        await t.compute(2_500)
        done[name] = t.now

    task = k.new_task("t")
    task.new_thread(worker, "A", name="A")
    task.new_thread(worker, "B", name="B")
    assert k.run().reason == "done"
    sw, tick = switch_cost(k, same_space=True), k.costs.timer_tick
    # one round: a slice of 1000, the timer tick that ends it, the switch
    # (with tick = 500: A 0..1000 | B 1560..2560 | A 3120..4120 | B 4680..5680 | A 6240..6740
    # | B 6800..7300)
    p = 1_000 + tick + sw
    assert trace(k, "timeslice") == [
        (1_000 + tick, "A", "timeslice", "expired"),
        (p + 1_000 + tick, "B", "timeslice", "expired"),
        (2 * p + 1_000 + tick, "A", "timeslice", "expired"),
        (3 * p + 1_000 + tick, "B", "timeslice", "expired"),
    ]
    assert [(e[0], e[1]) for e in trace(k, "switch")] == [
        (1 * p, "B"), (2 * p, "A"), (3 * p, "B"),
        (4 * p, "A"), (4 * p + 500 + sw, "B"),
    ]
    assert done == {"A": 4 * p + 500, "B": 4 * p + 500 + sw + 500}


def test_round_robin_three_threads():
    k = make_kernel(timeslice=10_000)
    order = []

    async def worker(t, name):
        for _ in range(2):
            await t.compute(10_000)
            order.append(name)

    task = k.new_task("t")
    for name in "XYZ":
        task.new_thread(worker, name, name=name)
    k.run()
    # each compute of exactly one slice ends at a slice end: the work is done before the
    # thread reaches the preemption point, then it goes to the back
    assert "".join(order) == "XYZXYZ"


def test_blocking_keeps_the_remainder_of_the_timeslice():
    """S7: blocking keeps the remainder of the timeslice. A uses 6000 cycles of its 10000,
    blocks briefly; when it runs again, its slice ends after the remainder, not after a
    fresh 10000. (A's wake-up tick falls inside B's slice; each slice end costs a tick.)"""
    k = make_kernel(timeslice=10_000)

    async def a(t):
        await t.compute(6_000)
        await t.sleep(Timeout.cycles(1))
        await t.compute(10_000)

    async def b(t):
        await t.compute(20_000)

    task = k.new_task("t")
    task.new_thread(a, name="A")
    task.new_thread(b, name="B")
    k.run()
    sw, c, tick = switch_cost(k, True), ipc_cost(k), k.costs.timer_tick
    remainder = 10_000 - 6_000 - c                   # kernel time counts against the slice
    b_start = 6_000 + c + sw
    a_again = b_start + 10_000 + tick + sw           # B used its whole slice meanwhile
    assert trace(k, "timeslice")[:2] == [
        (b_start + 10_000 + tick, "B", "timeslice", "expired"),
        (a_again + remainder + tick, "A", "timeslice", "expired"),
    ]


def test_timeslice_only_among_equal_priorities():
    """A lower-priority thread never gets a slice while a higher one computes. The timer
    tick still ends every slice (the thread keeps the CPU with a fresh one)."""
    k = make_kernel(timeslice=1_000)
    order = []

    async def worker(t, name, n):
        await t.compute(n)
        order.append((name, t.now))

    task = k.new_task("t")
    task.new_thread(worker, "low", 1_000, name="low", priority=10)
    task.new_thread(worker, "high", 5_500, name="high", priority=20)
    k.run()
    tick = k.costs.timer_tick
    high_done = 5_500 + 5 * tick                        # five slice ends inside its work
    # low's work fills its slice exactly: the tick that ends it comes before it returns
    assert order == [("high", high_done), ("low", high_done + switch_cost(k, True) + 1_000 + tick)]
    assert trace(k, "timeslice") == []                  # nobody of its priority to yield to


# --- preemption inside compute -------------------------------------------------------------

def test_timer_preempts_compute_at_the_exact_wake_time():
    """A high-priority thread waking from sleep preempts a computing low one at exactly its
    wake time (plus the timer tick and the switch); the low one then finishes the rest of
    its work."""
    k = make_kernel()
    log = []

    async def low(t):
        await t.compute(100_000)
        log.append(("low done", t.now))

    async def high(t):
        await t.sleep(Timeout.cycles(5_000))
        log.append(("high woke", t.now))

    task = k.new_task("t")
    task.new_thread(low, name="low", priority=10)
    task.new_thread(high, name="high", priority=200)
    assert k.run().reason == "done"
    sw, c, tick = switch_cost(k, True), ipc_cost(k), k.costs.timer_tick
    wake = c + 5_000
    assert when(k, "high", "timeout") == wake
    assert log == [("high woke", wake + tick + sw),
                   ("low done", c + sw + 100_000 + tick + sw + sw)]   # three switches, no lost work


def test_preempted_thread_stays_at_the_front_of_its_priority():
    """S7: a thread preempted by a higher priority stays at the front of its own priority
    (it is not sent behind an equal one)."""
    k = make_kernel()
    order = []

    async def worker(t, name):
        await t.compute(50_000)
        order.append(name)

    async def high(t):
        await t.sleep(Timeout.cycles(10_000))
        order.append("high")

    task = k.new_task("t")
    task.new_thread(worker, "L1", name="L1", priority=10)
    task.new_thread(worker, "L2", name="L2", priority=10)
    task.new_thread(high, name="high", priority=200)
    k.run()
    assert order == ["high", "L1", "L2"]


def test_host_event_preempts_compute_at_its_time():
    """k.at(): a host callback runs at exactly its simulated time inside a computation."""
    k = make_kernel()
    seen = []

    async def worker(t):
        await t.compute(100_000)

    task = k.new_task("t")
    task.new_thread(worker, name="w")
    k.at(12_345, lambda: seen.append(k.now))
    k.run()
    assert seen == [12_345]


# --- IPC and scheduling ---------------------------------------------------------------------

def _call_setup(k, *, server_prio=100, client_prio=100, other_prio=100, reply_and_wait=False):
    order = []
    sel = {}

    async def server(t):
        await t.wait()
        order.append("srv got")
        if reply_and_wait:
            await t.reply_and_wait(words=[1])
        else:
            await t.reply(words=[1])
            order.append("srv after reply")
            await t.wait()

    async def client(t):
        await t.call(sel["srv"])
        order.append("cli got reply")

    async def other(t):
        order.append("other")

    st = k.new_task("s")
    ct = k.new_task("c")
    srv = st.new_thread(server, name="srv", priority=server_prio)
    ct.new_thread(client, name="cli", priority=client_prio)
    ct.new_thread(other, name="other", priority=other_prio)   # ready behind the client
    sel["srv"] = ct.add_cap(srv)
    return order


def test_direct_switch_to_the_receiver_after_call():
    """The caller blocks: the server it woke runs next, ahead of a ready thread of the same
    priority that has waited longer (no pass through the ready queue)."""
    k = make_kernel()
    order = _call_setup(k)
    assert k.run().reason == "done"
    assert order[:1] == ["srv got"]
    assert trace(k, "switch")[1][1:] == ("srv", "switch", "from cli")


def test_reply_does_not_block_the_server_keeps_running():
    """reply does not block: the server goes on; the woken client joins the back of its
    priority, behind the thread that was already ready."""
    k = make_kernel()
    order = _call_setup(k)
    k.run()
    assert order == ["srv got", "srv after reply", "other", "cli got reply"]


def test_reply_and_wait_switches_directly_to_the_client():
    """reply_and_wait blocks the server: the client it woke runs next, ahead of the thread
    of equal priority that was ready before."""
    k = make_kernel()
    order = _call_setup(k, reply_and_wait=True)
    k.run()
    assert order == ["srv got", "cli got reply", "other"]


def test_no_direct_switch_past_a_strictly_higher_ready_thread():
    """Without priority inheritance, a low server woken by a call does not run before a
    ready thread of strictly higher priority."""
    k = make_kernel(priority_inheritance=False)
    order = _call_setup(k, server_prio=50, client_prio=100, other_prio=100)
    k.run()
    # the reply makes the strictly higher client ready: it preempts the server at once
    assert order == ["other", "srv got", "cli got reply", "srv after reply"]


def _send_setup(k, receiver_prio):
    order = []

    async def receiver(t):
        await t.wait()
        order.append("receiver")

    async def sender(t, dest):
        await t.send(dest, words=[1])
        order.append("sender")

    rt = k.new_task("r")
    rcv = rt.new_thread(receiver, name="rcv", priority=receiver_prio)
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(rcv), name="snd", priority=100)
    return order


def test_send_does_not_block_equal_priority_receiver_waits():
    k = make_kernel()
    order = _send_setup(k, receiver_prio=100)
    k.run()
    assert order == ["sender", "receiver"]


def test_send_does_not_block_higher_priority_receiver_preempts():
    k = make_kernel()
    order = _send_setup(k, receiver_prio=150)
    k.run()
    assert order == ["receiver", "sender"]


def test_send_does_not_block_lower_priority_receiver_waits():
    k = make_kernel()
    order = _send_setup(k, receiver_prio=50)
    k.run()
    assert order == ["sender", "receiver"]


def test_woken_receiver_joins_the_back_of_its_priority():
    """After a non-blocking send the woken receiver queues behind a thread of its priority
    that was ready before."""
    k = make_kernel()
    order = []

    async def receiver(t):
        await t.wait()
        order.append("receiver")

    async def sender(t, dest):
        await t.send(dest, words=[1])
        order.append("sender")
        await t.sleep(Timeout.cycles(1))       # block: let the others run

    async def other(t):
        order.append("other")

    rt = k.new_task("r")
    rcv = rt.new_thread(receiver, name="rcv")
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(rcv), name="snd")
    st.new_thread(other, name="other")
    k.run()
    assert order == ["sender", "other", "receiver"]


# --- priority inheritance --------------------------------------------------------------------

def _pi_scenario(k, *, server_waits_first: bool):
    prios = []
    th = {}

    async def server(t):
        await t.wait()
        prios.append(("working", th["srv"].prio))
        await t.reply(words=[1])
        prios.append(("replied", th["srv"].prio))

    async def client(t, dest):
        if server_waits_first:
            await t.sleep(Timeout.cycles(1_000))
        await t.call(dest)
        prios.append(("client", th["srv"].prio))

    st = k.new_task("s")
    th["srv"] = srv = st.new_thread(server, name="srv", priority=10)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli", priority=200)
    assert k.run().reason == "done"
    return prios, srv


def test_priority_inheritance_low_server_runs_at_client_priority_call_queued():
    """The high client calls before the low server waits: the queued call boosts the
    server; the boost ends with the reply."""
    prios, srv = _pi_scenario(make_kernel(), server_waits_first=False)
    # the client preempts at once when the reply makes it ready (it is strictly higher)
    assert prios == [("working", 200), ("client", 10), ("replied", 10)]
    assert srv.prio == srv.priority == 10


def test_priority_inheritance_low_server_runs_at_client_priority_server_waiting():
    """The low server already waits when the high client calls: the call is delivered at
    once and the server works at the client's priority until it replies."""
    prios, srv = _pi_scenario(make_kernel(), server_waits_first=True)
    assert prios == [("working", 200), ("client", 10), ("replied", 10)]
    assert srv.prio == srv.priority == 10


def test_priority_inheritance_off_no_boost():
    k = make_kernel(priority_inheritance=False)
    prios = []
    th = {}

    async def server(t):
        await t.wait()
        prios.append(th["srv"].prio)
        await t.reply()

    async def client(t, dest):
        await t.call(dest)

    st = k.new_task("s")
    th["srv"] = srv = st.new_thread(server, name="srv", priority=10)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli", priority=200)
    k.run()
    assert prios == [10]


@pytest.mark.parametrize("servers_wait_first", [False, True], ids=["calls-queued", "servers-waiting"])
def test_priority_inheritance_passes_along_a_chain_of_calls(servers_wait_first):
    """H (200) calls M (50), which calls L (10) while working for H: L runs at 200 too; the
    boost of each server ends with its own reply. Both when the calls queue (the high
    threads run first) and when the servers already wait (the calls are delivered at once)."""
    k = make_kernel()
    log = []
    th = {}

    def p():
        return th["M"].prio, th["L"].prio

    async def low(t):
        await t.wait()
        log.append(("L working", p()))
        await t.reply()

    async def mid(t, to_low):
        if servers_wait_first:
            await t.sleep(Timeout.cycles(5_000))     # L waits by then
        await t.wait()
        log.append(("M working", p()))
        await t.call(to_low)
        log.append(("M got L's reply", p()))
        await t.reply()
        log.append(("M replied", p()))

    async def high(t, to_mid):
        if servers_wait_first:
            await t.sleep(Timeout.cycles(10_000))
        await t.call(to_mid)
        log.append(("H got reply", p()))

    tl, tm, tk = k.new_task("l"), k.new_task("m"), k.new_task("h")
    th["L"] = lo = tl.new_thread(low, name="L", priority=10)
    th["M"] = mi = tm.new_thread(mid, tm.add_cap(lo), name="M", priority=50)
    tk.new_thread(high, tk.add_cap(mi), name="H", priority=200)
    assert k.run().reason == "done"
    assert log == [
        ("M working", (200, 10)),
        ("L working", (200, 200)),
        ("M got L's reply", (200, 10)),
        ("H got reply", (50, 10)),
        ("M replied", (50, 10)),
    ]


def test_priority_inheritance_to_a_busy_server_through_its_sender_queue():
    """A high client's call queued at a busy low server lends its priority: the server is
    needed to reach it, so it outruns a medium thread."""
    k = make_kernel()
    log = []
    th = {}

    async def server(t):
        await t.compute(20_000)                    # busy when the call arrives
        log.append(("server prio while busy", th["srv"].prio))
        await t.wait()
        await t.reply()

    async def medium(t):
        await t.sleep(Timeout.cycles(1_000))
        await t.compute(1_000_000)
        log.append(("medium done", t.now))

    async def client(t, dest):
        await t.sleep(Timeout.cycles(5_000))
        await t.call(dest)
        log.append(("client got reply", t.now))

    st = k.new_task("s")
    th["srv"] = srv = st.new_thread(server, name="srv", priority=10)
    k.new_task("m").new_thread(medium, name="med", priority=100)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli", priority=200)
    k.run()
    assert [e[0] for e in log] == ["server prio while busy", "client got reply", "medium done"]
    assert log[0][1] == 200
    assert log[1][1] < 30_000


def _inversion(pi: bool) -> tuple[int, int]:
    """The lecture's inversion scenario: low server, medium hog, high client. Returns the
    client's call latency and the hog's end time."""
    k = make_kernel(priority_inheritance=pi)
    out = {}

    async def server(t):
        await t.wait()
        await t.compute(10_000)
        await t.reply()

    async def hog(t):
        await t.sleep(Timeout.cycles(1_000))
        await t.compute(1_000_000)
        out["hog"] = t.now

    async def client(t, dest):
        await t.sleep(Timeout.cycles(2_000))
        t0 = t.now
        await t.call(dest)
        out["latency"] = t.now - t0

    st = k.new_task("s")
    srv = st.new_thread(server, name="srv", priority=10)
    k.new_task("m").new_thread(hog, name="hog", priority=100)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli", priority=200)
    assert k.run().reason == "done"
    return out["latency"], out["hog"]


def test_priority_inversion_bounded_with_inheritance():
    latency, hog_end = _inversion(pi=True)
    k = make_kernel()
    sw = switch_cost(k, same_space=False)
    # call, switch to the boosted server, its 10000 cycles, reply, switch back
    assert latency == ipc_cost(k) + sw + 10_000 + ipc_cost(k) + sw
    assert hog_end > 1_000_000


def test_priority_inversion_without_inheritance():
    latency, _ = _inversion(pi=False)
    assert latency > 1_000_000                         # the client waited for the hog


def test_cancel_ends_the_inherited_priority():
    k = make_kernel()
    log = []
    th = {}
    sel = {}

    async def server(t):
        await t.wait()
        log.append(("boosted", th["srv"].prio))
        await t.compute(50_000)
        log.append(("after cancel", th["srv"].prio))

    async def client(t):
        r = await t.call(sel["srv"])
        log.append(("client", r.error))

    async def canceller(t):
        await t.sleep(Timeout.cycles(10_000))
        await t.ex_regs(sel["cli"], cancel=True)

    st = k.new_task("s")
    th["srv"] = srv = st.new_thread(server, name="srv", priority=10)
    ct = k.new_task("c")
    cli = ct.new_thread(client, name="cli", priority=200)
    ct.new_thread(canceller, name="canc", priority=250)
    sel["srv"], sel["cli"] = ct.add_cap(srv), ct.add_cap(cli)
    k.run()
    assert log == [("boosted", 200), ("client", IpcError.RECANCELED), ("after cancel", 10)]


def test_send_timeout_of_a_queued_caller_ends_the_boost():
    k = make_kernel()
    log = []
    th = {}

    async def server(t):
        await t.compute(5_000)
        log.append(("busy", th["srv"].prio))
        await t.compute(20_000)
        log.append(("after the timeout", th["srv"].prio))

    async def client(t, dest):
        await t.sleep(Timeout.cycles(1_000))
        r = await t.call(dest, send_timeout=Timeout.cycles(8_000))
        log.append(("client", r.error))

    st = k.new_task("s")
    th["srv"] = srv = st.new_thread(server, name="srv", priority=10)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli", priority=200)
    k.run()
    assert log == [("busy", 200), ("client", IpcError.SETIMEOUT), ("after the timeout", 10)]


def test_receive_timeout_of_the_caller_ends_the_boost():
    k = make_kernel()
    log = []
    th = {}

    async def server(t):
        await t.wait()
        log.append(("working", th["srv"].prio))
        await t.compute(20_000)
        log.append(("after the timeout", th["srv"].prio))
        log.append(("reply", (await t.reply()).error))

    async def client(t, dest):
        await t.sleep(Timeout.cycles(1_000))
        r = await t.call(dest, receive_timeout=Timeout.cycles(8_000))
        log.append(("client", r.error))

    st = k.new_task("s")
    th["srv"] = srv = st.new_thread(server, name="srv", priority=10)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli", priority=200)
    k.run()
    assert log == [("working", 200), ("client", IpcError.RETIMEOUT), ("after the timeout", 10),
                   ("reply", IpcError.ENOT_EXISTENT)]


# --- how a run ends -------------------------------------------------------------------------

def test_run_done_when_all_returned():
    k = make_kernel()

    async def body(t):
        return 7

    th = k.new_task("t").new_thread(body, name="a")
    res = k.run()
    assert (res.reason, res.blocked, res.died, th.result) == ("done", [], [], 7)


def test_run_done_when_idle_in_open_wait_or_endless_sleep():
    k = make_kernel()

    async def waiter(t):
        await t.wait()

    async def sleeper(t):
        await t.sleep(Timeout.never())

    task = k.new_task("t")
    w = task.new_thread(waiter, name="w")
    z = task.new_thread(sleeper, name="z")
    res = k.run()
    assert res.reason == "done"
    assert res.blocked == [w, z]


def test_run_deadlock_two_threads_calling_each_other():
    k = make_kernel()
    sel = {}

    async def a(t):
        await t.call(sel["b"])

    async def b(t):
        await t.call(sel["a"])

    task = k.new_task("t")
    ta = task.new_thread(a, name="a")
    tb = task.new_thread(b, name="b")
    sel["a"], sel["b"] = task.add_cap(ta), task.add_cap(tb)
    res = k.run()
    assert res.reason == "deadlock"
    assert res.blocked == [ta, tb]
    assert (ta.state_name, tb.state_name) == ("send_wait", "send_wait")


def test_run_deadlock_closed_receive_from_a_thread_that_never_sends():
    k = make_kernel()
    sel = {}

    async def receiver(t):
        await t.receive(sel["mute"])

    async def mute(t):
        await t.wait()

    task = k.new_task("t")
    r = task.new_thread(receiver, name="r")
    m = task.new_thread(mute, name="mute")
    sel["mute"] = task.add_cap(m)
    res = k.run()
    assert res.reason == "deadlock"
    assert res.blocked == [r, m]


def test_run_deadlock_thread_calling_itself():
    k = make_kernel()

    async def me(t):
        await t.call(t.self_sel, words=[1])

    th = k.new_task("t").new_thread(me, name="me")
    res = k.run()
    assert res.reason == "deadlock"
    assert res.blocked == [th]


def test_run_deadlock_reply_never_comes():
    """A caller waiting for a reply from a server that went back to an open wait."""
    k = make_kernel()

    async def server(t):
        await t.wait()
        await t.wait()

    async def client(t, dest):
        await t.call(dest)

    task = k.new_task("t")
    s = task.new_thread(server, name="s")
    c = task.new_thread(client, task.add_cap(s), name="c")
    res = k.run()
    assert res.reason == "deadlock"
    assert res.blocked == [s, c]


def test_run_until_and_continue():
    k = make_kernel()
    log = []

    async def body(t):
        for _ in range(3):
            await t.sleep(Timeout.cycles(40_000))
            log.append(t.now)

    k.new_task("t").new_thread(body, name="z")
    res = k.run(until=50_000)
    assert (res.reason, res.now, k.now) == ("until", 50_000, 50_000)
    assert len(res.blocked) == 1
    c = ipc_cost(k)
    r = c + 40_000 + k.costs.timer_tick               # one round: the sleep and its wake-up tick
    assert log == [r]
    res = k.run(until=100_000)
    assert (res.reason, k.now) == ("until", 100_000)
    res = k.run()
    assert res.reason == "done"
    assert log == [r, 2 * r, 3 * r]                   # as if never stopped


def _two_sleepers():
    k = make_kernel()
    log = []

    async def a(t):
        await t.sleep(Timeout.cycles(10_000))
        log.append(("a", t.now))

    async def b(t):
        await t.sleep(Timeout.cycles(3_000))
        log.append(("b", t.now))

    task = k.new_task("t")
    task.new_thread(a, name="a")
    task.new_thread(b, name="b")
    return k, log


def test_run_until_during_a_computation_then_continue_is_the_same_run():
    def scenario():
        k = make_kernel(timeslice=3_000)
        log = []

        async def worker(t, name):
            await t.compute(10_000)
            log.append((name, t.now))

        task = k.new_task("t")
        for name in "AB":
            task.new_thread(worker, name, name=name)
        return k, log

    k_ref, log_ref = scenario()
    k_ref.run()
    k, log = scenario()
    for stop in (1_500, 4_000, 9_999, 15_000):
        assert k.run(until=stop).reason == "until"
    assert k.run().reason == "done"
    assert log == log_ref
    assert _events(k) == _events(k_ref)


def _events(k):
    return [(e.time, e.thread, e.event, e.detail) for e in k.events]


def test_run_until_while_idle_then_continue_is_the_same_run():
    """Stopping a run at a simulated time and continuing it must not change the
    simulation: the same times, the same trace as an uninterrupted run."""
    k_ref, log_ref = _two_sleepers()
    assert k_ref.run().reason == "done"
    k, log = _two_sleepers()
    assert k.run(until=5_000).reason == "until"       # both threads blocked: the CPU idles
    assert k.run().reason == "done"
    assert log == log_ref
    assert _events(k) == _events(k_ref)


def test_run_until_after_everything_ended_is_done():
    """S2: the run ends when no thread can run again, or at `until`, whichever comes first:
    with every thread finished before `until`, the reason is "done"."""
    k_ref, log_ref = _two_sleepers()
    ref = k_ref.run()
    k, log = _two_sleepers()
    res = k.run(until=1_000_000)
    assert res.reason == "done"
    assert log == log_ref
    assert res.now == ref.now


def test_run_max_steps_and_continue():
    """max_steps bounds the kernel entries; the run can be continued and ends exactly as an
    uninterrupted one."""
    def scenario():
        k = make_kernel()
        log = []

        async def ping(t, dest):
            for i in range(5):
                r = await t.call(dest, words=[i])
                log.append(r.words)

        async def pong(t):
            r = await t.wait()
            while True:
                r = await t.reply_and_wait(words=[r.words[0] * 10])

        task = k.new_task("t")
        s = task.new_thread(pong, name="pong")
        task.new_thread(ping, task.add_cap(s), name="ping")
        return k, log

    k_ref, log_ref = scenario()
    ref = k_ref.run()
    assert ref.reason == "done"

    k, log = scenario()
    reasons = []
    for _ in range(100):
        res = k.run(max_steps=2)
        reasons.append(res.reason)
        if res.reason != "steps":
            break
    assert reasons[0] == "steps" and reasons[-1] == "done"
    assert reasons.count("steps") == len(reasons) - 1 >= 5
    assert log == log_ref == [(0,), (10,), (20,), (30,), (40,)]
    assert k.now == k_ref.now
    assert [(e.time, e.thread, e.event, e.detail) for e in k.events] == \
        [(e.time, e.thread, e.event, e.detail) for e in k_ref.events]


def test_run_steps_reason_and_blocked():
    k = make_kernel()

    async def body(t):
        while True:
            await t.sleep(Timeout.cycles(100))

    z = k.new_task("t").new_thread(body, name="z")
    res = k.run(max_steps=10)
    assert (res.reason, res.steps) == ("steps", 10)
    t0 = k.now
    res = k.run(until=t0 + 1_000)
    assert (res.reason, res.now) == ("until", t0 + 1_000)
    assert z.alive
