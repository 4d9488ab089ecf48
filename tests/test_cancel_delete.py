"""Cancel and delete (lecture: "IPC Termination": partner canceled by another thread
before rendezvous, partner killed; SPEC S5 reply capability, S14; FIASCO_FACTS: cancel
sets cancel|ready, senders queued at a dying receiver end SECANCELED, a reply without a
reply capability is ENOT_EXISTENT).
"""

from __future__ import annotations

from helpers import caps_naming, make_kernel, states, timeouts
from l4sim import CapRights, IpcError, Kernel, Timeout

OK = IpcError.OK
ENOT_EXISTENT = IpcError.ENOT_EXISTENT
SECANCELED = IpcError.SECANCELED
RECANCELED = IpcError.RECANCELED
RETIMEOUT = IpcError.RETIMEOUT
SETIMEOUT = IpcError.SETIMEOUT

LONG = Timeout.cycles(1_000_000)


def _canceller(sel: dict, key: str, log: list, delay: int = 5_000):
    async def body(t):
        await t.sleep(Timeout.cycles(delay))
        log.append(("ex_regs", await t.ex_regs(sel[key], cancel=True), t.now))
    return body


# --- cancel before rendezvous -----------------------------------------------------------------

def test_cancel_blocked_sender():
    """A sender queued at a receiver that does not receive: cancelled, it ends SECANCELED
    and leaves the sender queue."""
    k = make_kernel()
    log = []
    sel = {}

    async def receiver(t):
        await t.sleep(LONG)
        log.append(("rcv", (await t.wait(receive_timeout=Timeout.zero())).error))

    async def sender(t, dest):
        log.append(("snd", (await t.send(dest, words=[1])).error, t.now))

    task = k.new_task("t")
    rcv = task.new_thread(receiver, name="rcv")
    snd = task.new_thread(sender, task.add_cap(rcv), name="snd")
    task.new_thread(_canceller(sel, "snd", log), name="canc")
    sel["snd"] = task.add_cap(snd)
    assert k.run().reason == "done"
    assert [e[:2] for e in log] == [("ex_regs", OK), ("snd", SECANCELED), ("rcv", RETIMEOUT)]
    assert states(k, "snd")[1:] == [("snd", "send_wait"), ("snd", "canceled"), ("snd", "ready"),
                                    ("snd", "dead")]


def test_cancel_blocked_receiver_open_wait():
    k = make_kernel()
    log = []
    sel = {}

    async def receiver(t):
        log.append(("rcv", (await t.wait()).error))

    task = k.new_task("t")
    rcv = task.new_thread(receiver, name="rcv")
    task.new_thread(_canceller(sel, "rcv", log), name="canc")
    sel["rcv"] = task.add_cap(rcv)
    assert k.run().reason == "done"
    assert [e[:2] for e in log] == [("ex_regs", OK), ("rcv", RECANCELED)]
    assert states(k, "rcv")[1:] == [("rcv", "receive_wait"), ("rcv", "canceled"), ("rcv", "ready"),
                                    ("rcv", "dead")]


def test_cancel_blocked_receiver_closed_wait():
    k = make_kernel()
    log = []
    sel = {}

    async def receiver(t):
        log.append(("rcv", (await t.receive(sel["other"])).error))

    async def other(t):
        await t.wait()

    task = k.new_task("t")
    rcv = task.new_thread(receiver, name="rcv")
    oth = task.new_thread(other, name="other")
    task.new_thread(_canceller(sel, "rcv", log), name="canc")
    sel["rcv"], sel["other"] = task.add_cap(rcv), task.add_cap(oth)
    assert k.run().reason == "done"
    assert [e[:2] for e in log] == [("ex_regs", OK), ("rcv", RECANCELED)]


def test_cancel_sleeping_thread():
    """A sleep is a receive from nobody: cancelled it ends RECANCELED, and its timeout
    never fires afterwards."""
    k = make_kernel()
    log = []
    sel = {}

    async def sleeper(t):
        r = await t.sleep(Timeout.cycles(50_000))
        log.append(("slept", r.error, t.now))
        r = await t.sleep(Timeout.never())
        log.append(("slept forever", r.error))

    task = k.new_task("t")
    z = task.new_thread(sleeper, name="z")
    sel["z"] = task.add_cap(z)

    async def canceller(t):
        await t.sleep(Timeout.cycles(5_000))
        log.append(("cancel 1", await t.ex_regs(sel["z"], cancel=True)))
        await t.sleep(Timeout.cycles(100_000))
        log.append(("cancel 2", await t.ex_regs(sel["z"], cancel=True)))

    task.new_thread(canceller, name="canc")
    assert k.run().reason == "done"
    assert [e[:2] for e in log] == [("cancel 1", OK), ("slept", RECANCELED),
                                    ("cancel 2", OK), ("slept forever", RECANCELED)]
    assert [who for _, who in timeouts(k)] == ["canc", "canc"]   # z's 50_000 never fired


