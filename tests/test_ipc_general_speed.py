"""The general IPC path's short cuts change nothing observable.

The general path (`Kernel(fastpath=False)`, and every IPC the fast path does not take) is
one generator frame with its common cases written out: the words-only transfer, the end
of the receiver's wait, the capability lookup and the result after a wait are inlined
when neither checking nor tracing, and the user side loads a two-word message without
building an array. Here the same programs run unchecked, checked (every invariant after
every operation, every state transition declared) and traced, and every observable must
be the same: results, the simulated times they returned at, the run results, the trace.
Bad arguments fail the same way on the short cut as on the full checks.
"""

from __future__ import annotations

from typing import Any

import pytest

from l4sim import IpcError, Kernel, Timeout
from l4sim.kernel import ipc as ipc_module
from l4sim.user.context import GeneralUserContext, UserContext
from test_fastpath import ClientSpec, Program, ServerSpec, run_program

E = IpcError


def _observe(k: Kernel, log: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    res = k.run()
    return (tuple(log), res.reason, res.now, res.steps, sorted(t.name for t in res.blocked),
            [(t.name, str(why)) for t, why in res.died], k.now)


async def _echo(t: Any, log: list[tuple[Any, ...]]) -> None:
    r = await t.wait()
    while True:
        log.append(("srv", int(r.error), r.label, r.words, t.now))
        r = await t.reply_and_wait(words=(r.words[0] + 1 if r.words else 0, 7))


async def _caller(t: Any, log: list[tuple[Any, ...]], sel: int, n: int) -> None:
    for i in range(n):
        r = await t.call(sel, words=[i, i * 3] if i % 2 else (i, i + 1))
        log.append(("cli", int(r.error), r.label, r.words, t.now))


async def _mixed(t: Any, log: list[tuple[Any, ...]], srv: int, gate: int, bad: int) -> None:
    """Every branch of the general path a plain thread reaches without strings."""
    def note(what: str, r: Any) -> None:
        log.append((what, int(r.error), r.label, r.words, t.now))

    note("call", await t.call(srv, words=(1, 2)))
    note("gate", await t.call(gate, words=(3,), label=5))
    note("bad", await t.call(bad, words=(1, 2)))               # empty capability
    note("nocap", await t.call(999, words=(1, 2)))             # out of range
    note("send", await t.send(srv, words=(4, 5)))              # the server waits
    note("send0", await t.send(srv, words=(6,), send_timeout=Timeout.zero()))  # busy
    note("recv0", await t.receive(srv, receive_timeout=Timeout.zero()))  # may not wait
    note("sleep", await t.sleep(Timeout.cycles(2_000)))
    note("reply", await t.reply(words=(1,)))                   # nobody to reply to
    note("long", await t.call(srv, words=tuple(range(10))))
    note("none", await t.call(srv))
    note("to", await t.call(srv, words=(8, 9), receive_timeout=Timeout.cycles(10**7),
                            send_timeout=Timeout.cycles(10**7)))


async def _slow_echo(t: Any, log: list[tuple[Any, ...]]) -> None:
    r = await t.wait()
    while True:
        log.append(("srv", int(r.error), r.label, r.words, t.now))
        if r.error:  # a failed reply (the last message was a send): wait afresh
            r = await t.wait()
            continue
        await t.compute(5_000)
        r = await t.reply_and_wait(words=(len(r.words),))


def _mixed_system(**kw: Any) -> tuple[Kernel, list[tuple[Any, ...]]]:
    k = Kernel(**kw)
    log: list[tuple[Any, ...]] = []
    task = k.new_task("t")
    srv = task.new_thread(_slow_echo, log, name="srv", priority=100)
    s = task.add_cap(srv)
    g = task.add_cap(k.new_gate(srv, label=0x40))
    bad = task.add_cap(k.new_gate(srv))
    task.caps[bad] = None  # an empty slot
    task.new_thread(_mixed, log, s, g, bad, name="cli", priority=100)
    # a second caller queues at the busy server: its send waits, the server takes it
    task.new_thread(_caller, log, s, 4, name="cli2", priority=100)
    return k, log


def _pingpong_system(cpus: int = 1, **kw: Any) -> tuple[Kernel, list[tuple[Any, ...]]]:
    k = Kernel(cpus=cpus, **kw)
    log: list[tuple[Any, ...]] = []
    stask, ctask = k.new_task("s"), k.new_task("c")
    srv = stask.new_thread(_echo, log, name="srv", priority=100, cpu=cpus - 1)
    ctask.new_thread(_caller, log, ctask.add_cap(srv), 30, name="cli", priority=100)
    return k, log


MODES = [dict(check=False, trace=False), dict(check=True), dict(trace=True),
         dict(check="full", trace=True)]


@pytest.mark.parametrize("build", [_mixed_system, _pingpong_system,
                                   lambda **kw: _pingpong_system(2, **kw)],
                         ids=["mixed", "pingpong", "pingpong-2cpus"])
def test_unchecked_checked_and_traced_runs_agree(build: Any) -> None:
    seen = []
    for mode in MODES:
        k, log = build(fastpath=False, **mode)
        seen.append(_observe(k, log))
    assert all(s == seen[0] for s in seen[1:])


def test_traces_agree_with_and_without_checks() -> None:
    traces = []
    for check in (False, True):
        k, _ = _mixed_system(fastpath=False, trace=True, check=check)
        k.run()
        traces.append(list(k.events))
    assert traces[0] == traces[1] and traces[0]


def test_the_pingpong_takes_the_same_simulated_time_on_both_paths() -> None:
    """The general path and the fast path charge the same cycles per round trip."""
    times = []
    for fast in (True, False):
        k, log = _pingpong_system(fastpath=fast, check=False, trace=False)
        times.append(_observe(k, log))
    assert times[0] == times[1]


@pytest.mark.parametrize("prog", [
    Program((ServerSpec(work=300),), (ClientSpec(ops=(("call", 0, False, 2, 0, None),) * 5),
                                      ClientSpec(ops=(("call", 0, True, 2, 7, None),
                                                      ("send", 0, False, 2, 0)) * 3))),
    Program((ServerSpec(style="rw_timeout", timeout=4_000),),
            (ClientSpec(ops=(("call", 0, False, 2, 0, 2_000), ("sleep", 9_000)) * 3),)),
    Program((ServerSpec(style="reply_wait"),),
            (ClientSpec(ops=(("call", 0, False, 1, 0, None, 0),) * 4),
             ClientSpec(priority=120, ops=(("call", 0, False, 2, 0, None),) * 4))),
], ids=["queued", "timeouts", "priorities"])
def test_programs_agree_checked_and_unchecked(prog: Program) -> None:
    plain, _ = run_program(prog, fastpath=False)
    checked, _ = run_program(prog, fastpath=False, check=True)
    traced, _ = run_program(prog, fastpath=False, trace=True)
    for other in (checked, traced):
        assert (other.logs, other.results, other.states, other.runs, other.now) == (
            plain.logs, plain.results, plain.states, plain.runs, plain.now)


@pytest.mark.parametrize("fastpath", [False, True], ids=["general", "fast"])
@pytest.mark.parametrize("op", ["call", "reply_and_wait", "send"])
@pytest.mark.parametrize("words", [(1, 1 << 64), [1, -1], (1, "x"), [1.5, 2], (1 << 70, 2)])
def test_two_bad_words_fail_as_any_bad_message(words: Any, op: str, fastpath: bool) -> None:
    """A two-word message is loaded without an array (on the general path's `call` and
    `reply_and_wait`: when the IPC runs; on the fast path: at once): all or nothing, with
    the error a longer message gets for the same word, raised where the operation is
    awaited."""
    errors = []
    for msg in (words, (*words, 0)):  # two words, and three (the array-building load)
        k = Kernel(fastpath=fastpath)
        task = k.new_task("t")
        seen: list[Any] = []

        async def body(t: Any, msg: Any = msg, seen: list[Any] = seen) -> None:
            t.utcb.mr[0], t.utcb.mr[1] = 11, 22
            try:
                if op == "reply_and_wait":
                    await t.reply_and_wait(words=msg)
                else:
                    await getattr(t, op)(t.self_sel, words=msg)
            except (OverflowError, TypeError) as exc:
                seen.append((type(exc), str(exc), tuple(t.utcb.mr[:2])))

        task.new_thread(body, name="a")
        k.run()
        errors.append(seen[0])
    assert errors[0] == errors[1]
    assert errors[0][2] == (11, 22)  # the MRs are as they were


def test_bad_argument_types_fail_as_before() -> None:
    cases = [dict(dest="1"), dict(send_timeout=5), dict(receive_timeout=None),
             dict(pagefault_timeout=1.0)]
    for bad in cases:
        k = Kernel(fastpath=False)
        task = k.new_task("t")
        seen: list[str] = []

        async def body(t: Any, bad: dict[str, Any] = bad, seen: list[str] = seen) -> None:
            kw: dict[str, Any] = dict(dest=t.self_sel, words=(1, 2))
            kw.update(bad)
            try:
                await t.call(**kw)
            except TypeError as exc:
                seen.append(str(exc))

        task.new_thread(body, name="a")
        k.run()
        assert len(seen) == 1
        name = next(iter(bad))
        assert ("selector" if name == "dest" else name) in seen[0]


def test_a_kernel_without_the_fast_path_gives_the_general_entries() -> None:
    for kw, general in ((dict(), False), (dict(fastpath=False), True), (dict(check=True), True),
                        (dict(trace=True), True), (dict(cpus=2), False),
                        (dict(cpus=2, fastpath=False), True)):
        k = Kernel(**kw)

        async def body(t: Any) -> None:
            await t.sleep(Timeout.zero())

        th = k.new_task("t").new_thread(body, name="a")
        assert isinstance(th.user, UserContext)
        assert (type(th.user) is GeneralUserContext) == general
        assert k.run().reason == "done"


def test_the_general_operation_is_one_frame_that_reports_a_forgotten_await() -> None:
    """It is awaited like any coroutine, and one never awaited is named as the call."""
    k = Kernel(fastpath=False)
    task = k.new_task("t")

    async def body(t: Any) -> None:
        t.send(t.self_sel, words=(1,))  # never awaited

    task.new_thread(body, name="a")
    with pytest.warns(RuntimeWarning, match="send"):
        k.run()
    assert any("t.send(...) was never awaited" in w for w in k.warnings)
    assert ipc_module.ipc.__code__.co_flags & 0x80  # CO_COROUTINE



@pytest.mark.parametrize("op", ["call", "reply_and_wait"])
def test_the_general_entries_hand_back_the_ipc_itself(op: str) -> None:
    """Without the fast path, `call` and `reply_and_wait` are the general IPC's own
    coroutine (no level of their own), and one never awaited is named as the user's
    operation; its two words were never loaded, as on the fast path."""
    k = Kernel(fastpath=False)
    task = k.new_task("t")
    seen: list[object] = []

    async def body(t: Any) -> None:
        coro = t.call(t.self_sel, words=(1, 2)) if op == "call" else t.reply_and_wait(words=(1, 2))
        seen.append(coro.cr_code)
        seen.append(list(t.utcb.mr[:2]))  # two words are loaded when the IPC runs
        del coro  # never awaited

    task.new_thread(body, name="a")
    with pytest.warns(RuntimeWarning, match=op):
        k.run()
    assert seen == [ipc_module._ipc.__code__, [0, 0]]
    assert any(f"t.{op}(...) was never awaited" in w for w in k.warnings)


@pytest.mark.parametrize("as_tuple", [True, False])
def test_two_words_arrive_as_a_snapshot_on_the_general_path(as_tuple: bool) -> None:
    """The receiver's words are what was sent at the transfer, whatever happens to the
    sender's sequence and either side's MRs later (a tuple is passed on as it is, a list
    is copied)."""
    k = Kernel(fastpath=False)
    task = k.new_task("t")
    got: list[Any] = []

    async def server(t: Any) -> None:
        first = await t.wait()
        t.utcb.mr[0] = 99  # its own MRs change: what it received does not
        second = await t.reply_and_wait(words=(7, 8))
        got.append(("server", first.words, second.words))
        await t.reply_and_wait(words=(9, 10))

    async def client(t: Any, sel: int) -> None:
        msg: Any = (5, 6) if as_tuple else [5, 6]
        r = await t.call(sel, words=msg)
        if not as_tuple:
            msg[0] = 0
        t.utcb.mr[0] = 42
        r2 = await t.call(sel, words=(11, 12))
        got.append(("client", r.words, r2.words))

    srv = task.new_thread(server, name="srv", priority=20)
    task.new_thread(client, task.add_cap(srv), name="cli", priority=10)
    k.run()
    assert got == [("server", (5, 6), (11, 12)), ("client", (7, 8), (9, 10))]


@pytest.mark.parametrize("as_tuple", [True, False])
def test_mrs_written_between_the_call_and_its_await_do_not_change_the_message(
        as_tuple: bool) -> None:
    """Two words are loaded when the IPC runs, as the fast path loads them: what a thread
    writes into its MRs between making the call and awaiting it is overwritten, on every
    path alike (fast path, general path unchecked and checked)."""
    outcomes = []
    for kw in (dict(), dict(fastpath=False), dict(check=True)):
        k = Kernel(**kw)
        task = k.new_task("t")
        got: list[Any] = []

        async def server(t: Any, got: list[Any]) -> None:
            r = await t.wait()
            got.append(r.words)
            await t.reply_and_wait(words=(0, 0))

        async def client(t: Any, sel: int, got: list[Any]) -> None:
            op = t.call(sel, words=(5, 6) if as_tuple else [5, 6])
            t.utcb.mr[0] = 99
            await op
            got.append(tuple(t.utcb.mr[:2]))  # (the reply's words, loaded into its MRs)

        srv = task.new_thread(server, got, name="srv", priority=20)
        task.new_thread(client, task.add_cap(srv), got, name="cli", priority=10)
        k.run()
        outcomes.append(got)
    assert outcomes == [[(5, 6), (0, 0)]] * 3


@pytest.mark.parametrize("fastpath", [False, True], ids=["general", "fast"])
@pytest.mark.parametrize("op", ["call", "reply_and_wait"])
def test_words_that_are_not_a_sequence_raise_in_the_caller(op: str, fastpath: bool) -> None:
    """`words=5` is a TypeError of the call itself on both paths, the MRs untouched (not a
    failure of the kernel's message check)."""
    k = Kernel(fastpath=fastpath)
    task = k.new_task("t")
    seen: list[Any] = []

    async def body(t: Any) -> None:
        t.utcb.mr[0], t.utcb.mr[1] = 11, 22
        try:
            if op == "reply_and_wait":
                await t.reply_and_wait(words=5)
            else:
                await t.call(t.self_sel, words=5)
        except TypeError as exc:
            seen.append((str(exc), tuple(t.utcb.mr[:2])))

    task.new_thread(body, name="a")
    k.run()
    assert not k.died
    assert seen == [("object of type 'int' has no len()", (11, 22))]


@pytest.mark.parametrize("fastpath", [False, True], ids=["general", "fast"])
def test_two_words_in_a_list_arrive_as_they_were_sent(fastpath: bool) -> None:
    """A list of two words is taken when the IPC runs: what the sender does to its list
    afterwards does not reach a result the receiver holds, on either path."""
    k = Kernel(fastpath=fastpath)
    task = k.new_task("t")
    held: list[Any] = []

    async def server(t: Any) -> None:
        r = await t.wait()
        while True:
            held.append(r)
            r = await t.reply_and_wait(words=[r.words[0] + 1, r.words[1]])

    async def client(t: Any, srv: int) -> list[Any]:
        msg = [10, 20]
        out = []
        for i in range(3):
            r = await t.call(srv, words=msg)
            out.append(r.words)
            msg[0] = 100 + i  # (after the call: the next one sends this)
            msg[1] = 200 + i
        return out

    s = task.new_thread(server, name="srv")
    c = task.new_thread(client, task.add_cap(s), name="cli")
    k.run()
    assert c.result == [(11, 20), (101, 200), (102, 201)]
    assert [r.words for r in held] == [(10, 20), (100, 200), (101, 201)]
