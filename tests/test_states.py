"""S15: the IPC state machine declared as data, the one function that changes a state word,
and the invariant checker (S19) that must notice a corrupted kernel.

Also: for every declared transition, a small program whose kernel takes it (read back from
the kernel's own trace of state changes), so the coverage test has a witness for each.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import pytest

from l4sim import IpcError, Kernel, KernelInvariantError, Timeout
from l4sim.kernel import states
from l4sim.kernel.states import (
    CANCEL,
    DEAD,
    DRQ_WAIT,
    DYING,
    INACTIVE,
    IPC_TRANSFER,
    LOCK_WAIT,
    READY,
    RECEIVE_WAIT,
    RECV_IN_PROGRESS,
    SEND_WAIT,
    STATES,
    TIMEOUT,
    TRANSITIONS,
    state_name,
)

# --- the declared machine ----------------------------------------------------------------


def test_every_transition_joins_declared_states() -> None:
    declared = set(STATES.values())
    for t in TRANSITIONS:
        assert t.old in declared, f"{t}: {t.old:#x} is not a declared state"
        assert t.new in declared, f"{t}: {t.new:#x} is not a declared state"
        assert t.old != t.new, f"{t}: a transition changes the state"
        assert t.why.strip(), f"{t}: every transition says why it happens"


def test_transitions_are_unique_and_tables_agree() -> None:
    pairs = [(t.old, t.new) for t in TRANSITIONS]
    dup = [p for p, n in Counter(pairs).items() if n > 1]
    assert not dup, f"declared twice: {dup}"
    assert set(pairs) == states.ALLOWED
    assert {(t.old, t.new): t.why for t in TRANSITIONS} == states.WHY
    assert len(set(STATES.values())) == len(STATES), "two state names share one state word"
    for name, bits in STATES.items():
        assert state_name(bits) == name


def test_every_declared_state_is_reachable_and_can_end() -> None:
    """From `inactive` every declared state is reachable, and from each, `dead`."""
    succ: dict[int, set[int]] = {s: set() for s in STATES.values()}
    for t in TRANSITIONS:
        succ[t.old].add(t.new)

    def reach(start: int) -> set[int]:
        seen, todo = {start}, [start]
        while todo:
            for n in succ[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    assert reach(INACTIVE) == set(STATES.values())
    for name, bits in STATES.items():
        assert DEAD in reach(bits), f"{name} can never end"
    assert not succ[DEAD], "nothing leaves dead"


_EDGE = re.compile(r'^\s*(\w+)\s*->\s*(\w+)\s*\[label="([^"]*)"')
_NODE = re.compile(r'^\s*(\w+)\s*\[label="([^"]*)"\]')


def test_to_dot_is_a_digraph_with_one_edge_per_transition() -> None:
    dot = states.to_dot()
    assert dot.lstrip().startswith("digraph"), dot[:40]
    body = dot.strip()
    assert body.endswith("}")
    assert body.count("{") == body.count("}") == 1
    assert body.count('"') % 2 == 0, "unbalanced quotes"
    edges, nodes = [], []
    for line in body.splitlines()[1:-1]:
        if not line.strip():
            continue
        assert line.rstrip().endswith(";"), f"a DOT statement ends with ';': {line!r}"
        m = _EDGE.match(line)
        if m:
            edges.append((m.group(1), m.group(2), m.group(3)))
            continue
        m = _NODE.match(line)
        if m:
            nodes.append(m.group(1))
    assert sorted(nodes) == sorted(STATES), "one node per declared state"
    want = sorted((state_name(t.old), state_name(t.new), t.why.replace('"', "'")) for t in TRANSITIONS)
    assert sorted(edges) == want, "one edge per declared transition, labelled with its why"
    for a, b, _ in edges:
        assert a in STATES and b in STATES


def test_to_text_lists_every_state_and_transition() -> None:
    text = states.to_text()
    assert f"{len(STATES)} states, {len(TRANSITIONS)} transitions" in text
    lines = text.splitlines()
    for name, bits in STATES.items():
        assert any(line.split()[:2] == [name, f"{bits:#07x}"] for line in lines if line.strip()), name
    for t in TRANSITIONS:
        pattern = re.compile(rf"^\s*{re.escape(state_name(t.old))} -> {re.escape(state_name(t.new))}\s+"
                             rf"{re.escape(t.why)}$")
        assert sum(1 for line in lines if pattern.match(line)) == 1, f"{t} listed once"


# --- the one function that changes a state word ------------------------------------------


async def _idle(t):  # type: ignore[no-untyped-def]
    await t.sleep(Timeout.never())


@pytest.mark.parametrize("old,new", [
    (READY, INACTIVE),
    (READY, READY | CANCEL),        # only a waiting thread can be cancelled
    (READY, SEND_WAIT | RECEIVE_WAIT),
    (READY, 0x1234),
])
def test_undeclared_transition_is_refused(old: int, new: int) -> None:
    k = Kernel(check=True)
    th = k.new_task("a").new_thread(_idle, name="victim")
    assert th.state == old
    with pytest.raises(KernelInvariantError) as info:
        k.set_state(th, new)
    assert info.value.invariant == "declared transitions"
    assert "declared transitions" in str(info.value)
    assert "victim" in str(info.value)
    assert th.state == old, "a refused transition leaves the state word as it was"
    th.coro.close()


def test_dead_stays_dead() -> None:
    k = Kernel(check=True)
    th = k.new_task("a").new_thread(_idle, name="victim")
    k.delete(th)
    assert th.state == DEAD
    for new in STATES.values():
        if new == DEAD:
            continue
        with pytest.raises(KernelInvariantError) as info:
            k.set_state(th, new)
        assert info.value.invariant == "declared transitions"


def test_declared_transition_is_accepted_and_traced() -> None:
    k = Kernel(check=True, trace=True)
    th = k.new_task("a").new_thread(_idle, name="t")
    assert ("t", "state", "ready") in {(e.thread, e.event, e.detail) for e in k.events}
    k.set_state(th, RECEIVE_WAIT)  # declared: ready -> receive_wait
    assert th.state == RECEIVE_WAIT
    assert k.events[-1].event == "state" and k.events[-1].detail == "receive_wait"
    th.coro.close()


# --- check_invariants notices a corrupted kernel ------------------------------------------


def _system() -> tuple[Kernel, dict[str, object]]:
    """A small checked system stopped in a known shape: srv waits openly, cli is queued as
    a sender at blk (which sleeps), idle sleeps, hog is ready."""
    k = Kernel(check=True)
    ta = k.new_task("a")

    async def srv(t):  # type: ignore[no-untyped-def]
        await t.wait()

    async def blk(t):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.never())

    async def cli(t, d):  # type: ignore[no-untyped-def]
        await t.send(d, words=[1])

    async def hog(t):  # type: ignore[no-untyped-def]
        await t.compute(10**9)

    s = ta.new_thread(srv, name="srv")
    b = ta.new_thread(blk, name="blk")
    c = ta.new_thread(cli, ta.add_cap(b), name="cli")
    i = ta.new_thread(_idle, name="idle")
    h = ta.new_thread(hog, name="hog", priority=10)
    res = k.run(until=100_000)
    assert res.reason == "until"
    assert s.state == RECEIVE_WAIT and b.state == RECEIVE_WAIT and i.state == RECEIVE_WAIT
    assert c.state == SEND_WAIT and c.partner is b
    assert h.state == READY
    k.check_invariants()  # the untouched system is fine
    return k, {"srv": s, "blk": b, "cli": c, "idle": i, "hog": h, "task": ta}


def _corrupt_send_wait_not_queued(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    o["srv"].state = SEND_WAIT  # type: ignore[attr-defined]
    o["srv"].partner = o["blk"]  # type: ignore[attr-defined]


def _corrupt_undeclared_word(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    o["idle"].state = RECEIVE_WAIT | CANCEL  # type: ignore[attr-defined]


def _corrupt_queue_holds_receiver(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    cli, blk = o["cli"], o["blk"]
    blk.sendq.remove(cli)  # type: ignore[attr-defined]
    o["srv"].sendq = type(blk.sendq)()  # type: ignore[attr-defined]
    o["srv"].sendq.enqueue(o["idle"], 100)  # type: ignore[attr-defined]
    blk.sendq.enqueue(cli, 100)  # type: ignore[attr-defined]


def _corrupt_sender_in_two_queues(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    idle = o["idle"]  # after blk in creation order: blk's queue is checked first
    idle.sendq = type(o["blk"].sendq)()  # type: ignore[attr-defined]
    idle.sendq.enqueue(o["cli"], 100)  # type: ignore[attr-defined]


def _corrupt_ready_lost(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    k.cpus[0].dequeue(o["hog"])  # type: ignore[arg-type]


def _corrupt_dead_in_ready_queue(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    o["hog"].state = DEAD  # type: ignore[attr-defined]


def _corrupt_blocked_in_ready_queue(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    k.cpus[0].enqueue_back(o["idle"])  # type: ignore[arg-type]


def _corrupt_bitmap(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    k.cpus[0].bitmap |= 1 << 200


def _corrupt_partner_of_ready(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    o["hog"].partner = o["srv"]  # type: ignore[attr-defined]


def _corrupt_reply_cap(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    o["srv"].reply_caller = o["hog"]  # type: ignore[attr-defined]


def _corrupt_time(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    k.cpus[0].now -= 1


def _corrupt_priority(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    o["idle"].prio = 42  # type: ignore[attr-defined]


def _corrupt_queued_priority(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    o["cli"].queued_prio = 7  # type: ignore[attr-defined]


def _corrupt_timer(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    hog = o["hog"]
    hog.timer = [k.now + 10, 0, hog, None]  # type: ignore[attr-defined]


def _corrupt_dangling_cap(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    k.threads.pop(o["idle"].tid)  # type: ignore[attr-defined]


def _corrupt_dead_object_cap(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    gate = k.new_gate(o["srv"], label=5)  # type: ignore[arg-type]
    o["task"].add_cap(gate)  # type: ignore[attr-defined]
    gate.alive = False


def _corrupt_waiting_for_dead(k: Kernel, o: dict) -> None:  # type: ignore[type-arg]
    o["idle"].partner = o["hog"]  # type: ignore[attr-defined]
    o["hog"].alive = False  # type: ignore[attr-defined]


CORRUPTIONS: list[tuple[str, Callable[[Kernel, dict], None], str]] = [  # type: ignore[type-arg]
    ("send_wait_not_queued", _corrupt_send_wait_not_queued,
     "every blocked thread is in exactly the queues its state says"),
    ("undeclared_state_word", _corrupt_undeclared_word, "every state word is a declared state"),
    ("queue_holds_receiver", _corrupt_queue_holds_receiver,
     "every blocked thread is in exactly the queues its state says"),
    ("sender_in_two_queues", _corrupt_sender_in_two_queues, "a sender is in at most one queue"),
    ("ready_thread_lost", _corrupt_ready_lost,
     "a ready thread is running or in the ready queue (exactly one)"),
    ("dead_in_ready_queue", _corrupt_dead_in_ready_queue,
     "the ready queues hold ready threads at their priority"),
    ("blocked_in_ready_queue", _corrupt_blocked_in_ready_queue,
     "the ready queues hold ready threads at their priority"),
    ("bitmap", _corrupt_bitmap, "the ready bitmap matches the ready queues"),
    ("partner_of_ready_thread", _corrupt_partner_of_ready,
     "partners point at each other consistently"),
    ("reply_cap_to_running_thread", _corrupt_reply_cap,
     "a reply capability names a caller waiting for this thread"),
    ("time_goes_back", _corrupt_time, "time never goes back"),
    ("priority", _corrupt_priority,
     "priority inheritance: a server runs at its highest client's priority"),
    ("queued_priority", _corrupt_queued_priority, "sender queues are sorted by priority"),
    ("timer_of_ready_thread", _corrupt_timer, "a timer is armed only for a waiting thread"),
    ("cap_to_removed_thread", _corrupt_dangling_cap, "no capability names a deleted object"),
    ("cap_to_dead_gate", _corrupt_dead_object_cap, "no capability names a deleted object"),
    ("waiting_for_dead_partner", _corrupt_waiting_for_dead, "partners point at live threads"),
]


@pytest.mark.parametrize("corrupt,invariant", [(c, inv) for _, c, inv in CORRUPTIONS],
                         ids=[name for name, _, _ in CORRUPTIONS])
def test_check_invariants_detects_corruption(corrupt, invariant: str) -> None:  # type: ignore[no-untyped-def]
    k, objs = _system()
    corrupt(k, objs)
    with pytest.raises(KernelInvariantError) as info:
        k.check_invariants()
    assert info.value.invariant == invariant, str(info.value)
    assert invariant in str(info.value)


def test_corruption_stops_a_checked_run() -> None:
    """With check=True the kernel checks after every operation: a corruption introduced by a
    host event in the middle of a run stops that run with the invariant named."""
    k = Kernel(check=True)
    ta = k.new_task("a")

    async def pinger(t, d):  # type: ignore[no-untyped-def]
        while True:
            await t.call(d, words=[1])

    async def ponger(t):  # type: ignore[no-untyped-def]
        await t.wait()
        while True:
            await t.reply_and_wait(words=[2])

    p = ta.new_thread(ponger, name="pong")
    ta.new_thread(pinger, ta.add_cap(p), name="ping")
    k.at(50_000, lambda: setattr(p, "state", SEND_WAIT))
    with pytest.raises(KernelInvariantError) as info:
        k.run(until=1_000_000)
    assert info.value.invariant in ("every blocked thread is in exactly the queues its state says",
                                    "declared transitions",
                                    "a ready thread is running or in the ready queue (exactly one)")


# --- every declared transition has a witness ----------------------------------------------

_BITS = dict(STATES)


def transitions_taken(k: Kernel) -> set[tuple[int, int]]:
    """The (old, new) state words each thread went through, read from the kernel's trace."""
    cur: dict[str, int] = {}
    out: set[tuple[int, int]] = set()
    for e in k.events:
        if e.event != "state":
            continue
        new = _BITS[e.detail]
        old = cur.get(e.thread, INACTIVE)
        out.add((old, new))
        cur[e.thread] = new
    return out