def test_cancel_caller_waiting_for_its_reply():
    """Cancel after the call was delivered, before the reply: the caller ends RECANCELED,
    its reply capability is gone (the server's late reply fails), and the late reply does
    not reach the caller's next call, which gets its own answer."""
    k = make_kernel()
    log = []
    sel = {}

    async def server(t):
        r = await t.wait()
        log.append(("srv got", r.words))
        await t.sleep(Timeout.cycles(20_000))          # the caller is cancelled meanwhile
        log.append(("late reply", (await t.reply(words=[100])).error))
        r = await t.wait()
        log.append(("srv got", r.words))
        log.append(("reply", (await t.reply(words=[200])).error))

    async def client(t):
        r = await t.call(sel["srv"], words=[1])
        log.append(("cli", r.error, r.words))
        r = await t.call(sel["srv"], words=[2])
        log.append(("cli", r.error, r.words))

    st = k.new_task("s")
    ct = k.new_task("c")
    srv = st.new_thread(server, name="srv")
    cli = ct.new_thread(client, name="cli")
    ct.new_thread(_canceller(sel, "cli", log), name="canc")
    sel["srv"], sel["cli"] = ct.add_cap(srv), ct.add_cap(cli)
    assert k.run().reason == "done"
    assert [e[:3] if e[0] != "ex_regs" else e[:2] for e in log] == [
        ("srv got", (1,)),
        ("ex_regs", OK),
        ("cli", RECANCELED, ()),
        ("late reply", ENOT_EXISTENT),
        ("srv got", (2,)),
        ("reply", OK),
        ("cli", OK, (200,)),
    ]


def test_ex_regs_bad_selector():
    """ex_regs on anything that is not a thread this task may invoke: ENOT_EXISTENT."""
    k = make_kernel()
    log = []

    async def victim(t):
        await t.sleep(Timeout.cycles(10_000))

    async def body(t, sels):
        for what, s in sels:
            log.append((what, await t.ex_regs(s, cancel=True)))

    task = k.new_task("t")
    v = task.new_thread(victim, name="v")
    gate = k.new_gate(v, label=1)
    other = k.new_task("other")
    sels = [("empty", 0), ("out of range", 999), ("negative", -1),
            ("no R", task.add_cap(v, CapRights.ALL & ~CapRights.R)),
            ("gate", task.add_cap(gate)), ("task", task.add_cap(other))]
    task.new_thread(body, sels, name="b")
    assert k.run().reason == "done"
    assert log == [(what, ENOT_EXISTENT) for what, _ in sels]
    assert [who for _, who in timeouts(k)] == ["v"]      # the victim's sleep was not cut


def test_ex_regs_on_thread_not_in_ipc_has_no_effect():
    """A thread that is computing is not in an IPC: ex_regs cancel returns OK, the thread
    finishes its work at the same time, and its next IPC is not cancelled."""
    def run(with_cancel: bool):
        k = make_kernel()
        log = []
        sel = {}

        async def worker(t):
            await t.compute(100_000)
            log.append(("computed", t.now))
            r = await t.sleep(Timeout.cycles(1_000))
            log.append(("slept", r.error, t.now))

        async def canceller(t):
            await t.sleep(Timeout.cycles(5_000))
            if with_cancel:
                log.append(("ex_regs", await t.ex_regs(sel["w"], cancel=True)))
            else:
                await t.sleep(Timeout.zero())    # the same kernel time, without ex_regs

        task = k.new_task("t")
        w = task.new_thread(worker, name="w", priority=10)
        task.new_thread(canceller, name="canc", priority=20)
        sel["w"] = task.add_cap(w)
        assert k.run().reason == "done"
        return log, k

    with_c, k1 = run(True)
    without, _ = run(False)
    assert with_c[0] == ("ex_regs", OK)
    assert with_c[1][0] == "computed" and with_c[2][:2] == ("slept", RETIMEOUT)
    assert [e[0] for e in without] == ["computed", "slept"]
    # no effect: the worker's timeline shifts only by the ex_regs kernel entry's cost
    shift = k1.costs.kernel_op - k1.costs.ipc_cost(0)
    assert with_c[1][1] - without[0][1] == shift
    assert with_c[2][2] - without[1][2] == shift
    assert "canceled" not in [s for _, s in states(k1, "w")]


