"""The example systems (examples/*.py): each built on a checked kernel, run, and its
outcome asserted exactly; and each run through `l4sim run FILE.py`.

Every kernel here runs with `check=True` (S19 invariants after every kernel operation),
except where a test compares a checked run with an unchecked one (the fast path).
"""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from helpers import EXAMPLES, load_example, thread_named
from l4sim import Kernel
from l4sim.cli import main

load = load_example
thread = thread_named


def checked(module: ModuleType, **build_kw: Any) -> tuple[Kernel, Any]:
    k = Kernel(check=True)
    module.build(k, **build_kw)
    return k, k.run()


# --- pingpong ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pingpong() -> ModuleType:
    return load("pingpong")


def round_trip_cycles(k: Kernel) -> int:
    """What the cost model says one call + reply_and_wait between two tasks costs: two
    one-word IPCs and two thread switches with an address-space switch each."""
    c = k.costs
    return 2 * c.ipc_cost(1) + 2 * (c.thread_switch + c.space_switch)


@pytest.mark.parametrize("rounds", [1, 7, 200])
def test_pingpong_values_and_exact_cycles(pingpong: ModuleType, rounds: int) -> None:
    k, res = checked(pingpong, rounds=rounds)
    ping, pong = thread(k, "ping"), thread(k, "pong")
    assert res.reason == "done" and res.died == []
    assert [t.name for t in res.blocked] == ["pong"]          # the server idles in its wait
    assert ping.returned
    out = ping.result
    assert out["value"] == rounds                             # each round trip added one
    assert out["reply_labels"] == [pong.tid]                  # direct IPC: label = tid
    rt = round_trip_cycles(k)
    assert rt == 896                                          # core2-sysenter, 1 word
    # The server ran first: its wait entered the kernel and switched to the client.
    start = k.costs.ipc_cost(0) + k.costs.thread_switch + k.costs.space_switch
    assert out["start"] == start
    assert out["end"] - out["start"] == rounds * rt
    assert pingpong.cycles_per_round_trip(k) == rt
    assert res.now == out["end"]
    assert res.steps == 1 + 2 * rounds                        # kernel entries: wait + 2/round


def test_pingpong_fast_path_same_as_checked_general_path(pingpong: ModuleType) -> None:
    fast = Kernel()
    assert fast.fastpath
    pingpong.build(fast, rounds=50)
    r_fast = fast.run()
    slow, r_slow = checked(pingpong, rounds=50)
    assert not slow.fastpath
    assert thread(fast, "ping").result == thread(slow, "ping").result
    assert (r_fast.reason, r_fast.now, r_fast.steps) == (r_slow.reason, r_slow.now, r_slow.steps)