def _kernel() -> Kernel:
    return Kernel(check=True, trace=True)


def w_inactive_ready() -> Kernel:
    k = _kernel()
    k.new_task("a").new_thread(_idle)
    k.run()
    return k


def _sender_receiver(*, call: bool, send_timeout: Timeout = Timeout.never(),
                     receiver_delay: int = 20_000) -> tuple[Kernel, dict[str, object]]:
    k = _kernel()
    ta = k.new_task("a")
    out: dict[str, object] = {}

    async def receiver(t):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.cycles(receiver_delay))
        r = await t.wait()
        out["received"] = r.words
        if call:
            await t.reply(words=[r.words[0] + 1])

    async def sender(t, d):  # type: ignore[no-untyped-def]
        if call:
            r = await t.call(d, words=[7], send_timeout=send_timeout)
        else:
            r = await t.send(d, words=[7], send_timeout=send_timeout)
        out["sender"] = (r.error, r.words)

    rcv = ta.new_thread(receiver, name="rcv")
    ta.new_thread(sender, ta.add_cap(rcv), name="snd")
    out["run"] = k.run()
    return k, out


def w_send_queued_then_taken() -> Kernel:  # ready->send_wait, send_wait->ready
    k, out = _sender_receiver(call=False)
    assert out["sender"] == (IpcError.OK, ()) and out["received"] == (7,)
    return k


