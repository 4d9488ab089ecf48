"""S1: the IPC fast path is proven equivalent to the general path.

Every scenario runs twice, on `Kernel(fastpath=True)` and `Kernel(fastpath=False)` (both
without check and trace, which turn the fast path off), and every observable must be the
same: each thread's sequence of results (operation, error, label, words) with the
simulated time at which it returned (`t.now`), each thread's return value and final state,
the run results (reason, time, kernel entries, died) and the final `k.now`.

The fixed scenarios cover register ping-pong in one and in two tasks, 8 and 63 words,
gates with labels, timeouts, a server with queued senders (the fast path must fall back),
priorities with a higher-priority thread ready, timeslice ends, cancels and deletions, and
runs cut by `max_steps`. Hypothesis generates further small programs.

For the scenarios in which the fast path should apply, the test also counts entries into
the general path (`ipc.ipc`), to show that the fast path was taken at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import l4sim.kernel.fastpath as fastpath_module
import l4sim.kernel.ipc as ipc_module
from l4sim import IpcError, Kernel, Timeout
from l4sim.kernel.sched import Cpu

E = IpcError

# --- programs as data ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    priority: int = 100
    style: str = "rw"          # "rw": reply_and_wait loop; "rw_timeout": with a receive
                               # timeout; "reply_wait": reply, then wait
    work: int = 0              # compute cycles per request
    timeout: int = 50_000      # receive timeout of "rw_timeout", in cycles
    same_task: bool = True     # in the clients' task (one address space) or its own
    cpu: int = 0               # its CPU (with several)


@dataclass(frozen=True)
class ClientSpec:
    priority: int = 100
    # ("call", server, via_gate, nwords, label, receive_timeout_cycles | None
    #  [, send_timeout_cycles | None]),
    # ("send", server, via_gate, nwords, send_timeout_cycles | None),
    # ("compute", cycles), ("sleep", cycles),
    # with several CPUs: ("migrate", cpu) itself, ("move", client, cpu) another by ex_regs
    ops: tuple[tuple[Any, ...], ...] = ()
    cpu: int = 0


@dataclass(frozen=True)
class Program:
    servers: tuple[ServerSpec, ...]
    clients: tuple[ClientSpec, ...]
    timeslice: int | None = None
    # (time, "cancel" | "delete", ("server" | "client", index))
    host_events: tuple[tuple[int, str, tuple[str, int]], ...] = ()
    # ("all",), ("steps", n): run(max_steps=n) until done, ("until", delta): run(until=...)
    run_mode: tuple[Any, ...] = ("all",)
    extra_threads: tuple[tuple[str, int, int], ...] = ()  # ("ticker"|"hog", priority, cycles)
    cpus: int = 1  # (the extra threads run on the last one; "migrate" host events as well)


@dataclass
class Outcome:
    """Everything observable about one run."""

    logs: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    runs: list[tuple[Any, ...]] = field(default_factory=list)
    now: int = 0
    general_entries: int = 0


def _res(op: str, r: Any, now: int) -> tuple[Any, ...]:
    return (op, int(r.error), r.label, r.words, now)


def _reply_words(r: Any) -> list[int]:
    words = list(r.words[:61])
    return [len(r.words), r.label & 0xFFFF_FFFF, *(w ^ 0x5A5A for w in words)]


async def _server(t: Any, log: list[tuple[Any, ...]], spec: ServerSpec) -> str:
    r = await t.wait()
    while True:
        log.append(_res("recv", r, t.now))
        if r.error not in (E.OK, E.REMSGCUT):
            r = await t.wait()
            continue
        if spec.work:
            await t.compute(spec.work)
        words = _reply_words(r)
        if spec.style == "reply_wait":
            rr = await t.reply(words=words)
            log.append(_res("reply", rr, t.now))
            r = await t.wait()
        elif spec.style == "rw_timeout":
            r = await t.reply_and_wait(words=words, receive_timeout=Timeout.cycles(spec.timeout))
        else:
            r = await t.reply_and_wait(words=words)
        if r.error == E.ENOT_EXISTENT:  # the reply failed (the caller gave up): wait afresh
            log.append(_res("reply_failed", r, t.now))
            r = await t.wait()


async def _client(t: Any, log: list[tuple[Any, ...]], spec: ClientSpec,
                  sels: dict[tuple[int, bool], int], peers: dict[int, int]) -> str:
    for i, op in enumerate(spec.ops):
        kind = op[0]
        if kind == "call":
            _, srv, via_gate, n, label, rto, *more = op
            sto = more[0] if more else None  # a send timeout, optional
            words = [(i << 8 | j) & 0xFFFF for j in range(n)]
            if rto is None and sto is None:
                r = await t.call(sels[srv, via_gate], words=words, label=label)
            else:
                r = await t.call(sels[srv, via_gate], words=words, label=label,
                                 send_timeout=Timeout.never() if sto is None else Timeout.cycles(sto),
                                 receive_timeout=Timeout.never() if rto is None else Timeout.cycles(rto))
            log.append(_res("call", r, t.now))
        elif kind == "send":
            _, srv, via_gate, n, sto = op
            words = [(i << 8 | j) & 0xFFFF for j in range(n)]
            to = Timeout.never() if sto is None else Timeout.cycles(sto)
            r = await t.send(sels[srv, via_gate], words=words, send_timeout=to)
            log.append(_res("send", r, t.now))
        elif kind == "compute":
            await t.compute(op[1])
            log.append(("compute", t.now))
        elif kind == "sleep":
            r = await t.sleep(Timeout.cycles(op[1]))
            log.append(_res("sleep", r, t.now))
        elif kind == "migrate":
            await t.migrate(op[1])
            log.append(("migrate", t.now))
        elif kind == "move":
            err = await t.ex_regs(peers[op[1]], cpu=op[2])
            log.append(("move", int(err), t.now))
    return "done"


async def _ticker(t: Any, log: list[tuple[Any, ...]], cycles: int) -> None:
    """A higher-priority periodic thread: wakes, works a little, sleeps."""
    for _ in range(20):
        r = await t.sleep(Timeout.cycles(cycles))
        await t.compute(cycles // 4)
        log.append(_res("tick", r, t.now))


async def _hog(t: Any, log: list[tuple[Any, ...]], cycles: int) -> None:
    for _ in range(10):
        await t.compute(cycles)
        log.append(("hog", t.now))


def run_program(prog: Program, *, fastpath: bool, check: bool = False, trace: bool = False,
                seed: int = 0) -> tuple[Outcome, Kernel]:
    k = Kernel(fastpath=fastpath, check=check, trace=trace, timeslice=prog.timeslice, seed=seed,
               cpus=prog.cpus)
    last = prog.cpus - 1
    out = Outcome()
    client_task = k.new_task("clients")
    threads: dict[tuple[str, int], Any] = {}
    servers = []
    for i, spec in enumerate(prog.servers):
        task = client_task if spec.same_task else k.new_task(f"server{i}")
        log = out.logs.setdefault(f"srv{i}", [])
        th = task.new_thread(_server, log, spec, name=f"srv{i}", priority=spec.priority,
                             cpu=spec.cpu)
        threads["server", i] = th
        servers.append(th)
    sels: dict[tuple[int, bool], int] = {}
    for i, th in enumerate(servers):
        sels[i, False] = client_task.add_cap(th)
        sels[i, True] = client_task.add_cap(k.new_gate(th, label=0x100 + 0x10 * i))
    peers: dict[int, int] = {}  # client index -> its selector (for "move")
    for i, spec in enumerate(prog.clients):
        log = out.logs.setdefault(f"cli{i}", [])
        threads["client", i] = client_task.new_thread(_client, log, spec, sels, peers,
                                                      name=f"cli{i}", priority=spec.priority,
                                                      cpu=spec.cpu)
        peers[i] = client_task.add_cap(threads["client", i])
    for i, (kind, prio, cycles) in enumerate(prog.extra_threads):
        log = out.logs.setdefault(f"{kind}{i}", [])
        body = _ticker if kind == "ticker" else _hog
        threads[kind, i] = client_task.new_thread(body, log, cycles, name=f"{kind}{i}",
                                                  priority=prio, cpu=last)

    def host(action: str, th: Any) -> Callable[[], None]:
        def cb() -> None:
            if not th.alive:
                return
            if action == "migrate":  # (to the next CPU, unless it is running or ended)
                if th.cpu.current is not th and th.state_name != "dead":
                    th.migrate((th.cpu.index + 1) % prog.cpus)
            else:
                (k.cancel if action == "cancel" else k.delete)(th)
        return cb

    def spawn(cpu: int, n: int) -> Callable[[], None]:
        def cb() -> None:  # a thread above the others, made by the host on `cpu`
            log = out.logs.setdefault(f"spawn{n}", [])
            threads["spawn", n] = client_task.new_thread(_hog, log, 1_000, name=f"spawn{n}",
                                                         priority=200, cpu=cpu)
        return cb

    for n, (when, action, who) in enumerate(prog.host_events):
        if action == "spawn":
            k.at(when, spawn(who[1], n))
        elif who in threads:
            k.at(when, host(action, threads[who]))

    count = [0]
    orig_ipc = ipc_module.ipc

    def counting(*a: Any, **kw: Any) -> Any:
        count[0] += 1
        return orig_ipc(*a, **kw)

    ipc_module.ipc = counting  # type: ignore[assignment]
    fastpath_module.ipc = counting  # type: ignore[assignment]
    try:
        mode = prog.run_mode
        for _ in range(10_000):
            if mode[0] == "steps":
                res = k.run(max_steps=mode[1])
            elif mode[0] == "until":
                res = k.run(until=k.now + mode[1])
            else:
                res = k.run()
            out.runs.append((res.reason, res.now, res.steps,
                             sorted(t.name for t in res.blocked),
                             [(t.name, why) for t, why in res.died]))
            if res.reason in ("done", "deadlock"):
                break
        else:  # pragma: no cover
            raise AssertionError("the program did not end")
    except BaseException:
        for th in threads.values():  # a kernel error stopped the run: end the coroutines
            coro = getattr(th, "coro", None)
            if coro is not None:
                coro.close()
        raise
    finally:
        ipc_module.ipc = orig_ipc  # type: ignore[assignment]
        fastpath_module.ipc = orig_ipc  # type: ignore[assignment]
    out.general_entries = count[0]
    for th in list(threads.values()):
        out.results[th.name] = th.result
        out.states[th.name] = th.state_name
    out.now = k.now
    return out, k


def assert_same(fast: Outcome, slow: Outcome, what: tuple[str, str]) -> None:
    """Every observable of two runs of one program is the same."""
    for name in slow.logs:
        a, b = fast.logs[name], slow.logs[name]
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            assert x == y, (f"{name}: result {i} differs: {what[0]} {x}, {what[1]} {y}\n"
                            f"{what[0]}: {a[max(0, i - 3):i + 2]}\n"
                            f"{what[1]}: {b[max(0, i - 3):i + 2]}")
        assert len(a) == len(b), f"{name}: {len(a)} results on the {what[0]}, {len(b)} on the {what[1]}"
    assert fast.results == slow.results
    assert fast.states == slow.states
    assert fast.runs == slow.runs
    assert fast.now == slow.now


def assert_equivalent(prog: Program) -> tuple[Outcome, Outcome]:
    """The fast path against the general path; and the general path as it runs unchecked
    (with its common cases written out inline) against the same path checked, which takes
    none of those inline cases."""
    fast, _ = run_program(prog, fastpath=True)
    slow, _ = run_program(prog, fastpath=False)
    assert_same(fast, slow, ("fast path", "general path"))
    checked, _ = run_program(prog, fastpath=False, check=True)
    assert_same(slow, checked, ("general path", "checked general path"))
    assert slow.general_entries == checked.general_entries
    return fast, slow


def assert_fast_path_taken(fast: Outcome, slow: Outcome) -> None:
    assert fast.general_entries * 2 < slow.general_entries, (
        f"the fast path was hardly used: {fast.general_entries} general-path entries with it, "
        f"{slow.general_entries} without")


def _pingpong(rounds: int, nwords: int, *, same_task: bool = True, via_gate: bool = False,
              label: int = 0, server: ServerSpec | None = None, client_prio: int = 100,
              **kw: Any) -> Program:
    srv = server or ServerSpec(same_task=same_task)
    ops = tuple(("call", 0, via_gate, nwords, label, None) for _ in range(rounds))
    return Program((srv,), (ClientSpec(client_prio, ops),), **kw)


# --- fixed scenarios -------------------------------------------------------------------------


@pytest.mark.parametrize("same_task", [True, False], ids=["same_task", "cross_task"])
@pytest.mark.parametrize("nwords", [0, 1, 2, 3, 8, 63])
def test_register_and_utcb_pingpong(same_task: bool, nwords: int) -> None:
    fast, slow = assert_equivalent(_pingpong(40, nwords, same_task=same_task))
    assert_fast_path_taken(fast, slow)
    assert [e[1] for e in slow.logs["cli0"]] == [0] * 40
    assert all(len(e[3]) == 2 + min(nwords, 61) for e in slow.logs["cli0"])


def test_gates_with_labels() -> None:
    ops_a = tuple(("call", 0, True, 2, 0, None) for _ in range(15))
    ops_b = tuple(("call", 0, True, 3, 7, None) for _ in range(15))
    ops_c = tuple(("call", 1, bool(i % 2), 1, 0, None) for i in range(15))
    prog = Program((ServerSpec(same_task=False), ServerSpec(same_task=True)),
                   (ClientSpec(100, ops_a), ClientSpec(100, ops_b), ClientSpec(100, ops_c)))
    fast, slow = assert_equivalent(prog)
    assert_fast_path_taken(fast, slow)
    labels = {e[2] for e in slow.logs["srv0"]}
    assert labels == {0x100}, "the server sees the gate's label"
    assert {e[2] for e in slow.logs["srv1"]} >= {0x110}


def test_mixed_with_timeouts() -> None:
    ops = []
    for i in range(30):
        if i % 3 == 0:
            ops.append(("call", 0, False, 2, 0, 5_000))      # a receive timeout: general path
        elif i % 3 == 1:
            ops.append(("call", 0, False, 2, 0, None))
        else:
            ops.append(("sleep", 1_000 + 37 * i))
    prog = Program((ServerSpec(style="rw", work=4_000),
                    ServerSpec(style="rw_timeout", timeout=30_000, work=9_000)),
                   (ClientSpec(100, tuple(ops)),
                    ClientSpec(100, tuple(("call", 1, True, 1, 0, 6_000 if i % 2 else None)
                                          for i in range(20)))))
    _, slow = assert_equivalent(prog)
    errors = {e[1] for e in slow.logs["cli0"] + slow.logs["cli1"]}
    assert E.RETIMEOUT in errors, "some receive timeouts expire"


@pytest.mark.parametrize("rto", [None, 0, 1, 800, 3_000, 10**9])
@pytest.mark.parametrize("sto", [None, 0, 5_000])
@pytest.mark.parametrize("server_timeout", [None, 0, 1_000, 10**9])
def test_calls_and_replies_with_finite_timeouts(rto: int | None, sto: int | None,
                                                server_timeout: int | None) -> None:
    """Finite (and zero) send and receive timeouts on both sides: the fast path takes the
    calls whose reply wait has time left (arming the timer when the caller blocks and
    cancelling it with the reply), and the replies whose next wait has; it falls back for
    the rest. The same results and simulated times either way, expiries included."""
    server = (ServerSpec(work=700) if server_timeout is None
              else ServerSpec(style="rw_timeout", timeout=server_timeout, work=700))
    ops = tuple(("call", 0, i % 2 == 0, 2, 0, rto, sto) for i in range(12))
    fast, slow = assert_equivalent(Program((server,), (ClientSpec(100, ops),
                                                        ClientSpec(100, ops[:5]))))
    if rto in (None, 10**9) and server_timeout in (None, 10**9):
        assert_fast_path_taken(fast, slow)


def test_server_with_queued_senders_falls_back() -> None:
    clients = tuple(ClientSpec(100, tuple(("call", 0, False, 2, 0, None) for _ in range(10)))
                    for _ in range(3))
    prog = Program((ServerSpec(work=20_000),), clients)
    _, slow = assert_equivalent(prog)
    assert sum(e[0] == "recv" for e in slow.logs["srv0"]) == 30


def test_senders_and_callers_mixed() -> None:
    a = tuple(("send", 0, False, 2, None) if i % 2 else ("call", 0, True, 2, 0, None)
              for i in range(16))
    b = tuple(("send", 0, True, 1, 3_000) if i % 3 == 0 else ("call", 0, False, 1, 0, None)
              for i in range(16))
    prog = Program((ServerSpec(style="reply_wait", work=2_000),),
                   (ClientSpec(100, a), ClientSpec(100, b)))
    assert_equivalent(prog)


@pytest.mark.parametrize("client_prio,server_prio", [(100, 100), (200, 100), (100, 200), (50, 100)])
def test_priorities_with_a_higher_priority_thread_ready(client_prio: int, server_prio: int) -> None:
    """A periodic thread at priority 150 wakes during the ping-pong: the fast path must not
    switch to the partner when it is ready, and priority inheritance must be the same."""
    prog = _pingpong(60, 2, server=ServerSpec(priority=server_prio, work=1_500),
                     client_prio=client_prio, extra_threads=(("ticker", 150, 3_000),))
    assert_equivalent(prog)


def test_timeslice_ends_during_pingpong() -> None:
    """Small timeslices: two ping-pong pairs and a hog at one priority take turns."""
    p1 = ClientSpec(100, tuple(("call", 0, False, 1, 0, None) for _ in range(25)))
    p2 = ClientSpec(100, tuple(("call", 1, False, 2, 0, None) for _ in range(25)))
    prog = Program((ServerSpec(), ServerSpec(same_task=False)), (p1, p2), timeslice=700,
                   extra_threads=(("hog", 100, 2_500),))
    _, slow = assert_equivalent(prog)
    order = [name for name, log in sorted(slow.logs.items()) for _ in log]
    assert len(set(order)) > 2


@pytest.mark.parametrize("victim", [("client", 0), ("server", 0), ("client", 1)])
@pytest.mark.parametrize("action", ["cancel", "delete"])
def test_cancel_and_delete_during_pingpong(action: str, victim: tuple[str, int]) -> None:
    clients = (ClientSpec(100, tuple(("call", 0, False, 2, 0, None) for _ in range(30))),
               ClientSpec(100, tuple(("call", 0, True, 1, 0, None) for _ in range(30))))
    events = tuple((t, action, victim) for t in (3_000, 7_777, 12_345))
    prog = Program((ServerSpec(work=500),), clients, host_events=events)
    assert_equivalent(prog)


def test_cancel_in_a_server_loop_with_timeouts() -> None:
    clients = (ClientSpec(120, tuple(("call", 0, False, 2, 0, None) for _ in range(20))),
               ClientSpec(100, tuple(("call", 0, False, 2, 0, 20_000) for _ in range(20))))
    events = tuple((t, "cancel", who) for t, who in
                   ((2_000, ("server", 0)), (9_000, ("client", 1)), (15_000, ("client", 0))))
    prog = Program((ServerSpec(style="rw_timeout", timeout=4_000, work=3_000),), clients,
                   host_events=events)
    assert_equivalent(prog)


@pytest.mark.parametrize("steps", [1, 2, 3, 7])
def test_runs_cut_by_max_steps(steps: int) -> None:
    """`run(max_steps=n)` counts kernel entries: the fast path must count and stop alike."""
    assert_equivalent(_pingpong(20, 2, run_mode=("steps", steps)))


@pytest.mark.parametrize("delta", [500, 3_000])
def test_runs_cut_by_time(delta: int) -> None:
    assert_equivalent(_pingpong(20, 2, run_mode=("until", delta),
                                extra_threads=(("ticker", 150, 2_000),)))


def _stepped_pingpong(at_step: int, **kw: Any) -> tuple[list[tuple[Any, ...]], int, int]:
    """A ping-pong driven by `k.step()`; after step `at_step` the host makes a thread of
    higher priority. The log, the end time, and how many entries the log had then."""
    k = Kernel(**kw)
    log: list[tuple[Any, ...]] = []
    made = [-1]

    async def server(t: Any) -> None:
        r = await t.wait()
        while True:
            r = await t.reply_and_wait(words=[r.words[0] + 1])

    async def client(t: Any, srv: int) -> None:
        for i in range(6):
            r = await t.call(srv, words=[i])
            log.append(("cli", r.words, t.now))

    async def high(t: Any) -> None:
        log.append(("high", t.now))

    task = k.new_task("t")
    task.new_thread(client, task.add_cap(task.new_thread(server, name="srv")), name="cli")
    n = 0
    while k.step() is not None:
        n += 1
        if n == at_step:
            made[0] = len(log)
            task.new_thread(high, name="high", priority=200)
    return log, k.now, made[0]


@pytest.mark.parametrize("at_step", range(1, 14))
def test_a_thread_above_made_by_the_host_between_two_steps(at_step: int) -> None:
    """Between two `k.step()`s the host makes a thread above a ping-pong whose next step
    resumes a thread after its switch: that thread's IPC returns through the preemption
    point, and the new thread runs before the ping-pong logs again, on both paths (the
    fast path's resume had returned quietly on one CPU, as if nobody could come between)."""
    fast = _stepped_pingpong(at_step)
    general = _stepped_pingpong(at_step, fastpath=False)
    checked = _stepped_pingpong(at_step, fastpath=False, check=True)
    assert fast == general == checked
    log, _, made = general
    assert log[made][0] == "high"


# --- several CPUs ----------------------------------------------------------------------------
# The fast path also serves a kernel of several CPUs, for partners on one CPU. Other CPUs'
# steps may then come between a switch and the resume of the thread it blocked: the thread
# may have moved, or a thread above it become ready on its CPU.


def test_pingpong_on_one_cpu_of_two() -> None:
    fast, slow = assert_equivalent(_pingpong(40, 2, cpus=2))
    assert_fast_path_taken(fast, slow)


def test_pingpongs_on_each_cpu_and_across() -> None:
    """A pair on each CPU, and a client on CPU 1 calling the server of CPU 0 (its calls
    are remote requests on both paths)."""
    ops = tuple(("call", 0, False, 2, 0, None) for _ in range(25))
    ops1 = tuple(("call", 1, i % 2 == 1, 3, 0, None) for i in range(25))
    prog = Program((ServerSpec(work=900), ServerSpec(same_task=False, cpu=1, work=300)),
                   (ClientSpec(100, ops), ClientSpec(100, ops1, cpu=1),
                    ClientSpec(100, ops[:10], cpu=1)), cpus=2)
    fast, slow = assert_equivalent(prog)
    assert_fast_path_taken(fast, slow)
    assert len(slow.logs["srv0"]) == 35 and len(slow.logs["srv1"]) == 25


@pytest.mark.parametrize("when", [2_000, 2_600, 3_100, 7_000])
def test_a_thread_above_made_ready_on_the_cpu_by_the_host_during_a_switch(when: int) -> None:
    """The host (on CPU 0) makes a thread of higher priority on CPU 1 while a ping-pong
    runs there: a caller or server resumed after it must be preempted on both paths."""
    prog = _pingpong(30, 2, server=ServerSpec(cpu=1, work=200), cpus=2,
                     host_events=((when, "spawn", ("cpu", 1)), (when + 4_321, "spawn", ("cpu", 1))))
    prog = Program(prog.servers, (ClientSpec(100, prog.clients[0].ops, cpu=1),), cpus=2,
                   host_events=prog.host_events)
    _, slow = assert_equivalent(prog)
    assert slow.logs["spawn0"] and slow.logs["spawn1"]


@pytest.mark.parametrize("when", [1_000, 2_500, 4_000, 9_000])
def test_callers_moved_to_the_other_cpu(when: int) -> None:
    """A client on CPU 1 moves a caller of CPU 0 to CPU 1 and back (ex_regs with `cpu=`)
    while it is blocked or just woken, and the host moves it too."""
    ping = tuple(("call", 0, False, 2, 0, None) for _ in range(30))
    mover = (("compute", when), ("move", 0, 1), ("compute", 2_000), ("move", 0, 0),
             ("compute", 1_500), ("move", 0, 1))
    prog = Program((ServerSpec(work=600),), (ClientSpec(100, ping), ClientSpec(100, mover, cpu=1)),
                   host_events=((when + 3_333, "migrate", ("client", 0)),), cpus=2)
    _, slow = assert_equivalent(prog)
    assert [e[1] for e in slow.logs["cli1"] if e[0] == "move"] == [0, 0, 0]


# --- random programs -------------------------------------------------------------------------

PRIOS = st.sampled_from([50, 100, 100, 150])


@st.composite
def programs(draw: st.DrawFn, *, timers: bool = True, max_clients: int = 3,
             cpus: int = 1) -> Program:
    """Small random programs. With `timers=False` nothing ever arms a timer or a host event
    (no sleeps, no finite timeouts, no host events, no periodic threads, long timeslices).
    With several `cpus` every thread has a CPU, and clients move themselves and others."""
    nserv = draw(st.integers(1, 2))
    cpu = st.integers(0, cpus - 1)
    styles = ["rw", "rw", "rw_timeout", "reply_wait"] if timers else ["rw", "rw", "reply_wait"]
    servers = tuple(ServerSpec(priority=draw(PRIOS),
                               style=draw(st.sampled_from(styles)),
                               work=draw(st.sampled_from([0, 0, 500, 5_000, 30_000])),
                               timeout=draw(st.sampled_from([0, 2_000, 40_000])),
                               same_task=draw(st.booleans()), cpu=draw(cpu))
                    for _ in range(nserv))
    rtos = [None, None, None, 0, 3_000, 50_000] if timers else [None]
    stos = [None, 0, 5_000] if timers else [None, 0]
    ops = [
        st.tuples(st.just("call"), st.integers(0, nserv - 1), st.booleans(),
                  st.sampled_from([0, 1, 2, 3, 4, 8, 63]), st.sampled_from([0, 0, 5]),
                  st.sampled_from(rtos), st.sampled_from(stos)),
        st.tuples(st.just("send"), st.integers(0, nserv - 1), st.booleans(),
                  st.integers(0, 4), st.sampled_from(stos)),
        st.tuples(st.just("compute"), st.sampled_from([100, 3_000, 40_000])),
    ]
    if timers:
        ops.append(st.tuples(st.just("sleep"), st.sampled_from([0, 1_000, 20_000])))
    nclients = draw(st.integers(1, max_clients))
    if cpus > 1:
        ops.append(st.tuples(st.just("migrate"), cpu))
        ops.append(st.tuples(st.just("move"), st.integers(0, nclients - 1), cpu))
    op = st.one_of(*ops)
    clients = tuple(ClientSpec(draw(PRIOS), tuple(draw(st.lists(op, min_size=1, max_size=12))),
                               draw(cpu))
                    for _ in range(nclients))
    if not timers:
        run_mode = draw(st.sampled_from([("all",), ("all",), ("steps", 1), ("steps", 3)]))
        return Program(servers, clients, None, (), run_mode, (), cpus)
    who = st.one_of(st.tuples(st.just("server"), st.integers(0, nserv - 1)),
                    st.tuples(st.just("client"), st.integers(0, len(clients) - 1)))
    actions = ["cancel", "cancel", "delete"] + (["migrate", "spawn"] if cpus > 1 else [])
    events = tuple(draw(st.lists(st.tuples(st.integers(0, 150_000), st.sampled_from(actions),
                                           who),
                                 max_size=3)))
    events = tuple((w, a, ("cpu", cpus - 1) if a == "spawn" else x) for w, a, x in events)
    extra = tuple(draw(st.lists(st.tuples(st.sampled_from(["ticker", "hog"]), PRIOS,
                                          st.sampled_from([1_500, 7_000])), max_size=1)))
    timeslice = draw(st.sampled_from([None, None, 900, 5_000]))
    run_mode = draw(st.sampled_from([("all",), ("all",), ("steps", 3)]))
    return Program(servers, clients, timeslice, events, run_mode, extra, cpus)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(timers=False))
