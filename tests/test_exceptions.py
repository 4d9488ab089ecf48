"""Exception IPC and preemption IPC (SPEC S13). Every kernel runs with check=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import load_example
from l4sim import IpcError, Kernel, Label, Timeout

OK = IpcError.OK


def _handler_log(k: Kernel, log: list[Any], reply: Any) -> Any:
    async def handler(t: Any) -> None:
        r = await t.wait()
        while True:
            log.append((r.tag.label, r.label, r.words[:2], k.code_location(r.words[2])))
            r = await t.reply_and_wait(words=reply(r))
    return handler


def test_exception_with_resume_returns_the_handlers_words() -> None:
    k = Kernel(check=True)
    task = k.new_task("t")
    log: list[Any] = []
    h = task.new_thread(_handler_log(k, log, lambda r: [r.words[1] * 2, 7]), name="h",
                        priority=200)
    out: list[Any] = []

    async def worker(t: Any) -> None:
        r = await t.raise_exception(6, 21)
        out.append((r.error, r.words, r.label))

    w = task.new_thread(worker, name="w", exc_handler=h)
    res = k.run()
    assert res.reason == "done" and res.died == []
    assert out == [(OK, (42, 7), h.tid)]
    assert len(log) == 1
    tag_label, label, words, where = log[0]
    assert (tag_label, label, words) == (Label.EXCEPTION, w.tid, (6, 21))
    assert where.endswith("test_exceptions.py:" + str(_line_of("r = await t.raise_exception(6, 21)")))


def _line_of(text: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_exception_with_kill_the_handler_deletes_the_thread() -> None:
    k = Kernel(check=True)
    task = k.new_task("t")
    sel: list[int] = []
    after: list[str] = []

    async def handler(t: Any) -> None:
        r = await t.wait()
        assert r.tag.label == Label.EXCEPTION
        assert await t.delete(sel[0]) == OK

    async def worker(t: Any) -> None:
        await t.raise_exception(0)
        after.append("resumed")

    async def bystander(t: Any) -> str:
        await t.sleep(Timeout.us(5))
        return "still running"

    h = task.new_thread(handler, name="h", priority=200)
    w = task.new_thread(worker, name="w", exc_handler=h)
    b = task.new_thread(bystander, name="b")
    sel.append(task.add_cap(w))
    res = k.run()
    assert res.reason == "done" and after == []
    assert [(th.name, why) for th, why in res.died] == [("w", "deleted")]
    assert b.result == "still running"


def test_exception_with_no_handler_kills_the_thread_and_the_run_goes_on() -> None:
    k = Kernel(check=True)
    task = k.new_task("t")
    after: list[str] = []

    async def worker(t: Any) -> None:
        await t.raise_exception(14, 0x2)
        after.append("resumed")

    async def other(t: Any) -> str:
        await t.compute(10_000)
        return "done"

    task.new_thread(worker, name="w")
    o = task.new_thread(other, name="o")
    res = k.run()
    assert res.reason == "done" and after == [] and o.result == "done"
    ((th, why),) = res.died
    assert th.name == "w"
    assert why.startswith("exception trap 14 (code 0x2) at ") and why.endswith("no exception handler")


def test_escaped_python_exception_is_reported_then_ends_the_thread() -> None:
    k = Kernel(check=True)
    task = k.new_task("t")
    log: list[Any] = []
    h = task.new_thread(_handler_log(k, log, lambda r: []), name="h", priority=200)

    async def worker(t: Any) -> None:
        await t.compute(100)
        raise KeyError("lost")

    w = task.new_thread(worker, name="w", exc_handler=h)
    res = k.run()
    assert res.reason == "done"
    assert [(th.name, why) for th, why in res.died] == [("w", "KeyError: 'lost'")]
    assert log == [(Label.EXCEPTION, w.tid, (13, 0),
                    f"{__file__}:{_line_of('raise KeyError(' + chr(34) + 'lost')}")]


def test_escaped_exception_with_a_dead_handler_still_ends_only_that_thread() -> None:
    k = Kernel(check=True)
    task = k.new_task("t")

    async def handler(t: Any) -> None:
        return None                     # gone before anyone faults

    async def worker(t: Any) -> None:
        await t.sleep(Timeout.us(1))
        raise ValueError("x")

    h = task.new_thread(handler, name="h", priority=200)
    task.new_thread(worker, name="w", exc_handler=h)
    res = k.run()
    assert res.reason == "done"
    assert [(th.name, why) for th, why in res.died] == [("w", "ValueError: x")]


def test_raise_exception_misuse_raises_in_user_code() -> None:
    k = Kernel(check=True)
    task = k.new_task("t")
    caught: list[str] = []

    async def worker(t: Any) -> None:
        for bad in ((-1, 0), (1 << 64, 0), ("6", 0), (6, 1.5)):
            try:
                await t.raise_exception(*bad)
            except (TypeError, OverflowError) as exc:
                caught.append(type(exc).__name__)

    task.new_thread(worker, name="w")
    assert k.run().reason == "done"
    assert caught == ["OverflowError", "OverflowError", "TypeError", "TypeError"]


def test_code_location_round_trip_and_unknown_ip() -> None:
    k = Kernel()
    ip = k.code_ip("/a/b.py", 42)
    assert k.code_ip("/a/b.py", 42) == ip and k.code_location(ip) == "/a/b.py:42"
    assert k.code_ip("/c.py", 1) == 1 << 32 | 1
    with pytest.raises(ValueError):
        k.code_location(99 << 32)


def test_preemption_messages_counted_against_the_timeslices_that_expired() -> None:
    slice_cycles = 10_000
    k = Kernel(check=True, trace=True, timeslice=slice_cycles)
    task = k.new_task("t")
    reports: list[tuple[int, int, int]] = []

    async def preempter(t: Any) -> None:
        while True:
            r = await t.wait()
            assert r.tag.label == Label.PREEMPTION
            reports.append((r.label, r.words[0], r.words[1]))

    async def worker(t: Any) -> None:
        await t.compute(5 * slice_cycles)

    p = task.new_thread(preempter, name="p", priority=200)
    a = task.new_thread(worker, name="a", preempter=p)
    task.new_thread(worker, name="b")            # b has no preempter: nothing reported
    assert k.run().reason == "done"
    expired = [e.time for e in k.events if e.event == "timeslice" and e.thread == "a"]
    assert len(expired) == 5                     # a and b alternate, slice by slice
    assert reports == [(a.tid, when, 0) for when in expired]
    assert len([e for e in k.events if e.event == "timeslice" and e.thread == "b"]) >= 4


def test_preemption_by_a_higher_priority_thread_is_reported() -> None:
    k = Kernel(check=True, trace=True)
    task = k.new_task("t")
    reports: list[int] = []

    async def preempter(t: Any) -> None:
        while True:
            r = await t.wait()
            reports.append(r.words[0])

    async def low(t: Any) -> None:
        await t.compute(100_000)

    async def high(t: Any) -> None:
        await t.sleep(Timeout.cycles(30_000))

    p = task.new_thread(preempter, name="p", priority=200)
    task.new_thread(low, name="low", priority=10, preempter=p)
    task.new_thread(high, name="high", priority=100)
    assert k.run().reason == "done"
    wake = next(e.time for e in k.events if e.thread == "high" and e.event == "timeout")
    began = next(e.time for e in k.events if e.thread == "high" and e.detail == "receive_wait")
    assert wake == began + 30_000                          # high's sleep expires exactly then
    # the report carries the time of the preemption: after the timer tick that woke high
    assert reports == [wake + k.costs.timer_tick]


def test_exception_handler_example() -> None:
    ex = load_example("exception_handler")
    k = Kernel(check=True)
    ex.build(k)
    ex.report(k, k.run())


def test_watchdog_example() -> None:
    ex = load_example("watchdog")
    k = Kernel(check=True)
    ex.build(k)
    ex.report(k, k.run())