def w_call_queued_then_taken() -> Kernel:  # send_wait->receive_wait, receive_wait->ready
    k, out = _sender_receiver(call=True)
    assert out["sender"] == (IpcError.OK, (8,)) and out["received"] == (7,)
    return k


def w_send_timeout() -> Kernel:  # send_wait->timed_out->ready
    k, out = _sender_receiver(call=False, send_timeout=Timeout.cycles(1_000))
    assert out["sender"] == (IpcError.SETIMEOUT, ())
    return k


def w_receive_first() -> Kernel:  # ready->receive_wait, receive_wait->ready
    k = _kernel()
    ta = k.new_task("a")
    got = []

    async def receiver(t):  # type: ignore[no-untyped-def]
        got.append((await t.wait()).words)

    async def sender(t, d):  # type: ignore[no-untyped-def]
        await t.send(d, words=[3])

    rcv = ta.new_thread(receiver)
    ta.new_thread(sender, ta.add_cap(rcv))
    k.run()
    assert got == [(3,)]
    return k


def w_sleep_times_out() -> Kernel:  # receive_wait->timed_out->ready, ready->dead
    k = _kernel()
    got = []

    async def sleeper(t):  # type: ignore[no-untyped-def]
        got.append((await t.sleep(Timeout.us(1))).error)

    k.new_task("a").new_thread(sleeper)
    k.run()
    assert got == [IpcError.RETIMEOUT]
    return k