# --- delete --------------------------------------------------------------------------------------

def test_delete_receiver_with_queued_senders():
    """Deleting a receiver ends every sender queued at it SECANCELED (FIASCO_FACTS); no
    capability to it remains; the run reports it deleted."""
    k = make_kernel()
    log = []
    sel = {}

    async def receiver(t):
        await t.sleep(LONG)
        log.append("receiver ran on")                      # never: it is deleted first

    async def sender(t, dest, i):
        log.append((f"s{i}", (await t.send(dest, words=[i])).error))

    async def deleter(t):
        await t.sleep(Timeout.cycles(20_000))
        log.append(("delete", await t.delete(sel["rcv"])))

    rt = k.new_task("r")
    rcv = rt.new_thread(receiver, name="rcv")
    st = k.new_task("s")
    for i, prio in enumerate((100, 120, 90)):
        st.new_thread(sender, st.add_cap(rcv), i, name=f"s{i}", priority=prio)
    dt = k.new_task("d")
    dt.new_thread(deleter, name="del", priority=50)
    sel["rcv"] = dt.add_cap(rcv)
    res = k.run()
    assert res.reason == "done"
    # each woken sender outranks the deleter and runs at once, highest first
    assert log == [("s1", SECANCELED), ("s0", SECANCELED), ("s2", SECANCELED), ("delete", OK)]
    assert caps_naming(k, rcv) == []
    assert not rcv.alive
    assert res.died == [(rcv, "deleted")]
    assert res.blocked == []


def test_delete_gate_with_blocked_clients():
    """Deleting a gate ends the senders blocked on it ENOT_EXISTENT; every capability to it
    is gone, so the old selector is now empty; the server is untouched."""
    k = make_kernel()
    log = []
    sel = {}

    async def server(t):
        await t.sleep(Timeout.cycles(50_000))
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append(("srv", r.error))

    async def client(t, i):
        r = await t.call(sel["gate"], words=[i])
        log.append((f"c{i}", r.error))
        r = await t.call(sel["gate"], words=[i])
        log.append((f"c{i} again", r.error))

    async def owner(t):
        await t.sleep(Timeout.cycles(10_000))
        log.append(("delete", await t.delete(sel["own"])))

    st = k.new_task("s")
    srv = st.new_thread(server, name="srv")
    gate = k.new_gate(srv, label=0x33)
    ct = k.new_task("c")
    ct.new_thread(client, 0, name="c0")
    ct.new_thread(client, 1, name="c1")
    sel["gate"] = ct.add_cap(gate)
    sel["own"] = st.add_cap(gate)
    st.new_thread(owner, name="owner")
    res = k.run()
    assert res.reason == "done"
    assert log == [("delete", OK), ("c0", ENOT_EXISTENT), ("c0 again", ENOT_EXISTENT),
                   ("c1", ENOT_EXISTENT), ("c1 again", ENOT_EXISTENT), ("srv", RETIMEOUT)]
    assert caps_naming(k, gate) == []
    assert not gate.alive
    assert res.died == []                                   # a gate is not a thread


def test_ipc_through_gate_of_deleted_thread():
    """S3: IPC through a gate whose thread was deleted fails with ENOT_EXISTENT."""
    k = make_kernel()
    log = []

    async def server(t):
        await t.wait()

    async def client(t, g):
        await t.sleep(Timeout.cycles(1_000))
        log.append((await t.send(g, words=[1])).error)
        log.append((await t.call(g, words=[1])).error)

    st = k.new_task("s")
    srv = st.new_thread(server, name="srv")
    gate = k.new_gate(srv, label=1)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(gate), name="cli")
    k.delete(srv)
    assert k.run().reason == "done"
    assert log == [ENOT_EXISTENT, ENOT_EXISTENT]


