"""The lecture's IPC primitives, one case per test ("Principle Algorithm (Symmetric)",
"IPC Primitives", "Switching from Send to Receive", "Direct vs. Indirect IPC").

SPEC S5 (primitives, reply capability, labels), S7 (sender queues), FIASCO_FACTS
(sender queues, reply capability).
"""

from __future__ import annotations

from helpers import ipc_cost, make_kernel, states, switch_cost, trace
from l4sim import IpcError, Timeout

OK = IpcError.OK
ENOT_EXISTENT = IpcError.ENOT_EXISTENT


# --- rendezvous: who arrives first ---------------------------------------------------------

def test_receiver_arrives_first():
    """Case 1: the receiver prepares to receive and blocks; the sender arrives, transfers
    and wakes it. The sender does not block and, at equal priority, goes on running."""
    k = make_kernel()
    log = []

    async def receiver(t):
        r = await t.wait()
        log.append(("rcv", r.error, r.words, r.label, t.now))

    async def sender(t, dest):
        r = await t.send(dest, words=[1, 2, 3])
        log.append(("snd", r.error, t.now))

    a = k.new_task("a")
    rcv = a.new_thread(receiver, name="rcv")
    b = k.new_task("b")
    snd = b.new_thread(sender, b.add_cap(rcv), name="snd")
    res = k.run()

    e, sw = ipc_cost(k, 3), switch_cost(k, same_space=False)
    t_block = ipc_cost(k)                 # the receiver entered first and blocked
    t_send = t_block + sw + e             # the sender ran next and delivered
    assert res.reason == "done"
    assert log == [("snd", OK, t_send), ("rcv", OK, (1, 2, 3), snd.tid, t_send + sw)]
    assert states(k, "rcv", "snd")[2:] == [
        ("rcv", "receive_wait"),          # receiver arrives: ready-to-receive, blocks
        ("rcv", "ready"),                 # sender arrives: transfer, wake up receiver
        ("snd", "dead"),                  # the sender went on and returned first
        ("rcv", "dead"),
    ]
    assert trace(k, "transfer")[0][0] == t_send


def test_sender_arrives_first():
    """Case 2: the sender enqueues itself in the receiver's wait queue and blocks; the
    receiver arrives, dequeues it, transfers and wakes it (without blocking itself)."""
    k = make_kernel()
    log = []
    sel = {}

    async def sender(t):
        r = await t.send(sel["rcv"], words=[7, 8])
        log.append(("snd", r.error, t.now))

    async def receiver(t):
        r = await t.wait()
        log.append(("rcv", r.error, r.words, r.label, t.now))

    a = k.new_task("a")
    b = k.new_task("b")
    snd = a.new_thread(sender, name="snd")       # created first: runs first
    rcv = b.new_thread(receiver, name="rcv")
    sel["rcv"] = a.add_cap(rcv)
    res = k.run()

    e, sw = ipc_cost(k), switch_cost(k, same_space=False)
    t_queued = e
    t_recv = t_queued + sw + e
    assert res.reason == "done"
    assert log == [("rcv", OK, (7, 8), snd.tid, t_recv), ("snd", OK, t_recv + sw)]
    assert states(k, "rcv", "snd")[2:] == [
        ("snd", "send_wait"),             # sender arrives: ready-to-send, enqueue, block
        ("snd", "ready"),                 # receiver arrives: dequeue, transfer, wake sender
        ("rcv", "dead"),
        ("snd", "dead"),
    ]


def _build_sender_first(k, sender_body, receiver_body, *, sender_args=()):
    """Sender created (and so running) first, holding a capability to the receiver."""
    a = k.new_task("a")
    b = k.new_task("b")
    rcv = b.new_thread(receiver_body, name="rcv", priority=99)
    snd = a.new_thread(sender_body, a.add_cap(rcv), *sender_args, name="snd", priority=100)
    return snd, rcv


def test_sender_arrives_first_by_priority():
    """The same case built by priority: the sender runs first because it is higher; the
    receiver finds it queued and takes the message without blocking."""
    k = make_kernel(priority_inheritance=False)
    log = []

    async def sender(t, dest):
        r = await t.send(dest, words=[5])
        log.append(("snd", r.error))

    async def receiver(t):
        r = await t.wait()
        log.append(("rcv", r.error, r.words))

    _build_sender_first(k, sender, receiver)
    assert k.run().reason == "done"
    # the woken sender has the strictly higher priority: it preempts the receiver at once
    assert log == [("snd", OK), ("rcv", OK, (5,))]
    assert [s for s in states(k, "rcv") if s[1] != "ready"] == [("rcv", "dead")]  # never blocked