def _cancel_scenario(victim_op: str, *, delete_after: bool) -> Kernel:
    """A high-priority canceller (ex_regs cancel) ends the victim's wait; optionally it then
    deletes the victim before the victim ran again."""
    k = _kernel()
    ta = k.new_task("a")
    got: list[object] = []

    async def victim(t, d):  # type: ignore[no-untyped-def]
        if victim_op == "send":
            r = await t.send(d, words=[1])
        else:
            r = await t.wait()
        got.append(r.error)

    async def blocker(t):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.never())

    async def canceller(t, v):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.us(2))
        got.append(await t.ex_regs(v, cancel=True))
        if delete_after:
            got.append(await t.delete(v))

    b = ta.new_thread(blocker, name="blocker")
    v = ta.new_thread(victim, ta.add_cap(b), name="victim")
    ta.new_thread(canceller, ta.add_cap(v), name="canceller", priority=200)
    k.run()
    if delete_after:
        assert got == [IpcError.OK, IpcError.OK]
    else:
        want = IpcError.SECANCELED if victim_op == "send" else IpcError.RECANCELED
        assert got == [IpcError.OK, want]
    return k


def w_send_canceled() -> Kernel:
    return _cancel_scenario("send", delete_after=False)


def w_receive_canceled() -> Kernel:
    return _cancel_scenario("wait", delete_after=False)