def test_delete_server_holding_reply_capability():
    """The server took the call and is deleted before replying: the caller ends
    ENOT_EXISTENT (its partner is gone)."""
    k = make_kernel()
    log = []
    sel = {}

    async def server(t):
        await t.wait()
        await t.sleep(LONG)

    async def client(t):
        r = await t.call(sel["srv"], words=[1])
        log.append(("cli", r.error, r.words))

    async def killer(t):
        await t.sleep(Timeout.cycles(10_000))
        log.append(("delete", await t.delete(sel["kill"])))

    st = k.new_task("s")
    srv = st.new_thread(server, name="srv")
    ct = k.new_task("c")
    ct.new_thread(client, name="cli")
    kt = k.new_task("k")
    kt.new_thread(killer, name="killer")
    sel["srv"], sel["kill"] = ct.add_cap(srv), kt.add_cap(srv)
    res = k.run()
    assert res.reason == "done"
    assert log == [("delete", OK), ("cli", ENOT_EXISTENT, ())]
    assert res.died == [(srv, "deleted")]
    assert caps_naming(k, srv) == []


def test_delete_partner_of_closed_receive():
    """A closed receive from a thread that is deleted ends ENOT_EXISTENT (partner dead)."""
    k = make_kernel()
    log = []
    sel = {}

    async def receiver(t):
        log.append((await t.receive(sel["src"])).error)

    async def source(t):
        await t.sleep(LONG)

    task = k.new_task("t")
    task.new_thread(receiver, name="rcv")
    src = task.new_thread(source, name="src")
    sel["src"] = task.add_cap(src)
    k.at(10_000, lambda: k.delete(src))
    assert k.run().reason == "done"
    assert log == [ENOT_EXISTENT]


def test_late_reply_after_caller_timed_out():
    """The caller gave up (receive timeout) before the reply: the late reply fails with
    ENOT_EXISTENT and never reaches the caller's later closed receive from the server."""
    k = make_kernel()
    log = []
    sel = {}

    async def server(t):
        await t.wait()
        await t.sleep(Timeout.cycles(10_000))
        log.append(("late reply", (await t.reply(words=[1])).error))
        await t.sleep(Timeout.cycles(10_000))
        log.append(("send", (await t.send(sel["cli"], words=[2])).error))

    async def client(t):
        r = await t.call(sel["srv"], words=[0], receive_timeout=Timeout.cycles(3_000))
        log.append(("call", r.error))
        r = await t.receive(sel["srv"])
        log.append(("receive", r.error, r.words))

    st = k.new_task("s")
    ct = k.new_task("c")
    srv = st.new_thread(server, name="srv")
    cli = ct.new_thread(client, name="cli")
    sel["srv"], sel["cli"] = ct.add_cap(srv), st.add_cap(cli)
    assert k.run().reason == "done"
    assert log == [("call", RETIMEOUT), ("late reply", ENOT_EXISTENT), ("send", OK),
                   ("receive", OK, (2,))]


def test_late_reply_after_caller_cancelled_does_not_reach_its_next_call():
    """Cancelled while waiting for the reply, the caller calls again at once (queued at the
    busy server): the stale reply fails and the queued call stays queued until the server
    receives it."""
    k = make_kernel()
    log = []
    sel = {}

    async def server(t):
        await t.wait()
        await t.compute(20_000)                       # busy: the caller is cancelled, calls again
        log.append(("late reply", (await t.reply(words=[1])).error, sel["cli_th"].state_name))
        r = await t.wait()
        log.append(("got", r.words))
        await t.reply(words=[2])

    async def client(t):
        log.append(("call 1", (await t.call(sel["srv"], words=[10])).error))
        r = await t.call(sel["srv"], words=[20])
        log.append(("call 2", r.error, r.words))

    async def canceller(t):
        await t.sleep(Timeout.cycles(5_000))
        await t.ex_regs(sel["cli"], cancel=True)

    st = k.new_task("s")
    ct = k.new_task("c")
    srv = st.new_thread(server, name="srv", priority=50)
    cli = ct.new_thread(client, name="cli", priority=55)   # runs again before the server
    ct.new_thread(canceller, name="canc", priority=60)
    sel["srv"], sel["cli"], sel["cli_th"] = ct.add_cap(srv), ct.add_cap(cli), cli
    assert k.run().reason == "done"
    assert log == [("call 1", RECANCELED), ("late reply", ENOT_EXISTENT, "send_wait"),
                   ("got", (20,)), ("call 2", OK, (2,))]