def test_random_programs_are_equivalent(prog: Program) -> None:
    """Priorities, gates, 0-63 words, sends, calls, computation, queued senders, max_steps."""
    assert_equivalent(prog)


# --- known kernel bugs ------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.too_slow])
@given(programs(timers=True))
def _random_programs_with_timers(prog: Program) -> None:
    assert_equivalent(prog)


def test_random_programs_with_timers_are_equivalent() -> None:
    """Also sleeps, timeouts, host cancels and deletions, periodic threads, timeslices."""
    _random_programs_with_timers()


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.too_slow])
@given(programs(timers=True, cpus=2))
def _random_programs_on_two_cpus(prog: Program) -> None:
    assert_equivalent(prog)


def test_random_programs_on_two_cpus_are_equivalent() -> None:
    """All of that on two CPUs, with threads moving between them and threads of higher
    priority made on the second by the host."""
    _random_programs_on_two_cpus()


def test_a_timer_due_during_the_switch_preempts_like_on_the_general_path() -> None:
    prog = Program((ServerSpec(priority=50, same_task=False),),
                   (ClientSpec(50, (("call", 0, False, 0, 0, None),)),),
                   extra_threads=(("ticker", 100, 1_500),))
    assert_equivalent(prog)


def test_a_long_call_waking_a_fast_path_server_reports_its_string_bytes() -> None:
    """A server waiting in the fast path's reply_and_wait (its string buffer still in the
    BRs from an earlier receive) is woken by a call carrying a string: it reports the
    string's byte count, as on the general path."""
    from l4sim import StringItem

    def run(check: bool) -> list[tuple[int, ...]]:
        seen: list[tuple[int, ...]] = []

        async def server(t: Any) -> None:
            r = await t.wait(buffers=[(0x100000, 4096)])   # the BRs are set once, here
            while True:
                seen.append(r.string_bytes)
                r = await t.reply_and_wait(words=[1])     # no buffers=: the fast path

        async def client(t: Any, srv: int) -> None:
            await t.store(0x10000, b"hello")
            for _ in range(2):
                await t.call(srv, items=[StringItem(0x10000, 5)])

        k = Kernel(check=check)
        s = k.new_task("s").new_thread(server, name="s", priority=120)
        ct = k.new_task("c")
        ct.new_thread(client, ct.add_cap(s), name="c")
        k.run()
        return seen

    assert run(check=False) == run(check=True) == [(5,), (5,)]


