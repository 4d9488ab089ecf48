"""What a user is told: tracebacks, forgotten awaits, bad words and timeouts, asyncio in a
body, deadlock chains, idle servers, dead pagers, sigma0's refusals, time units, and a
trace that stays bounded."""

from __future__ import annotations

import asyncio
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from l4sim import Fpage, Kernel, Timeout, UserContext
from l4sim.kernel.abi import Label
from l4sim.lib.sigma0 import SIGMA0_FPAGE

THIS_FILE = __file__


def _died(k: Kernel) -> dict[str, str]:
    return {t.name: why for t, why in k.run().died}


def test_traceback_names_the_users_file_and_line() -> None:
    async def body(t: UserContext) -> None:
        table: dict[str, int] = {}
        await t.compute(10)
        table["missing"] += 1  # the line the traceback must name

    k = Kernel(check=True)
    k.new_task("a").new_thread(body, name="a")
    res = k.run()
    (_, why), = res.died
    assert why == "KeyError: 'missing'"  # still equal to the plain reason
    tb = why.traceback  # type: ignore[attr-defined]
    assert f'File "{THIS_FILE}"' in tb and 'table["missing"] += 1' in tb
    assert "/l4sim/kernel/" not in tb and "/l4sim/user/" not in tb  # kernel frames trimmed
    text = str(res)
    assert "died: a: KeyError: 'missing'" in text and 'table["missing"] += 1' in text


OPS: dict[str, Callable[[UserContext], Any]] = {
    "call": lambda t: t.call(1, words=[1]),
    "send": lambda t: t.send(1, words=[1]),
    "receive": lambda t: t.receive(5),
    "wait": lambda t: t.wait(),
    "reply_and_wait": lambda t: t.reply_and_wait(words=[1]),
    "reply": lambda t: t.reply(words=[1]),
    "sleep": lambda t: t.sleep(Timeout.us(1)),
    "load": lambda t: t.load(0x1000, 4),
    "store": lambda t: t.store(0x1000, b"x"),
    "compute": lambda t: t.compute(10),
    "ex_regs": lambda t: t.ex_regs(1, cancel=True),
    "delete": lambda t: t.delete(1),
    "unmap": lambda t: t.unmap(Fpage.mem(0x1000, 12)),
    "irq_receive": lambda t: t.irq_receive(1),
}