def test_delete_without_d_right():
    """t.delete needs the D right on the capability: without it ENOT_EXISTENT and the
    object lives on; so for empty and out-of-range selectors."""
    k = make_kernel()
    log = []

    async def victim(t):
        await t.sleep(Timeout.cycles(10_000))
        log.append("victim lived")

    async def body(t, sels):
        for what, s in sels:
            log.append((what, await t.delete(s)))

    task = k.new_task("t")
    v = task.new_thread(victim, name="v")
    gate = k.new_gate(v, label=2)
    no_d = CapRights.ALL & ~CapRights.D
    sels = [("thread without D", task.add_cap(v, no_d)), ("gate without D", task.add_cap(gate, no_d)),
            ("empty", 0), ("out of range", 1234), ("negative", -3)]
    task.new_thread(body, sels, name="b")
    res = k.run()
    assert res.reason == "done"
    assert log == [(what, ENOT_EXISTENT) for what, _ in sels] + ["victim lived"]
    assert v.alive and gate.alive
    assert res.died == []


def test_delete_task_deletes_its_threads_and_leaves_no_capability():
    k = make_kernel()
    log = []
    sel = {}

    async def member(t):
        await t.wait()

    async def client(t):
        await t.sleep(Timeout.cycles(10_000))
        log.append(("delete", await t.delete(sel["task"])))
        log.append(("send", (await t.send(sel["m0"], words=[1])).error))

    victim = k.new_task("victim")
    m0 = victim.new_thread(member, name="m0")
    m1 = victim.new_thread(member, name="m1")
    ct = k.new_task("c")
    ct.new_thread(client, name="cli")
    sel["task"], sel["m0"] = ct.add_cap(victim), ct.add_cap(m0)
    res = k.run()
    assert res.reason == "done"
    assert log == [("delete", OK), ("send", ENOT_EXISTENT)]
    assert res.died == [(m0, "deleted"), (m1, "deleted")]
    assert caps_naming(k, victim) == caps_naming(k, m0) == caps_naming(k, m1) == []


def test_thread_deleting_itself():
    k = make_kernel()
    log = []

    async def body(t):
        log.append("before")
        await t.delete(t.self_sel)
        log.append("after")                                 # never

    async def other(t):
        await t.sleep(Timeout.cycles(1_000))
        log.append("other")

    task = k.new_task("t")
    th = task.new_thread(body, name="self")
    task.new_thread(other, name="other")
    res = k.run()
    assert res.reason == "done"
    assert log == ["before", "other"]
    assert res.died == [(th, "deleted")]


def test_died_lists_deleted_and_raising_threads_and_the_run_goes_on():
    """RunResult.died: deleted threads with "deleted", threads whose body raised with the
    exception; a thread that returned is not listed. A Python exception in one thread
    never ends the run: the others continue."""
    k = make_kernel()
    log = []

    async def raiser(t):
        await t.sleep(Timeout.cycles(1_000))
        raise RuntimeError("boom")

    async def returner(t):
        await t.sleep(Timeout.cycles(2_000))
        return 42

    async def sleeper(t):
        await t.sleep(LONG)

    async def survivor(t):
        for i in range(3):
            await t.sleep(Timeout.cycles(3_000))
            log.append(i)

    task = k.new_task("t")
    ra = task.new_thread(raiser, name="raiser")
    re_ = task.new_thread(returner, name="returner")
    sl = task.new_thread(sleeper, name="sleeper")
    task.new_thread(survivor, name="survivor")
    k.at(5_000, lambda: k.delete(sl))
    res = k.run()
    assert res.reason == "done"
    assert log == [0, 1, 2]
    assert re_.result == 42 and re_.returned
    assert [th for th, _ in res.died] == [ra, sl]
    reason = res.died[0][1]
    assert "RuntimeError" in str(reason) and "boom" in str(reason)
    assert res.died[1][1] == "deleted"


def test_exception_in_a_server_releases_its_caller():
    """A server whose body raises while holding a reply capability dies; its caller ends
    ENOT_EXISTENT instead of waiting forever, and the run goes on."""
    k = make_kernel()
    log = []

    async def server(t):
        await t.wait()
        raise ValueError("bad request")

    async def client(t, dest):
        log.append((await t.call(dest, words=[1])).error)

    st = k.new_task("s")
    srv = st.new_thread(server, name="srv")
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli")
    res = k.run()
    assert res.reason == "done"
    assert log == [ENOT_EXISTENT]
    assert [th for th, _ in res.died] == [srv]