def test_a_call_to_the_caller_waiting_for_our_reply_ends_our_reply_capability() -> None:
    """A server that, instead of replying, calls its own caller (which waits for our
    reply: a closed receive on us) ends its reply capability and the priority the caller
    lent it, on either path. The fuzzer found the fast path keeping the lent priority:
    the server, timed out while its high-priority caller computed, ran as if it were
    high-priority too."""
    from l4sim import Fpage, Kernel, Timeout

    def run(fast: bool) -> list[tuple[str, str, int]]:
        k = Kernel(fastpath=fast, timeslice=2000)
        out: list[tuple[str, str, int]] = []

        sels: dict[str, int] = {}

        async def high(t: Any) -> None:
            r = await t.call(sels["low"], words=[1], send_timeout=Timeout.us(16),
                             window=Fpage.all())
            out.append(("high call", r.error.name, t.now))
            await t.compute(200_000)
            out.append(("high computed", "OK", t.now))

        async def low(t: Any) -> None:
            r = await t.wait()
            out.append(("low wait", r.error.name, t.now))
            r = await t.call(sels["high"], label=785, send_timeout=Timeout.cycles(0xD529),
                             receive_timeout=Timeout.us(72))
            out.append(("low call", r.error.name, t.now))

        t1, t4 = k.new_task("t1"), k.new_task("t4")
        h = t1.new_thread(high, name="high", priority=100)
        lo = t4.new_thread(low, name="low", priority=10)
        sels["low"] = t1.add_cap(lo)
        sels["high"] = t4.add_cap(h)
        k.run()
        return out

    fast, slow = run(True), run(False)
    assert fast == slow
    # The low-priority server's call times out while high computes, and returns only
    # after high is done.
    assert [what for what, _, _ in slow] == ["low wait", "high call", "high computed",
                                            "low call"]
    assert slow[3][1] == "RETIMEOUT"