def w_canceled_deleted() -> Kernel:
    return _cancel_scenario("wait", delete_after=True)


def w_timed_out_deleted() -> Kernel:
    """Two timeouts expire at once: the higher-priority thread runs first and deletes the
    other, which is timed out and has not run yet."""
    k = _kernel()
    ta = k.new_task("a")
    got = []

    async def victim(t):  # type: ignore[no-untyped-def]
        got.append(await t.sleep(Timeout.at(50_000)))

    async def killer(t, v):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.at(50_000))
        got.append(await t.delete(v))

    v = ta.new_thread(victim, name="victim")
    ta.new_thread(killer, ta.add_cap(v), name="killer", priority=200)
    k.run()
    assert got == [IpcError.OK]
    return k


def _delete_waiting(op: str) -> Kernel:
    k = _kernel()
    ta = k.new_task("a")

    async def victim(t, d):  # type: ignore[no-untyped-def]
        if op == "send":
            await t.send(d, words=[1])
        else:
            await t.wait()

    async def blocker(t):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.never())

    b = ta.new_thread(blocker, name="blocker")
    v = ta.new_thread(victim, ta.add_cap(b), name="victim")
    k.run()
    assert v.state == (SEND_WAIT if op == "send" else RECEIVE_WAIT)
    k.delete(v)
    res = k.run()
    assert [(t.name, why) for t, why in res.died] == [("victim", "deleted")]
    return k