def test_delete_a_cancelled_thread_before_it_resumes():
    """A high-priority thread cancels a receiver and deletes it at once: the victim, ready
    with the cancel bit but not yet run, dies without ever resuming."""
    k = make_kernel()
    log = []
    sel = {}

    async def victim(t):
        r = await t.wait()
        log.append(("victim resumed", r.error))            # never

    async def boss(t):
        await t.sleep(Timeout.cycles(1_000))
        log.append(("cancel", await t.ex_regs(sel["v"], cancel=True), sel["th"].state_name))
        log.append(("delete", await t.delete(sel["v"])))

    task = k.new_task("t")
    v = task.new_thread(victim, name="v", priority=10)
    task.new_thread(boss, name="boss", priority=200)
    sel["v"], sel["th"] = task.add_cap(v), v
    res = k.run()
    assert res.reason == "done"
    assert log == [("cancel", OK, "canceled"), ("delete", OK)]
    assert states(k, "v")[-2:] == [("v", "canceled"), ("v", "dead")]
    assert res.died == [(v, "deleted")]


def test_delete_a_timed_out_thread_before_it_resumes():
    """The sleeper's timeout fires while a higher thread computes; it is deleted before it
    ever runs again."""
    k = make_kernel()
    log = []

    async def sleeper(t):
        await t.sleep(Timeout.cycles(5_000))
        log.append("sleeper resumed")                       # never

    async def hog(t):
        await t.sleep(Timeout.cycles(1_000))
        await t.compute(100_000)
        log.append("hog done")

    task = k.new_task("t")
    z = task.new_thread(sleeper, name="z", priority=10)
    task.new_thread(hog, name="hog", priority=200)
    k.at(50_000, lambda: log.append(("state at delete", z.state_name)) or k.delete(z))
    res = k.run()
    assert log == [("state at delete", "timed_out"), "hog done"]
    assert states(k, "z")[-2:] == [("z", "timed_out"), ("z", "dead")]
    assert res.died == [(z, "deleted")]


def test_deleting_the_caller_ends_the_servers_inherited_priority():
    """The server works at its high caller's priority; the caller is deleted: the boost
    ends at once and the server's reply finds no caller (ENOT_EXISTENT)."""
    k = make_kernel()
    log = []
    th = {}

    async def server(t):
        await t.wait()
        log.append(("working", th["srv"].prio))
        await t.compute(50_000)
        log.append(("after delete", th["srv"].prio))
        log.append(("reply", (await t.reply()).error))

    async def client(t, dest):
        await t.call(dest)
        log.append("client went on")                          # never

    st = k.new_task("s")
    th["srv"] = srv = st.new_thread(server, name="srv", priority=10)
    ct = k.new_task("c")
    cli = ct.new_thread(client, ct.add_cap(srv), name="cli", priority=200)
    k.at(20_000, lambda: k.delete(cli))
    res = k.run()
    assert res.reason == "done"
    assert log == [("working", 200), ("after delete", 10), ("reply", ENOT_EXISTENT)]
    assert res.died == [(cli, "deleted")]


def test_deleting_a_queued_caller_ends_the_boost_it_lent():
    """A high caller queued at a busy low server lends it its priority; deleted while still
    queued, it takes the boost with it."""
    k = make_kernel()
    log = []
    th = {}

    async def server(t):
        await t.compute(10_000)
        log.append(("busy, caller queued", th["srv"].prio))
        await t.compute(30_000)
        log.append(("caller deleted", th["srv"].prio))
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append(("queue", r.error))

    async def client(t, dest):
        await t.sleep(Timeout.cycles(1_000))
        await t.call(dest)

    st = k.new_task("s")
    th["srv"] = srv = st.new_thread(server, name="srv", priority=10)
    ct = k.new_task("c")
    cli = ct.new_thread(client, ct.add_cap(srv), name="cli", priority=200)
    k.at(20_000, lambda: k.delete(cli))
    assert k.run().reason == "done"
    assert log == [("busy, caller queued", 200), ("caller deleted", 10), ("queue", RETIMEOUT)]