# --- typed messages and page faults ----------------------------------------------------------
# The fast path also takes map items, receive windows and the kernel's page-fault IPC. Each
# scenario is a function that sets up a kernel and logs (what, result, t.now); it runs on
# both paths, and the logs, the run results and every task's mappings must be the same.

Setup = Callable[[Kernel, list[tuple[Any, ...]]], None]


def _mapping_db(k: Kernel) -> list[tuple[Any, ...]]:
    """Every mapping of every task, with the mapping it derives from."""
    out = []
    for task in [k.sigma0.task, *(th.task for th in k.threads.values())]:
        for m in task.space.mappings():
            p = m.parent
            out.append((task.name, m.base, m.order, m.phys, m.rights,
                        None if p is None else (p.space.name, p.base)))
    return sorted(set(out), key=repr)


def _run_typed(setup: Setup, *, fastpath: bool, steps: int | None = None,
               **kw: Any) -> tuple[Any, ...]:
    import l4sim.kernel.pagefault as pagefault_module

    k = Kernel(fastpath=fastpath, **kw)
    log: list[tuple[Any, ...]] = []
    setup(k, log)
    count = [0]
    orig_ipc = ipc_module.ipc

    def counting(*a: Any, **kw: Any) -> Any:
        count[0] += 1
        return orig_ipc(*a, **kw)

    modules = (ipc_module, fastpath_module, pagefault_module)
    for m in modules:
        m.ipc = counting  # type: ignore[attr-defined]
    runs = []
    try:
        while True:  # with `steps`, runs cut by max_steps until done
            res = k.run(max_steps=steps)
            runs.append((res.reason, res.now))
            if res.reason != "steps":
                break
    finally:
        for m in modules:
            m.ipc = orig_ipc  # type: ignore[attr-defined]
    died = [(t.name, str(why)) for t, why in res.died]
    return (log, (res.reason, res.now, res.steps, died), runs, _mapping_db(k), k.now), count[0]