# --- call and reply ----------------------------------------------------------------------------

def _client_server(k, server_body, client_body, *, server_first, n_clients=1, gate_label=None):
    """A server in one task and `n_clients` clients `client_body(t, dest, i)` in another,
    `dest` naming the server directly or through one gate. Created (and so started, at
    equal priority) server first or clients first."""
    srv_task = k.new_task("srv")
    cli_task = k.new_task("cli")
    dest = []                                  # filled once the server exists

    async def client(t, i):
        return await client_body(t, dest[0], i)

    if server_first:
        srv = srv_task.new_thread(server_body, name="srv")
    clients = [cli_task.new_thread(client, i, name=f"cli{i}") for i in range(n_clients)]
    if not server_first:
        srv = srv_task.new_thread(server_body, name="srv")
    target = srv if gate_label is None else k.new_gate(srv, label=gate_label)
    dest.append(cli_task.add_cap(target))
    return srv, clients


def test_call_and_reply_server_waiting():
    """Receiver first: the client's call is delivered at once and the client is already
    waiting for the reply; the server replies with a zero timeout and it always succeeds."""
    k = make_kernel()
    log = []
    holder = {}

    async def server(t):
        r = await t.wait()
        cli = holder["cli"][0]
        log.append(("srv got", r.error, r.words, cli.state_name))
        r2 = await t.reply(words=[r.words[0] + 1])   # reply = zero send timeout
        log.append(("srv replied", r2.error))

    async def client(t, dest, i):
        r = await t.call(dest, words=[41])
        log.append(("cli", r.error, r.words))

    _, clients = _client_server(k, server, client, server_first=True)
    holder["cli"] = clients
    assert k.run().reason == "done"
    assert log == [
        ("srv got", OK, (41,), "receive_wait"),   # switched from send to receive atomically
        ("srv replied", OK),
        ("cli", OK, (42,)),
    ]


def test_call_and_reply_client_first():
    """Sender first: the call is queued; the server dequeues it and in the same step the
    client switches to waiting for the reply, so the zero-timeout reply succeeds."""
    k = make_kernel()
    log = []
    holder = {}

    async def server(t):
        r = await t.wait()
        log.append(("srv got", r.error, r.words, holder["cli"][0].state_name))
        r2 = await t.reply(words=[r.words[0] * 2])
        log.append(("srv replied", r2.error))

    async def client(t, dest, i):
        r = await t.call(dest, words=[21])
        log.append(("cli", r.error, r.words))

    _, clients = _client_server(k, server, client, server_first=False)
    holder["cli"] = clients
    assert k.run().reason == "done"
    assert log == [("srv got", OK, (21,), "receive_wait"), ("srv replied", OK), ("cli", OK, (42,))]
    assert states(k, "cli0")[1:4] == [("cli0", "send_wait"), ("cli0", "receive_wait"),
                                       ("cli0", "ready")]


def test_reply_and_wait_server_loop_zero_timeout_always_succeeds():
    """A server loop of reply_and_wait (zero send timeout) serving several clients whose
    calls are queued, interleaved with clients that call while the server waits: every
    reply succeeds and every client gets its own answer."""
    k = make_kernel()
    replies = []
    served = []

    async def server(t):
        r = await t.wait()
        while True:
            served.append(r.words[0])
            r = await t.reply_and_wait(words=[r.words[0] + 1000])
            assert r.ok, r

    async def client(t, dest, i):
        await t.compute(100 * i)
        for n in range(3):
            r = await t.call(dest, words=[10 * i + n])
            replies.append((i, r.error, r.words))
            await t.compute(50)

    srv, clients = _client_server(k, server, client, server_first=True, n_clients=4)
    res = k.run()
    assert res.reason == "done"                     # the server idles in an open wait
    assert res.blocked == [srv]
    assert sorted(served) == sorted(10 * i + n for i in range(4) for n in range(3))
    assert sorted(replies) == sorted((i, OK, (10 * i + n + 1000,)) for i in range(4) for n in range(3))
    assert all(th.returned for th in clients)