def test_delete_gate_leaves_direct_senders_and_callers_waiting_for_a_reply():
    """Deleting a gate ends only the senders blocked on that gate: a caller that already
    went through it waits for its reply from the server (a thread, not the gate) and gets
    it; a sender queued at the server directly stays queued and is received later."""
    k = make_kernel()
    log = []
    sel = {}

    async def server(t):
        r = await t.wait()
        log.append(("srv got", r.label, r.words))
        await t.sleep(Timeout.cycles(20_000))
        log.append(("reply", (await t.reply(words=[5])).error))
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append(("srv got", r.error, r.label, r.words))

    async def caller(t):
        r = await t.call(sel["gate"], words=[1])
        log.append(("caller", r.error, r.words))

    async def direct(t):
        await t.sleep(Timeout.cycles(1_000))
        log.append(("direct", (await t.send(sel["srv"], words=[2])).error))

    async def via_gate(t):
        await t.sleep(Timeout.cycles(1_500))
        log.append(("via gate", (await t.send(sel["gate"], words=[3])).error))

    async def owner(t):
        await t.sleep(Timeout.cycles(5_000))
        log.append(("delete gate", await t.delete(sel["own"])))

    st = k.new_task("s")
    srv = st.new_thread(server, name="srv")
    gate = k.new_gate(srv, label=0x77)
    ct = k.new_task("c")
    ct.new_thread(caller, name="caller")
    d = ct.new_thread(direct, name="direct")
    ct.new_thread(via_gate, name="via_gate")
    st.new_thread(owner, name="owner")
    sel["gate"], sel["srv"], sel["own"] = ct.add_cap(gate), ct.add_cap(srv), st.add_cap(gate)
    assert k.run().reason == "done"
    assert log == [
        ("srv got", 0x77, (1,)),
        ("delete gate", OK),
        ("via gate", ENOT_EXISTENT),
        ("reply", OK),
        ("srv got", OK, d.tid, (2,)),
        ("caller", OK, (5,)),
        ("direct", OK),
    ]


def test_delete_gate_thread_with_senders_queued_through_the_gate():
    """S3: senders queued (through a gate) at a thread that is deleted end SECANCELED;
    IPC through the gate afterwards fails with ENOT_EXISTENT."""
    k = make_kernel()
    log = []

    async def server(t):
        await t.sleep(LONG)

    async def client(t, g):
        log.append((await t.call(g, words=[1])).error)
        log.append((await t.call(g, words=[1])).error)

    st = k.new_task("s")
    srv = st.new_thread(server, name="srv")
    gate = k.new_gate(srv, label=1)
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(gate), name="cli")
    k.at(10_000, lambda: k.delete(srv))
    res = k.run()
    assert res.reason == "done"
    assert log == [SECANCELED, ENOT_EXISTENT]
    assert res.died == [(srv, "deleted")]
    assert gate.alive and caps_naming(k, srv) == []


def test_host_cancel_due_inside_the_blocking_entry_is_not_lost() -> None:
    """An event that falls due during the very kernel entry in which a thread blocks
    (here a host cancel at 100, the sleep's entry ending later) must still wake it."""
    k = Kernel(check=True)
    task = k.new_task("t")
    log: list = []

    async def sleeper(t):  # type: ignore[no-untyped-def]
        r = await t.sleep(Timeout.never())
        log.append((t.now, r.error))

    th = task.new_thread(sleeper, name="s")
    k.at(100, lambda: k.cancel(th))
    assert k.run().reason == "done"
    assert len(log) == 1 and log[0][1] == IpcError.RECANCELED
    assert th.state_name == "dead"


def test_deleting_a_thread_that_sends_to_itself_with_a_sender_queued_behind() -> None:
    """Found by the state machine: t1 sends to itself (it waits forever, its own sender
    queue holds it), t0 at a higher priority queues behind it (t1 inherits t0's
    priority). Deleting t1 ends t0's send SECANCELED; nothing is left inheriting."""
    k = Kernel(check=True)
    task = k.new_task("t")
    got: list[object] = []

    async def selfish(t):  # type: ignore[no-untyped-def]
        await t.send(t.self_sel, words=[1])

    async def other(t, d):  # type: ignore[no-untyped-def]
        got.append((await t.send(d, words=[2])).error)

    t1 = task.new_thread(selfish, name="t1", priority=50)
    t0 = task.new_thread(other, task.add_cap(t1), name="t0", priority=100)
    assert k.run().reason == "deadlock"
    assert t1.prio == 100  # inherited from the sender queued at it
    k.delete(t1)
    assert k.run().reason == "done"
    assert got == [IpcError.SECANCELED] and t0.returned