def w_send_wait_deleted() -> Kernel:
    return _delete_waiting("send")


def w_receive_wait_deleted() -> Kernel:
    return _delete_waiting("wait")


def w_receiver_deleted_cancels_senders() -> Kernel:
    """Deleting a receiver ends its queued senders SECANCELED (send_wait -> canceled)."""
    k = _kernel()
    ta = k.new_task("a")
    got = []

    async def blocker(t):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.never())

    async def sender(t, d):  # type: ignore[no-untyped-def]
        got.append((await t.send(d, words=[1])).error)

    b = ta.new_thread(blocker, name="blocker")
    ta.new_thread(sender, ta.add_cap(b), name="sender")
    k.run()
    k.delete(b)
    k.run()
    assert got == [IpcError.SECANCELED]
    return k


def _long(transfer: str = "symmetric", **kw: object) -> Callable[[], Kernel]:
    """A long-IPC scenario of tests/longipc_scenarios.py as a witness."""
    def run() -> Kernel:
        from longipc_scenarios import run_case

        o = run_case("window", transfer, trace=True, **kw)  # type: ignore[arg-type]
        assert o.reason == "done", o
        return o.kernel  # type: ignore[no-any-return]
    return run


w_long_receiver_first = _long(sender_first=False)
w_long_symmetric_pull = _long(sender_first=True)
w_long_sender_driven = _long("sender-driven", sender_first=True)
w_long_call_pulled = _long(sender_first=True, call=True)
w_long_cancel_passive = _long(sender_first=False, size=16 * 4096, action="cancel_rcv",
                              act_at=500_000 + 3 * 4096, even_costs=True)
w_long_locked_delete = _long(sender_first=False, size=16 * 4096, action="delete_rcv",
                             act_at=500_000 + 3 * 4096, even_costs=True)
w_long_delete_in_fault = _long(sender_first=False, rcv_unmapped=True, pager="slow",
                               action="delete_rcv", act_at=520_000)
w_long_delete_puller = _long(sender_first=True, size=16 * 4096, action="delete_rcv",
                             act_at=500_000 + 3 * 4096, even_costs=True)


def w_lock_wait() -> Kernel:
    from test_helping import _scenario

    return _scenario(helping=True)[0]


def w_lock_wait_deleted() -> Kernel:
    from test_helping import deleter_deleted_in_lock_wait

    return deleter_deleted_in_lock_wait()[0]


def w_drq_pingpong() -> Kernel:
    """A call and its reply across two CPUs: each handshake is a remote request."""
    from test_multiprocessor import _pingpong

    k = Kernel(cpus=2, check=True, trace=True)
    _pingpong(k, server_cpu=1, client_cpu=0)
    k.run()
    return k


def w_drq_queued() -> Kernel:
    """The remote handshake finds the receiver busy: the sender queues there."""
    k = Kernel(cpus=2, check=True, trace=True)

    async def receiver(t: object) -> None:
        await t.compute(200_000)  # (beyond a quantum)  # type: ignore[attr-defined]
        await t.wait()  # type: ignore[attr-defined]

    async def sender(t: object, sel: int) -> None:
        await t.send(sel, words=[1])  # type: ignore[attr-defined]

    r = k.new_task("r").new_thread(receiver, name="r", cpu=1)
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(r), name="s", cpu=0)
    k.run()
    return k


def _drq_in_flight(action: str) -> Callable[[], Kernel]:
    def witness() -> Kernel:
        from test_mp_races import _in_flight

        k = Kernel(cpus=2, check=True, trace=True)
        _in_flight(k, {}, action)
        k.run()
        return k

    return witness