def test_call_and_reply_exact_trace():
    """The whole round trip, event by event, in simulated cycles: the server waits, the
    client's call is delivered and the client switches to receive in the same step, the
    server runs next (direct switch), replies; the client runs when the server ends."""
    k = make_kernel()

    async def server(t):
        await t.wait()
        await t.reply(words=[2])

    async def client(t, dest):
        await t.call(dest, words=[1])

    srv = k.new_task("s").new_thread(server, name="srv")
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli")
    assert k.run().reason == "done"
    e, sw = ipc_cost(k, 1), switch_cost(k, same_space=False)
    t1 = e                      # the server blocks
    t2 = t1 + sw + e            # the client's call: transfer, server ready, client receives
    t3 = t2 + sw + e            # the server's reply
    t4 = t3 + sw                # the client runs again
    assert [(time, th, ev, d if ev == "state" else "") for time, th, ev, d in
            trace(k, "state", "switch", "transfer")] == [
        (0, "srv", "state", "ready"),
        (0, "cli", "state", "ready"),
        (t1, "srv", "state", "receive_wait"),
        (t1 + sw, "cli", "switch", ""),
        (t2, "cli", "transfer", ""),
        (t2, "srv", "state", "ready"),
        (t2, "cli", "state", "receive_wait"),
        (t2 + sw, "srv", "switch", ""),
        (t3, "srv", "transfer", ""),
        (t3, "cli", "state", "ready"),
        (t3, "srv", "state", "dead"),
        (t4, "cli", "switch", ""),
        (t4, "cli", "state", "dead"),
    ]


def test_reply_capability_is_one_shot():
    """The reply capability is consumed by the reply: a second reply has none."""
    k = make_kernel()
    log = []

    async def server(t):
        await t.wait()
        log.append(("first", (await t.reply(words=[1])).error))
        log.append(("second", (await t.reply(words=[2])).error))

    async def client(t, dest, i):
        r = await t.call(dest)
        log.append(("cli", r.error, r.words))

    _client_server(k, server, client, server_first=True)
    assert k.run().reason == "done"
    assert log == [("first", OK), ("second", ENOT_EXISTENT), ("cli", OK, (1,))]


def test_reply_without_caller_is_not_existent():
    """A server that received a plain send holds no reply capability (FIASCO_FACTS: set
    only for a call): its reply fails with ENOT_EXISTENT."""
    k = make_kernel()
    log = []

    async def server(t):
        r = await t.wait()
        log.append(("got", r.error, r.words))
        log.append(("reply", (await t.reply(words=[1])).error))

    async def sender(t, dest, i):
        log.append(("sent", (await t.send(dest, words=[9])).error))

    _client_server(k, server, sender, server_first=True)
    assert k.run().reason == "done"
    assert log == [("sent", OK), ("got", OK, (9,)), ("reply", ENOT_EXISTENT)]


def test_failed_reply_of_reply_and_wait_skips_the_receive_phase():
    """S5: if the send phase fails the receive phase is not executed: reply_and_wait without
    a reply capability returns ENOT_EXISTENT at once, leaving a queued sender queued."""
    k = make_kernel()
    log = []
    th = {}

    async def server(t):
        await t.sleep(Timeout.cycles(10_000))       # let the sender queue up
        t0 = t.now
        r = await t.reply_and_wait(words=[1])
        log.append(("r&w", r.error, r.words, t.now - t0, th["snd"].state_name))
        r = await t.wait()                          # the fallback of a server loop
        log.append(("wait", r.error, r.words))

    async def sender(t, dest, i):
        log.append(("sent", (await t.send(dest, words=[77])).error))

    _, (snd,) = _client_server(k, server, sender, server_first=True)
    th["snd"] = snd
    assert k.run().reason == "done"
    assert log == [
        ("r&w", ENOT_EXISTENT, (), ipc_cost(k, 1), "send_wait"),  # no wait, nothing taken
        ("wait", OK, (77,)),
        ("sent", OK),
    ]