def assert_typed_equivalent(setup: Setup, *, taken: bool = True, steps: int | None = None,
                            **kw: Any) -> list[tuple[Any, ...]]:
    fast, fast_general = _run_typed(setup, fastpath=True, steps=steps, **kw)
    slow, slow_general = _run_typed(setup, fastpath=False, steps=steps, **kw)
    for i, (x, y) in enumerate(zip(fast[0], slow[0], strict=False)):
        assert x == y, f"result {i} differs: fast path {x}, general path {y}"
    assert fast == slow
    if taken:
        assert fast_general * 2 < slow_general, (fast_general, slow_general)
    log: list[tuple[Any, ...]] = fast[0]
    return log


def _toucher(pages: list[int], write: bool = True) -> Callable[..., Any]:
    async def body(t: Any, log: list[tuple[Any, ...]]) -> None:
        for i, page in enumerate(pages):
            if write:
                await t.store(page + 8 * i, bytes([i & 0xFF]))
            else:
                await t.load(page, 8)
            log.append((t.name, "touch", page, t.now))
    return body


@pytest.mark.parametrize("prios", [(100, 100), (120, 80), (80, 120)])
def test_page_faults_through_the_default_pager(prios: tuple[int, int]) -> None:
    pages = [0x10000 + 0x1000 * i for i in (0, 1, 2, 0, 7, 3, 1, 30, 31)]

    def setup(k: Kernel, log: list[tuple[Any, ...]]) -> None:
        a = k.new_task("a")
        a.new_thread(_toucher(pages), log, name="a0", priority=prios[0])
        a.new_thread(_toucher(pages[::-1], write=False), log, name="a1", priority=prios[1])
        k.new_task("b").new_thread(_toucher(pages[2:]), log, name="b0")

    log = assert_typed_equivalent(setup)
    assert len(log) == 3 * len(pages) - 2