WITNESSES: dict[tuple[int, int], Callable[[], Kernel]] = {
    (READY, DRQ_WAIT): w_drq_pingpong,
    (DRQ_WAIT, RECEIVE_WAIT): w_drq_pingpong,
    (DRQ_WAIT, READY): w_drq_pingpong,
    (DRQ_WAIT, SEND_WAIT): w_drq_queued,
    (DRQ_WAIT, READY | CANCEL): _drq_in_flight("cancel"),
    (DRQ_WAIT, DEAD): _drq_in_flight("delete"),
    (READY, LOCK_WAIT): w_lock_wait,
    (LOCK_WAIT, READY): w_lock_wait,
    (LOCK_WAIT, DEAD): w_lock_wait_deleted,
    (RECEIVE_WAIT, IPC_TRANSFER): w_long_receiver_first,
    (SEND_WAIT, IPC_TRANSFER): w_long_symmetric_pull,
    (READY, IPC_TRANSFER): w_long_sender_driven,
    (READY, READY | RECV_IN_PROGRESS): w_long_symmetric_pull,
    (READY | RECV_IN_PROGRESS, READY): w_long_symmetric_pull,
    (IPC_TRANSFER, READY): w_long_receiver_first,
    (IPC_TRANSFER, RECEIVE_WAIT): w_long_call_pulled,
    (IPC_TRANSFER, READY | CANCEL): w_long_cancel_passive,
    (IPC_TRANSFER, IPC_TRANSFER | DYING): w_long_locked_delete,
    (IPC_TRANSFER | DYING, DEAD): w_long_locked_delete,
    (IPC_TRANSFER, DEAD): w_long_delete_in_fault,
    (READY | RECV_IN_PROGRESS, DEAD): w_long_delete_puller,
    (INACTIVE, READY): w_inactive_ready,
    (READY, SEND_WAIT): w_send_queued_then_taken,
    (READY, RECEIVE_WAIT): w_receive_first,
    (SEND_WAIT, READY): w_send_queued_then_taken,
    (SEND_WAIT, RECEIVE_WAIT): w_call_queued_then_taken,
    (RECEIVE_WAIT, READY): w_receive_first,
    (SEND_WAIT, READY | CANCEL): w_send_canceled,
    (RECEIVE_WAIT, READY | CANCEL): w_receive_canceled,
    (SEND_WAIT, READY | TIMEOUT): w_send_timeout,
    (RECEIVE_WAIT, READY | TIMEOUT): w_sleep_times_out,
    (READY | CANCEL, READY): w_receive_canceled,
    (READY | TIMEOUT, READY): w_sleep_times_out,
    (READY, DEAD): w_sleep_times_out,
    (SEND_WAIT, DEAD): w_send_wait_deleted,
    (RECEIVE_WAIT, DEAD): w_receive_wait_deleted,
    (READY | CANCEL, DEAD): w_canceled_deleted,
    (READY | TIMEOUT, DEAD): w_timed_out_deleted,
}

# Declared transitions that the kernel never takes (kernel bugs), as pair -> reason.
KERNEL_BUGS: dict[tuple[int, int], str] = {}


def _witness_params():  # type: ignore[no-untyped-def]
    for t in TRANSITIONS:
        pair = (t.old, t.new)
        if pair not in WITNESSES:
            continue  # reported by test_every_declared_transition_has_a_witness_program
        marks = ()
        if pair in KERNEL_BUGS:
            marks = (pytest.mark.xfail(strict=True, reason=KERNEL_BUGS[pair]),)
        yield pytest.param(pair, id=f"{state_name(t.old)}->{state_name(t.new)}", marks=marks)


def test_every_declared_transition_has_a_witness_program() -> None:
    missing = states.ALLOWED - set(WITNESSES)
    assert not missing, ("declared transitions without a witness program here: "
                         + ", ".join(f"{state_name(a)} -> {state_name(b)}" for a, b in missing))