def test_send_to_a_caller_ends_its_wait_and_the_reply_capability():
    """FIASCO_FACTS: the reply capability is reset when the caller's wait ends. A server
    that answers its caller with a plain send (the caller's closed wait accepts it) has no
    reply left: a later reply fails and never reaches another IPC of the caller."""
    k = make_kernel()
    log = []
    holder = {}

    async def server(t):
        await t.wait()
        log.append(("send", (await t.send(holder["cli_sel"], words=[1])).error))
        await t.sleep(Timeout.cycles(1_000))               # the caller is in its closed receive
        log.append(("late reply", (await t.reply(words=[2])).error))
        await t.sleep(Timeout.cycles(100_000))             # alive, sending nothing more

    async def client(t, dest, i):
        r = await t.call(dest, words=[0])
        log.append(("cli call", r.error, r.words))
        r = await t.receive(dest, receive_timeout=Timeout.cycles(5_000))
        log.append(("cli receive", r.error, r.words))

    srv, (cli,) = _client_server(k, server, client, server_first=True)
    holder["cli_sel"] = srv.task.add_cap(cli)
    assert k.run().reason == "done"
    assert log == [
        ("send", OK),
        ("cli call", OK, (1,)),
        ("late reply", ENOT_EXISTENT),                 # not delivered to the closed receive
        ("cli receive", IpcError.RETIMEOUT, ()),
    ]


# --- closed and open receive -----------------------------------------------------------------

def test_closed_receive_ignores_other_senders():
    """A closed receive takes only the named partner: another sender, even one queued
    earlier, stays queued and is delivered later by an open wait."""
    k = make_kernel()
    log = []
    th = {}

    async def receiver(t):
        r = await t.receive(th["b_sel"])
        log.append(("closed", r.error, r.words, r.label, th["a"].state_name))
        r = await t.wait()
        log.append(("open", r.error, r.words, r.label))

    async def sender(t, dest, word, delay):
        await t.sleep(Timeout.cycles(delay))
        log.append((f"sent {word:#x}", (await t.send(dest, words=[word])).error))

    rt = k.new_task("r")
    st = k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    th["a"] = a = st.new_thread(sender, st.add_cap(rcv), 0xA, 1_000, name="a")
    b = st.new_thread(sender, st.add_cap(rcv), 0xB, 5_000, name="b")
    th["b_sel"] = rt.add_cap(b)
    assert k.run().reason == "done"
    assert log == [
        ("sent 0xb", OK),                                  # b: delivered to the closed receive
        ("closed", OK, (0xB,), b.tid, "send_wait"),        # a is still queued
        ("open", OK, (0xA,), a.tid),
        ("sent 0xa", OK),
    ]


def test_closed_receive_blocks_although_another_sender_is_queued():
    """A receiver arriving with a foreign sender already queued still blocks in its
    closed receive, and the queued sender stays queued."""
    k = make_kernel()
    log = []
    th = {}

    async def receiver(t):
        await t.sleep(Timeout.cycles(1_000))           # a queues meanwhile
        r = await t.receive(th["b_sel"])
        log.append(("closed", r.error, r.words, th["a"].state_name))
        log.append(("open", (await t.wait()).words))

    async def sender(t, dest, word, delay):
        await t.sleep(Timeout.cycles(delay))
        await t.send(dest, words=[word])

    rt = k.new_task("r")
    st = k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    th["a"] = st.new_thread(sender, st.add_cap(rcv), 1, 10, name="a")
    b = st.new_thread(sender, st.add_cap(rcv), 2, 50_000, name="b")
    th["b_sel"] = rt.add_cap(b)
    assert k.run().reason == "done"
    assert log == [("closed", OK, (2,), "send_wait"), ("open", (1,))]
    # the receiver blocked in its closed receive although a was queued
    assert ("rcv", "receive_wait") in states(k, "rcv")[3:]


def test_open_receive_takes_highest_priority_first_then_fifo():
    """S7: the sender queue is sorted by priority, FIFO within one priority. Six senders
    of three priorities arrive interleaved while the receiver sleeps."""
    k = make_kernel()
    got = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(100_000))
        for _ in range(6):
            r = await t.wait()
            got.append((r.words[0], r.label))

    async def sender(t, dest, ident, delay):
        await t.sleep(Timeout.cycles(delay))
        r = await t.send(dest, words=[ident])
        assert r.ok

    rt = k.new_task("r")
    st = k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv", priority=10)
    plan = [(1, 50, 1_000), (2, 200, 2_000), (3, 100, 3_000),
            (4, 50, 4_000), (5, 200, 5_000), (6, 100, 6_000)]
    tids = {}
    for ident, prio, delay in plan:
        s = st.new_thread(sender, st.add_cap(rcv), ident, delay, name=f"s{ident}", priority=prio)
        tids[ident] = s.tid
    assert k.run().reason == "done"
    assert got == [(i, tids[i]) for i in (2, 5, 3, 6, 1, 4)]