@pytest.mark.parametrize("prios", [(100, 100), (120, 80)])
def test_page_faults_on_two_cpus(prios: tuple[int, int]) -> None:
    """Threads of both CPUs fault through the default pager (on CPU 0): the faults of
    CPU 1 are remote requests, and while they run a fault of CPU 0 takes its IPCs one by
    one (the shortcut that applies four IPCs at once is a uniprocessor's)."""
    pages = [0x10000 + 0x1000 * i for i in (0, 1, 2, 0, 7, 3, 1, 30, 31)]

    def setup(k: Kernel, log: list[tuple[Any, ...]]) -> None:
        a = k.new_task("a")
        a.new_thread(_toucher(pages), log, name="a0", priority=prios[0])
        a.new_thread(_toucher(pages[::-1], write=False), log, name="a1", priority=prios[1],
                     cpu=1)
        k.new_task("b").new_thread(_toucher(pages[2:]), log, name="b0", cpu=1)
        k.new_task("c").new_thread(_toucher(pages[4:]), log, name="c0")

    log = assert_typed_equivalent(setup, taken=False, cpus=2)
    assert len(log) == 4 * len(pages) - 6


def test_a_fault_served_while_the_other_cpu_sends_to_the_faulting_thread() -> None:
    """A thread of CPU 1 sends to a thread of CPU 0 that faults (found by the fuzzer): the
    send's remote request arrives while the fault's IPCs run, and is served between them
    on both paths."""
    def setup(k: Kernel, log: list[tuple[Any, ...]]) -> None:
        async def sender(t: Any, dest: int) -> None:
            r = await t.wait(receive_timeout=Timeout.us(42))
            log.append(("wait", int(r.error), t.now))
            r = await t.send(dest, words=[0], send_timeout=Timeout.cycles(200_000))
            log.append(("send", int(r.error), t.now))
            r = await t.wait(receive_timeout=Timeout.us(30))
            log.append(("wait", int(r.error), t.now))

        async def faulter(t: Any) -> None:
            log.append(("load", await t.load(0x1B008, 5_000) == bytes(5_000), t.now))
            await t.sleep(Timeout.cycles(190_539))
            await t.compute(200_000)
            log.append(("load", await t.load(0x10000, 5_000) == bytes(5_000), t.now))

        b = k.new_task("b")
        th2 = b.new_thread(faulter, name="th2")
        a = k.new_task("a")
        a.new_thread(sender, a.add_cap(th2), name="th1", cpu=1)

    log = assert_typed_equivalent(setup, taken=False, cpus=2, transfer="sender-driven",
                                  copy="kernel-buffer", priority_inheritance=False)
    assert [e[0] for e in log].count("load") == 2


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_page_faults_in_runs_cut_by_max_steps(steps: int) -> None:
    """The anonymous pager, made during a step-limited run, takes the general path there."""
    pages = [0x10000 + 0x1000 * i for i in (0, 1, 0, 5)]

    def setup(k: Kernel, log: list[tuple[Any, ...]]) -> None:
        k.new_task("a").new_thread(_toucher(pages), log, name="a0")
        k.new_task("b").new_thread(_toucher(pages[::-1]), log, name="b0")

    assert_typed_equivalent(setup, taken=False, steps=steps)