@pytest.mark.parametrize("pair", list(_witness_params()))
def test_declared_transition_is_taken(pair: tuple[int, int], transition_coverage) -> None:  # type: ignore[no-untyped-def]
    k = WITNESSES[pair]()
    taken = transitions_taken(k)
    assert taken <= states.ALLOWED
    assert pair in taken, (f"{state_name(pair[0])} -> {state_name(pair[1])} not taken; "
                           f"taken: {sorted((state_name(a), state_name(b)) for a, b in taken)}")
    assert pair in transition_coverage, "the session recorder saw it too"


def test_receiver_deleted_cancels_its_senders() -> None:
    k = w_receiver_deleted_cancels_senders()
    assert (SEND_WAIT, READY | CANCEL) in transitions_taken(k)


def test_thread_deleted_before_it_ran() -> None:
    """A thread is ready from its creation: deleted before it ran, it goes ready -> dead."""
    k = _kernel()
    th = k.new_task("a").new_thread(_idle, name="never_ran")
    k.delete(th)
    res = k.run()
    assert th.state == DEAD
    assert (READY, DEAD) in transitions_taken(k)
    assert [(t.name, why) for t, why in res.died] == [("never_ran", "deleted")]


# --- the incremental check (check=True) ---------------------------------------------------

@pytest.mark.parametrize("corrupt,invariant", [(c, inv) for _, c, inv in CORRUPTIONS],
                         ids=[name for name, _, _ in CORRUPTIONS])
def test_incremental_check_detects_corruption_of_what_was_touched(corrupt, invariant: str) -> None:  # type: ignore[no-untyped-def]
    """Each planted corruption, on objects the last operation touched (as an operation
    marks them), is caught by the incremental check with the invariant named."""
    from l4sim.kernel.invariants import check_touched

    k, objs = _system()
    corrupt(k, objs)
    for obj in objs.values():
        k.touch(obj)
    with pytest.raises(KernelInvariantError) as info:
        check_touched(k)
    assert info.value.invariant == invariant, str(info.value)


def test_incremental_check_looks_only_at_what_was_touched() -> None:
    """An untouched corruption escapes the incremental check; the full one (which ends
    every checked run, and runs every so many checks) finds it."""
    from l4sim.kernel.invariants import check_touched

    k, objs = _system()
    objs["idle"].prio = 42  # type: ignore[attr-defined]
    check_touched(k)  # nothing touched: nothing seen
    with pytest.raises(KernelInvariantError):
        k.check_invariants()


def test_a_checked_run_ends_with_the_full_check() -> None:
    """A corruption no operation touches is found when the run ends."""
    k = Kernel(check=True)
    ta = k.new_task("a")

    async def sleeper(t):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.never())

    async def worker(t):  # type: ignore[no-untyped-def]
        for _ in range(3):
            await t.compute(1000)

    s = ta.new_thread(sleeper, name="sleeper")
    ta.new_thread(worker, name="worker")
    k.run(until=500)
    s.prio = 7  # type: ignore[attr-defined]
    with pytest.raises(KernelInvariantError) as info:
        k.run()
    assert info.value.invariant.startswith("priority inheritance")


@pytest.mark.parametrize("check", [True, "full"])
def test_checked_runs_agree(check) -> None:  # type: ignore[no-untyped-def]
    """The incremental and the full check pass the same correct run alike."""
    k = Kernel(check=check, trace=True)
    ta = k.new_task("a")

    async def server(t):  # type: ignore[no-untyped-def]
        r = await t.wait()
        while r.ok:
            r = await t.reply_and_wait(words=[r.words[0] + 1], receive_timeout=Timeout.us(50))

    async def client(t, d):  # type: ignore[no-untyped-def]
        for i in range(20):
            r = await t.call(d, words=[i], receive_timeout=Timeout.us(100))
            assert r.words == (i + 1,)

    srv = ta.new_thread(server, name="server")
    ta.new_thread(client, ta.add_cap(srv), name="client")
    res = k.run()
    assert res.reason == "done" and not res.died


def test_check_takes_true_false_or_full() -> None:
    with pytest.raises(ValueError):
        Kernel(check="some")  # type: ignore[arg-type]