# --- labels: direct and indirect IPC -------------------------------------------------------------

def test_direct_ipc_delivers_the_sender_tid_as_label():
    k = make_kernel()
    got = []

    async def receiver(t):
        for _ in range(2):
            r = await t.wait()
            got.append((r.label, r.words))

    async def sender(t, dest, w):
        await t.send(dest, words=[w], label=0x55)   # the tag's label is not the sender label

    rt = k.new_task("r")
    rcv = rt.new_thread(receiver, name="rcv")
    st = k.new_task("s")
    s1 = st.new_thread(sender, st.add_cap(rcv), 1, name="s1")
    s2 = st.new_thread(sender, st.add_cap(rcv), 2, name="s2")
    assert k.run().reason == "done"
    assert s1.tid != s2.tid
    assert got == [(s1.tid, (1,)), (s2.tid, (2,))]


def test_gate_ipc_delivers_the_gate_label():
    """Indirect IPC: two gates bound to one server; the server learns which gate, never
    the client's identity. The reply is direct IPC: the client sees the server's tid."""
    k = make_kernel()
    got = []
    replies = []

    async def server(t):
        for _ in range(2):
            r = await t.wait()
            got.append((r.label, r.tag.label, r.words))
            await t.reply(words=[r.label])

    async def client(t, dest):
        r = await t.call(dest, words=[dest], label=7)
        replies.append((r.error, r.label, r.words))

    srv_task = k.new_task("srv")
    srv = srv_task.new_thread(server, name="srv")
    g1 = k.new_gate(srv, label=0x10)
    g2 = k.new_gate(srv, label=0x20)
    ct = k.new_task("cli")
    s1, s2 = ct.add_cap(g1), ct.add_cap(g2)
    ct.new_thread(client, s1, name="c1")
    ct.new_thread(client, s2, name="c2")
    assert k.run().reason == "done"
    assert got == [(0x10, 7, (s1,)), (0x20, 7, (s2,))]
    assert replies == [(OK, srv.tid, (0x10,)), (OK, srv.tid, (0x20,))]


def test_message_tag_travels_unchanged():
    """The receiver gets the sender's tag: label, number of words, flags."""
    k = make_kernel()
    got = []

    async def receiver(t):
        r = await t.wait()
        got.append((r.tag.label, r.tag.words, r.tag.items, r.words))

    async def sender(t, dest):
        await t.send(dest, words=[1, 2, 3, 4, 5], label=-20)

    rt = k.new_task("r")
    rcv = rt.new_thread(receiver, name="rcv")
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(rcv), name="snd")
    k.run()
    assert got == [(-20, 5, 0, (1, 2, 3, 4, 5))]


def test_utcb_ipc_of_63_words_and_full_width_words():
    """Untyped words are always accepted, up to 63, each a full unsigned 64-bit value."""
    k = make_kernel()
    got = []
    words = [(1 << 64) - 1 - i for i in range(63)]

    async def receiver(t):
        r = await t.wait()
        got.append((r.error, r.words, tuple(t.utcb.mr[:63])))

    async def sender(t, dest):
        got.append((await t.send(dest, words=words)).error)

    rt = k.new_task("r")
    rcv = rt.new_thread(receiver, name="rcv")
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(rcv), name="snd")
    k.run()
    assert got == [OK, (OK, tuple(words), tuple(words))]


def test_call_through_gate_then_reply_and_wait_serves_next_client_first_come():
    """A server loop with reply_and_wait through a gate: the reply goes to the caller, the
    open receive takes the next queued client; clients of one priority in FIFO order."""
    k = make_kernel()
    order = []

    async def server(t):
        r = await t.wait()
        while True:
            order.append(r.words[0])
            await t.compute(1_000)                      # the others queue meanwhile
            r = await t.reply_and_wait(words=[r.words[0]])

    async def client(t, dest, i):
        await t.sleep(Timeout.cycles(10 * (i + 1)))
        r = await t.call(dest, words=[i])
        assert r.words == (i,)

    _client_server(k, server, client, server_first=True, n_clients=4, gate_label=3)
    res = k.run()
    assert res.reason == "done"
    assert order == [0, 1, 2, 3]