def test_page_faults_to_a_pager_of_the_users_own() -> None:
    """A thread's own pager (seen with the thread's id) that replies with map items from
    memory it got from sigma0, refusing one address: the fault kills the thread."""
    from l4sim.kernel.abi import Fpage, Label, MapItem, Rights
    from l4sim.lib.sigma0 import SIGMA0_ANY

    async def pager(t: Any, s0: int, log: list[tuple[Any, ...]]) -> None:
        r = await t.call(s0, words=[SIGMA0_ANY, 16], label=Label.SIGMA0,
                         window=Fpage.mem(0x4000_0000, 16))
        log.append(("pager", "sigma0", int(r.error), r.words, t.now))
        r = await t.wait()
        while True:
            log.append(("pager", "fault", int(r.error), r.label, r.words[0], t.now))
            page = r.words[0] & ~0xFFF
            if page == 0x66000:
                r = await t.reply_and_wait(label=-12)
            else:
                src = 0x4000_0000 + (page & 0xF000)
                r = await t.reply_and_wait(
                    items=[MapItem(Fpage.mem(src, 12, Rights.RWX), send_base=page)],
                    receive_timeout=Timeout.cycles(1_000_000))

    def setup(k: Kernel, log: list[tuple[Any, ...]]) -> None:
        pt = k.new_task("pager")
        p = pt.new_thread(pager, pt.add_cap(k.sigma0), log, name="pager", priority=150)
        c = k.new_task("c")
        c.new_thread(_toucher([0x60000, 0x61000, 0x60000, 0x62000]), log, name="c0", pager=p)
        c.new_thread(_toucher([0x63000, 0x66000, 0x64000]), log, name="c1", pager=p)

    log = assert_typed_equivalent(setup)
    assert ("c1", "touch", 0x63000) in [e[:3] for e in log]
    assert ("c1", "touch", 0x64000) not in [e[:3] for e in log]


def test_map_items_windows_and_failed_items() -> None:
    """Calls and replies with map items: into a window, without one (cut), an fpage beyond
    the address space (map failed), a void item, a grant, with finite receive timeouts."""
    from l4sim.kernel.abi import Fpage, Label, MapItem, Rights
    from l4sim.lib.sigma0 import SIGMA0_ANY

    base = 0x2000_0000
    window = Fpage.mem(0x3000_0000, 20)

    async def server(t: Any, log: list[tuple[Any, ...]]) -> None:
        r = await t.wait(window=window)
        i = 0
        while True:
            log.append(("srv", int(r.error), r.label, r.words, t.now))
            if r.error not in (E.OK, E.REMSGCUT, E.REMAPFAILED):  # a failed reply, a timeout
                r = await t.wait(window=window)
                continue
            i += 1
            items: list[MapItem] = []
            if i % 3 == 0:
                items = [MapItem(Fpage.mem(0x3000_0000, 12, Rights.R), send_base=base)]
            if i % 4 == 0:
                items.append(MapItem(Fpage.mem(1 << 47, 12), send_base=base))  # map fails
            r = await t.reply_and_wait(words=[i], items=items,
                                       window=window if i % 2 else None,
                                       receive_timeout=Timeout.cycles(200_000 + i))

    async def client(t: Any, s0: int, srv: int, log: list[tuple[Any, ...]]) -> None:
        r = await t.call(s0, words=[SIGMA0_ANY, 20], label=Label.SIGMA0,
                         window=Fpage.mem(base, 20))
        log.append(("cli", "sigma0", int(r.error), r.words, t.now))
        for i in range(12):
            page = base + 0x1000 * (i % 5)
            items = [MapItem(Fpage.mem(page, 12, Rights.RW), send_base=0x3000_0000 + 0x1000 * i)]
            if i % 5 == 1:
                items.append(MapItem(Fpage.mem(page, 12), send_base=page, grant=True))
            if i % 6 == 2:
                items.insert(0, MapItem(Fpage(0), send_base=0))  # a void item
            r = await t.call(srv, words=[i, i * 7], items=items,
                             window=Fpage.mem(base, 20) if i % 2 else None,
                             receive_timeout=Timeout.cycles(500_000) if i % 3 else Timeout.never())
            log.append(("cli", i, int(r.error), r.label, r.words, t.now))
            await t.compute(1_000 * (i % 4))

    def setup(k: Kernel, log: list[tuple[Any, ...]]) -> None:
        st = k.new_task("srv")
        s = st.new_thread(server, log, name="srv", priority=110)
        ct = k.new_task("cli")
        ct.new_thread(client, ct.add_cap(k.sigma0), ct.add_cap(s), log, name="cli")

    log = assert_typed_equivalent(setup)
    errors = {e[2] for e in log if e[0] == "cli"}
    assert len(errors) > 1, "some items failed"


def test_map_items_to_a_receiver_without_a_window_are_cut() -> None:
    from l4sim.kernel.abi import Fpage, MapItem

    async def server(t: Any, log: list[tuple[Any, ...]]) -> None:
        r = await t.wait()
        while True:
            log.append(("srv", int(r.error), r.words, t.now))
            if r.error != E.OK:  # a failed reply (its caller's send was cut): wait afresh
                r = await t.wait()
                continue
            r = await t.reply_and_wait(words=[1], items=[MapItem(Fpage.mem(0x10000, 12))])

    async def client(t: Any, srv: int, log: list[tuple[Any, ...]]) -> None:
        await t.store(0x10000, b"x")
        for i in range(4):
            r = await t.call(srv, words=[i], items=[MapItem(Fpage.mem(0x10000, 12))],
                             window=Fpage.mem(0x10000, 16) if i % 2 else None)
            log.append(("cli", int(r.error), r.words, t.now))

    def setup(k: Kernel, log: list[tuple[Any, ...]]) -> None:
        st = k.new_task("srv")
        s = st.new_thread(server, log, name="srv", priority=110)
        ct = k.new_task("cli")
        ct.new_thread(client, ct.add_cap(s), log, name="cli")

    assert_typed_equivalent(setup, taken=False)