def test_pingpong_report(pingpong: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    k, res = checked(pingpong, rounds=10)
    pingpong.report(k, res)
    out = capsys.readouterr().out
    assert "final value: 10 (expected 10)" in out
    assert "896.0 cycles" in out


# --- client/server with a gate per connection --------------------------------------------


@pytest.fixture(scope="module")
def client_server() -> ModuleType:
    return load("client_server")


def test_client_server_per_connection_state(client_server: ModuleType) -> None:
    k, res = checked(client_server)
    assert res.reason == "done" and res.died == []
    assert [t.name for t in res.blocked] == ["server"]
    want = client_server.expected()
    for name, _label, _prio, numbers in client_server.CLIENTS:
        th = thread(k, name)
        assert th.returned
        # Running totals of its own numbers only: no other connection's state leaked in.
        assert th.result == want[name]
        assert th.result["final"] == sum(numbers)
    log = thread(k, "server").args[0]
    labels = {lab for _n, lab, _p, _ns in client_server.CLIENTS}
    assert len(labels) == len(client_server.CLIENTS)          # distinct connection labels
    # The server saw exactly the gate labels, one 'add' per number and one 'close' each.
    assert {conn for _t, _op, conn, _tot in log} == labels
    for _name, label, _prio, numbers in client_server.CLIENTS:
        ops = [(op, total) for _t, op, conn, total in log if conn == label]
        running = [sum(numbers[:i + 1]) for i in range(len(numbers))]
        assert ops == [("add", s) for s in running] + [("close", sum(numbers))]
    # The connections really interleaved at the server (state kept apart, not in sequence).
    order = [conn for _t, _op, conn, _tot in log]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches > len(labels)
    times = [t for t, *_ in log]
    assert times == sorted(times)


def test_client_server_report(client_server: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    k, res = checked(client_server)
    client_server.report(k, res)
    out = capsys.readouterr().out
    assert "client carol: running totals [100, 300], final 300" in out


def test_client_server_label_is_the_gate_not_the_thread(client_server: ModuleType) -> None:
    """A client cannot present another label: the same client code behind another gate
    lands in another connection."""
    k = Kernel(check=True)
    stask = k.new_task("server")
    log: list[tuple[int, str, int, int]] = []
    srv = stask.new_thread(client_server.server, log, name="server")
    ctask = k.new_task("c")
    g1 = ctask.add_cap(k.new_gate(srv, label=0x111))
    g2 = ctask.add_cap(k.new_gate(srv, label=0x222))
    a = ctask.new_thread(client_server.client, g1, [1, 2], name="a")
    b = ctask.new_thread(client_server.client, g2, [5], name="b")
    res = k.run()
    assert res.reason == "done"
    assert a.result == {"totals": [1, 3], "final": 3}
    assert b.result == {"totals": [5], "final": 5}
    assert {conn for _t, _op, conn, _tot in log} == {0x111, 0x222}


def test_client_server_with_reply_and_wait(client_server: ModuleType) -> None:
    """The canonical server loop, reply_and_wait, with the example's clients (a caller
    queues while the server computes for another): every client must finish."""

    async def server(t: Any) -> None:
        state: dict[int, int] = {}
        r = await t.wait()
        while True:
            if not r.ok:
                r = await t.wait()
                continue
            await t.compute(client_server.WORK_PER_REQUEST)
            if r.tag.label == client_server.ADD:
                state[r.label] = state.get(r.label, 0) + r.words[0]
                r = await t.reply_and_wait(words=[state[r.label]])
            else:
                r = await t.reply_and_wait(words=[state.pop(r.label, 0)])

    async def client(t: Any, gate: int, numbers: list[int]) -> int:
        for n in numbers:
            r = await t.call(gate, words=[n], label=client_server.ADD)
            assert r.ok
            await t.sleep(client_server.Timeout.us(1))
        r = await t.call(gate, label=client_server.CLOSE)
        assert r.ok
        return int(r.words[0])

    k = Kernel(check=True)
    srv = k.new_task("server").new_thread(server, name="server")
    for name, label, prio, numbers in client_server.CLIENTS:
        task = k.new_task(name)
        task.new_thread(client, task.add_cap(k.new_gate(srv, label=label)), numbers,
                        name=name, priority=prio)
    res = k.run()
    assert res.reason == "done", res
    for name, _label, _prio, numbers in client_server.CLIENTS:
        assert thread(k, name).result == sum(numbers)


# --- mutual exclusion with a synchronization thread ----------------------------------------


@pytest.fixture(scope="module")
def mutex() -> ModuleType:
    return load("mutex")


def test_mutex_no_overlap_no_lost_update(mutex: ModuleType) -> None:
    k, res = checked(mutex)
    assert res.reason == "done" and res.died == []
    assert [t.name for t in res.blocked] == ["sync"]
    n = len(mutex.WORKERS) * mutex.ROUNDS
    sections = mutex.sections_of(k)
    assert len(sections) == n
    assert mutex.counter_of(k) == n
    assert mutex.overlaps(sections) == []
    for _name, asked, entered, left in sections:
        assert asked <= entered < left
        assert left - entered >= mutex.INSIDE_CYCLES               # the work was done inside
    for name, _prio in mutex.WORKERS:
        assert thread(k, name).result == mutex.ROUNDS
    # There was contention: workers found the section held and waited in the sync
    # thread's sender queue.
    assert len(mutex.waited(sections)) >= 3


def test_mutex_grants_by_priority_then_fifo(mutex: ModuleType) -> None:
    """The waiting workers sit in the sync thread's sender queue: sorted by priority,
    FIFO within one (S7). At each release, the next grant goes to the highest-priority
    worker that was waiting, the earliest one among equals."""
    k, _ = checked(mutex)
    prio = dict(mutex.WORKERS)
    sections = sorted(mutex.sections_of(k), key=lambda s: s[2])
    checked_grants = 0
    for prev, cur in itertools.pairwise(sections):
        release = prev[3]
        waiting = [s for s in sections if s[1] <= release < s[2]]
        if len(waiting) < 2:
            continue
        best = min(waiting, key=lambda s: (-prio[s[0]], s[1]))
        assert cur == best, (cur, waiting)
        checked_grants += 1
    assert checked_grants >= 3


def test_mutex_sync_log_alternates_grant_release(mutex: ModuleType) -> None:
    k, _ = checked(mutex)
    log = thread(k, "sync").args[1]
    kinds = [kind for _t, kind, _tid in log]
    assert kinds == ["grant", "release"] * (len(mutex.WORKERS) * mutex.ROUNDS)
    for (_t1, _g, who1), (_t2, _r, who2) in zip(log[::2], log[1::2], strict=True):
        assert who1 == who2                                    # released by its holder


def test_mutex_without_sync_overlaps_and_loses_updates(mutex: ModuleType) -> None:
    """The control: without the protocol the same workers overlap and lose updates, so
    the checks above are not vacuous."""
    k, res = checked(mutex, mutex=False)
    assert res.died == []
    sections = mutex.sections_of(k)
    assert len(sections) == len(mutex.WORKERS) * mutex.ROUNDS
    assert mutex.overlaps(sections) != []
    assert mutex.counter_of(k) < len(mutex.WORKERS) * mutex.ROUNDS
    with pytest.raises(AssertionError):
        mutex.report(k, res)


# --- priority inversion ----------------------------------------------------------------


@pytest.fixture(scope="module")
def inversion() -> ModuleType:
    return load("priority_inversion")


def test_priority_inversion_bounded_with_inheritance(inversion: ModuleType) -> None:
    on = inversion.latency(True)
    off = inversion.latency(False)
    work, hog = inversion.SERVER_WORK, inversion.HOG_WORK
    # With inheritance: at least its own request, at most the rest of the low one too.
    assert work <= on <= 2 * work + 10_000
    # Without: the hog's whole computation comes in between.
    assert hog + work <= off <= hog + 2 * work + 10_000
    assert off > 50 * on


@pytest.mark.parametrize("pi", [True, False])
def test_priority_inversion_checked_runs(inversion: ModuleType, pi: bool) -> None:
    k, res = inversion.run(pi, check=True)
    assert res.reason == "done" and res.died == []
    r = inversion.results(k)
    assert r["high"]["answer"] == 42 and r["low"]["answer"] == 2
    assert r["high"]["latency"] == inversion.latency(pi)        # checked == unchecked run
    assert r["high"]["start"] >= inversion.HIGH_ARRIVES
    if pi:
        # The hog could not start before the high client had its answer.
        assert r["high"]["end"] < r["hog"]["start"]
        # The low client, answered first, runs only when high and medium are done.
        assert r["low"]["end"] > r["hog"]["end"]
    else:
        # The hog ran from its wake-up to its end while the high client waited.
        assert r["hog"]["start"] < inversion.HOG_ARRIVES + 1_000
        assert r["hog"]["end"] < r["high"]["end"]
    inversion.report(k, res)


def test_priority_inversion_build_keyword(inversion: ModuleType) -> None:
    k = Kernel(check=True, priority_inheritance=False)
    with pytest.raises(ValueError):
        inversion.build(k, priority_inheritance=True)
    inversion.build(k, priority_inheritance=False)
    assert k.run().reason == "done"


# --- through the command line ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.py")))
def test_examples_run_through_cli(name: str) -> None:
    """Every program in examples/ runs through `l4sim run` and passes its own report."""
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(EXAMPLES / f"{name}.py"), "--check"])
    assert result.exit_code == 0, result.output
    assert "reason" in result.output and "done" in result.output
    assert "died" in result.output


def test_cli_run_prints_the_examples_report() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(EXAMPLES / "pingpong.py"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "final value: 1000 (expected 1000)" in result.output
    assert "896.0 cycles" in result.output