@pytest.mark.parametrize("fast", [True, False], ids=["fastpath", "checked"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_forgotten_await_is_reported_with_file_and_line(op: str, fast: bool) -> None:
    async def body(t: UserContext) -> int:
        OPS[op](t)  # no await: the operation never happens
        return 1

    k = Kernel(check=not fast)
    th = k.new_task("a").new_thread(body, name="a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = k.run()
    assert th.result == 1
    (msg,) = res.warnings
    line = body.__code__.co_firstlineno + 1
    assert msg.startswith(f"{THIS_FILE}:{line}: t.{op}(...) was never awaited")
    assert "did you forget `await`?" in msg
    assert any("did you forget `await`?" in str(w.message) and w.filename == THIS_FILE
               and w.lineno == line for w in caught)
    assert "did you forget `await`?" in str(res)


def test_using_the_coroutine_as_a_result_says_await() -> None:
    async def body(t: UserContext) -> bool:
        r = t.call(1, words=[1])
        return bool(r.ok)  # type: ignore[attr-defined]

    k = Kernel()
    k.new_task("a").new_thread(body, name="a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        why = _died(k)["a"]
    assert why.startswith("AttributeError") and "did you forget `await`?" in why


@pytest.mark.parametrize("word, kind, text", [
    (1 << 64, OverflowError, "does not fit a 64-bit message word"),
    (-1, OverflowError, "negative numbers: send w % 2**64"),
    ("5", TypeError, "a message word is an int in 0..2**64-1"),
])
@pytest.mark.parametrize("op", ["call", "send", "reply_and_wait"])
def test_words_that_do_not_fit_say_what_to_do(op: str, word: object, kind: type,
                                              text: str) -> None:
    seen: list[BaseException] = []

    async def body(t: UserContext) -> None:
        try:
            await getattr(t, op)(*([] if op == "reply_and_wait" else [1]), words=[0, word])
        except Exception as exc:
            seen.append(exc)

    k = Kernel()
    k.new_task("a").new_thread(body, name="a")
    k.run()
    (exc,) = seen
    assert type(exc) is kind and text in str(exc) and "words[1]" in str(exc)


def test_timeout_us_of_a_string_says_what_it_takes() -> None:
    with pytest.raises(TypeError, match=r"Timeout.us takes a number of microseconds.*'5'"):
        Timeout.us("5")  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [0, 1])
def test_asyncio_sleep_in_a_body_says_use_t_sleep(delay: int) -> None:
    async def body(t: UserContext) -> None:
        await asyncio.sleep(delay)

    k = Kernel(check=True)
    k.new_task("a").new_thread(body, name="a")
    why = _died(k)["a"]
    assert "await t.sleep(Timeout.us(n))" in why and "simulated time" in why
    if delay == 0:
        line = body.__code__.co_firstlineno + 1
        assert why.startswith(f"{THIS_FILE}:{line}:")


def _pair(k: Kernel, a_body: Any, b_body: Any) -> None:
    ta, tb = k.new_task("ta"), k.new_task("tb")
    sel_a: list[int] = [0]
    sel_b: list[int] = [0]
    a = ta.new_thread(a_body, sel_a, name="a")
    b = tb.new_thread(b_body, sel_b, name="b")
    sel_a[0] = ta.add_cap(b)
    sel_b[0] = tb.add_cap(a)


async def _caller(t: UserContext, sel: list[int]) -> None:
    await t.call(sel[0], words=[1])


async def _closed(t: UserContext, sel: list[int]) -> None:
    await t.receive(sel[0])


async def _idle(t: UserContext, sel: list[int]) -> None:
    await t.wait()


def test_deadlock_is_explained_as_its_wait_for_chain() -> None:
    k = Kernel(check=True)
    _pair(k, _caller, _caller)
    res = k.run()
    assert res.reason == "deadlock"
    assert res.chains == ["a → b → a (a cycle: none of them can ever go on)"]
    assert {t.name: w for t, w in res.waits.items()} == {"a": "waits to send to b",
                                                         "b": "waits to send to a"}
    assert "wait-for: a → b → a" in str(res)


def test_closed_receive_forever_is_told_apart_from_an_idle_server() -> None:
    k = Kernel(check=True)
    _pair(k, _closed, _idle)
    res = k.run()
    assert res.reason == "deadlock"
    waits = {t.name: w for t, w in res.waits.items()}
    assert waits["a"] == "waits in a closed receive for b only"
    assert waits["b"].startswith("idle: waits for a message from anyone")
    assert res.chains == ["a → b (b idle: waits for a message from anyone (open receive))"]

    k = Kernel(check=True)
    _pair(k, _idle, _idle)
    res = k.run()
    assert res.reason == "done" and res.chains == []
    assert all(w.startswith("idle") for w in res.waits.values())


def test_a_dead_pager_is_named() -> None:
    async def pager(t: UserContext) -> None:
        return None

    async def client(t: UserContext) -> None:
        await t.compute(100)
        await t.load(0x5000, 1)

    k = Kernel(check=True)
    p = k.new_task("p").new_thread(pager, name="pager")
    k.new_task("c").new_thread(client, name="client", pager=p)
    why = _died(k)["client"]
    assert "its pager pager has ended (returned)" in why


def test_sigma0_says_why_it_refuses() -> None:
    async def greedy(t: UserContext, s0: int) -> tuple[int, int]:
        r = await t.call(s0, words=[SIGMA0_FPAGE, Fpage.mem(1 << 40, 12).raw],
                         label=Label.SIGMA0, window=Fpage.all())
        return r.tag.label, r.words[0]

    k = Kernel(check=True)
    task = k.new_task("g")
    th = task.new_thread(greedy, task.add_cap(k.sigma0), name="g")
    k.run()
    assert th.result == (-12, 1)  # beyond physical memory


def test_time_units() -> None:
    k = Kernel(frequency_mhz=1000)
    assert k.us(5) == 5000 and k.ms(2) == 2_000_000 and k.cycles_to_us(2500) == 2.5
    fired: list[int] = []
    k.at(Timeout.us(3), lambda: fired.append(k.now))

    async def spin(t: UserContext) -> None:
        while True:
            await t.compute(100)

    k.new_task("a").new_thread(spin, name="spin")
    res = k.run(until=Timeout.us(10))
    assert res.reason == "until" and res.now == 10_000
    assert fired and 3000 <= fired[0] < 3200
    with pytest.raises(ValueError, match=r"k.us\(n\) converts"):
        k.run(until=1.5)  # type: ignore[arg-type]


def test_a_never_ending_program_ends_under_max_steps() -> None:
    async def spin(t: UserContext) -> None:
        while True:
            await t.compute(10_000)

    k = Kernel()
    k.new_task("a").new_thread(spin, name="spin")
    res = k.run(max_steps=50)
    assert res.reason == "steps" and res.steps == 50


def test_trace_is_a_bounded_ring_and_memory_stays_flat() -> None:
    async def ping(t: UserContext, sel: list[int]) -> None:
        while True:
            await t.call(sel[0], words=[1, 2])

    async def pong(t: UserContext, sel: list[int]) -> None:
        await t.wait()
        while True:
            await t.reply_and_wait(words=[3])

    k = Kernel(trace=True, trace_limit=2000)
    _pair(k, ping, pong)
    tracemalloc.start()
    try:
        k.run(until=k.us(2000))
        first = tracemalloc.get_traced_memory()[0]
        k.run(until=k.us(20000))
        second = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert 2000 <= len(k.events) < 4000
    assert k.events.dropped > 10 * 2000  # type: ignore[attr-defined]
    assert second - first < 1_000_000  # ten times the run, not ten times the memory
    # The newest events are kept: the last one is at the end of the run.
    assert k.events[-1].time <= k.now and k.events[-1].time > k.us(19000)


def test_transfer_events_carry_the_message() -> None:
    async def client(t: UserContext, sel: list[int]) -> None:
        await t.call(sel[0], words=[3, 7], label=0x50)

    async def server(t: UserContext, sel: list[int]) -> None:
        await t.wait()
        await t.reply(words=[10])

    k = Kernel(trace=True)
    _pair(k, client, server)
    k.run()
    details = [ev.detail for ev in k.events if ev.event == "transfer"]
    assert details[0] == "to b: 2 words | label 80 | words 3 7 | as 0x1"
    assert details[1].startswith("to a: 1 words | label 0 | words 10")


def test_a_run_does_no_work_for_the_threads_that_stay_blocked(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A run beside many blocked threads does not look at them: who is blocked, how, and
    whether the end is a deadlock are found when the result is read."""
    from l4sim.kernel.kernel import Kernel as K

    k = Kernel()
    crowd = k.new_task("crowd")

    async def waiter(t):  # type: ignore[no-untyped-def]
        await t.wait()

    for i in range(50):
        crowd.new_thread(waiter, name=f"w{i}")
    assert len(k.run().blocked) == 50
    scans: list[str] = []
    monkeypatch.setattr(K, "blocked_threads", lambda self: scans.append("b") or [])
    monkeypatch.setattr(K, "_end_reason", lambda self: scans.append("r") or "done")

    async def alone(t):  # type: ignore[no-untyped-def]
        await t.compute(10)

    crowd.new_thread(alone, name="alone")
    res = k.run()
    del res
    crowd.new_thread(alone, name="again")
    k.run()
    assert scans == []


def test_a_result_describes_the_end_of_its_own_run() -> None:
    """Read after the kernel has gone on, a result still says how its run ended."""
    k = Kernel()
    ta = k.new_task("a")

    async def waiter(t):  # type: ignore[no-untyped-def]
        await t.wait()

    async def sender(t, d):  # type: ignore[no-untyped-def]
        await t.send(d, words=[1])

    w = ta.new_thread(waiter, name="w")
    first = k.run()
    ta.new_thread(sender, ta.add_cap(w), name="s")
    second = k.run()
    assert [t.name for t in first.blocked] == ["w"] and first.reason == "done"
    assert second.blocked == [] and second.reason == "done"