# --- timers the fast path arms lazily ----------------------------------------------------------


def _expiries(fastpath: bool, timeouts: tuple[int, int], sleep: int | None
              ) -> tuple[list[tuple[str, int, int]], Kernel]:
    """Two clients call a server that takes their calls and never replies, with the receive
    timeouts `timeouts`; a third thread sleeps `sleep` cycles. The order and times in which
    the waits end, and the kernel."""
    k = Kernel(fastpath=fastpath)
    task = k.new_task()
    ended: list[tuple[str, int, int]] = []

    async def server(t: Any) -> None:
        while True:
            await t.wait()  # (the caller waits on for a reply that never comes)

    async def client(t: Any, dest: int, rto: int) -> None:
        r = await t.call(dest, words=(1, 2), receive_timeout=Timeout.cycles(rto))
        ended.append((t.name, int(r.error), t.now))

    async def sleeper(t: Any, cycles: int) -> None:
        r = await t.sleep(Timeout.cycles(cycles))
        ended.append((t.name, int(r.error), t.now))

    srv = task.new_thread(server, name="server")
    dest = task.add_cap(srv)
    for name, rto in zip(("a", "b"), timeouts, strict=True):
        task.new_thread(client, dest, rto, name=name)
    if sleep is not None:
        task.new_thread(sleeper, sleep, name="sleeper")
    k.run()
    return ended, k


def test_lazily_armed_timers_expire_in_arming_order_with_heap_armed_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path arms a reply wait's timer without a heap entry until the heap is next
    looked at; made then, the entry keeps the sequence number it was armed with. So timers
    due at the same cycle (two lazily armed ones and a sleep's, armed on the general path)
    fire in the same order and at the same times as on the general path."""
    base = 20_000
    armed: dict[str, int] = {}
    arm_timer = Cpu.arm_timer

    def recording(cpu: Cpu, th: Any, deadline: int) -> None:
        armed[th.name] = deadline
        arm_timer(cpu, th, deadline)

    monkeypatch.setattr(Cpu, "arm_timer", recording)
    _expiries(False, (base, base), base)
    monkeypatch.setattr(Cpu, "arm_timer", arm_timer)
    # Shorten b's timeout and the sleep so that all three are due at a's deadline.
    aligned = (base, base - (armed["b"] - armed["a"]))
    sleep = base - (armed["sleeper"] - armed["a"])
    due: list[int] = []
    first_of = Cpu._first_of_simultaneous

    def counting(cpu: Cpu, entry: list[Any]) -> list[Any]:
        heap = cpu.timers
        due.append(1 + sum(1 for e in heap if e[0] == entry[0] and e[2] is not None))
        return first_of(cpu, entry)

    monkeypatch.setattr(Cpu, "_first_of_simultaneous", counting)
    general, _ = _expiries(False, aligned, sleep)
    assert due[0] == 3, "all three timers are due at the same cycle"
    due.clear()
    fast, k = _expiries(True, aligned, sleep)
    assert due[0] == 3
    assert {err for _, err, _ in general} == {int(E.RETIMEOUT)}
    assert [name for name, _, _ in general] == ["a", "b", "sleeper"], "in arming order"
    assert fast == general
    assert not k.cpus[0].lazy and not k.cpus[0].timers, "nothing is left armed"


def _timed_pingpong(fastpath: bool) -> tuple[int, list[int]]:
    """1,000 calls with finite timeouts on both sides: when the run ended (the server's
    last wait expires), and the timer entries in the heap (live ones count 10) after each
    call."""
    k = Kernel(fastpath=fastpath)
    task = k.new_task()
    long = Timeout.us(1_000_000)
    seen: list[int] = []

    async def server(t: Any) -> None:
        r = await t.wait(receive_timeout=long)
        while r.ok:
            r = await t.reply_and_wait(words=(1,), receive_timeout=long)

    async def client(t: Any, dest: int) -> None:
        for _ in range(1_000):
            await t.call(dest, words=(2,), send_timeout=long, receive_timeout=long)
            heap = k.cpus[0].timers
            seen.append(len(heap) + 10 * sum(1 for e in heap if e[2] is not None))

    srv = task.new_thread(server, name="server")
    task.new_thread(client, task.add_cap(srv), name="client")
    res = k.run()
    assert res.reason == "done" and not res.died
    return res.now, seen


def test_a_lazily_armed_timer_cancelled_by_the_reply_leaves_no_heap_entry() -> None:
    """A ping-pong with finite timeouts on both sides makes no live heap entry: every timer
    the fast path arms is cancelled by the partner before the heap is looked at. The
    server's last wait, armed lazily, still expires when it does on the general path."""
    fast_end, fast_seen = _timed_pingpong(True)
    general_end, general_seen = _timed_pingpong(False)
    assert fast_end == general_end
    # (the server's first wait took the general path: its entry stays, dead)
    assert len(fast_seen) == 1_000 and max(fast_seen) <= 1
    assert max(general_seen) > 1, "the general path makes heap entries"


def test_the_full_check_of_an_unchecked_kernel_sees_a_lazily_armed_timer_as_armed() -> None:
    """`k.check_invariants()` on a kernel that runs the fast path: a reply wait's timer
    armed lazily gets its heap entry first, and still expires when it would have."""
    ended: list[tuple[int, int]] = []
    ends = []
    for check_between in (False, True):
        k = Kernel()
        task = k.new_task()

        async def server(t: Any) -> None:
            await t.wait()
            await t.wait()  # the caller waits on for a reply that never comes

        async def client(t: Any, dest: int) -> None:
            r = await t.call(dest, words=(1,), receive_timeout=Timeout.cycles(50_000))
            ended.append((int(r.error), t.now))

        srv = task.new_thread(server, name="server")
        cli = task.new_thread(client, task.add_cap(srv), name="client")
        for _ in range(10):  # single steps: a run's end would look at the heap
            if k.cpus[0].lazy:
                break
            k.step()
        assert cli.state_name == "receive_wait" and k.cpus[0].lazy, "armed lazily"
        if check_between:
            k.check_invariants()
            assert not k.cpus[0].lazy and cli.timer in k.cpus[0].timers
        k.run()
        ends.append(ended.pop())
    assert ends[0] == ends[1] and ends[0][0] == int(E.RETIMEOUT)
