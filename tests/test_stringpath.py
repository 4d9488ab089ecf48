"""The string fast path (`kernel/stringpath.py`) is equivalent to the general path.

Each scenario runs on `Kernel(fastpath=True)` and `Kernel(fastpath=False)`: every
result (error, label, words, string bytes) with the simulated time it returned at, the
bytes that arrived, the final states, the run's result and `k.now` must be the same. The
scenarios where the fast path applies also show that it was taken (fewer copies by
`longipc.copy_strings`); the others (a cut string, a page boundary, a page fault, a
ready thread, a higher-priority client, a timeslice or an event due during the copy, a
step limit) show that it steps aside exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import l4sim.kernel.longipc as longipc
from l4sim import IpcError, Kernel, StringItem, Timeout

SRC = 0x10000
BUF = 0x200000


@dataclass(frozen=True)
class Scene:
    size: int = 4096
    src_off: int = 0            # the string's offset into its page
    buf_size: int = 4096
    buf_off: int = 0
    copy: str = "window"
    same_task: bool = False
    client_prio: int = 100
    server_prio: int = 100
    rounds: int = 4
    page_in_buffer: bool = True
    server_first: bool = True   # the server waits before the first call
    hog: int = 0                # a computing thread of the client's priority: its cycles
    ticker: int = 0             # a higher-priority thread sleeping this many cycles, 60 times
    timeslice: int | None = None
    steps: int | None = None    # run(max_steps=...) until done


def _run(sc: Scene, fastpath: bool) -> tuple[Any, ...]:
    k = Kernel(fastpath=fastpath, copy=sc.copy, timeslice=sc.timeslice)
    log: list[tuple[Any, ...]] = []
    received: list[bytes] = []
    span = max(sc.size, sc.buf_size) + 2 * 4096

    async def server(t: Any) -> None:
        if sc.page_in_buffer:
            await t.store(BUF, bytes(span))
        if not sc.server_first:
            await t.compute(5_000)
        r = await t.wait(buffers=[(BUF + sc.buf_off, sc.buf_size)])
        while True:
            log.append(("s", r.error, r.label, tuple(r.words), r.string_bytes, t.now))
            received.append(await t.load(BUF + sc.buf_off, min(sc.size, sc.buf_size)))
            r = await t.reply_and_wait(words=(len(log),))
            if r.error == IpcError.ENOT_EXISTENT:  # no caller to reply to (a cut call)
                r = await t.wait()

    async def client(t: Any, dest: int) -> None:
        data = bytes((i * 7 + 3) & 0xFF for i in range(sc.size))
        await t.store(SRC + sc.src_off, data)
        item = [StringItem(SRC + sc.src_off, sc.size)]
        for _ in range(sc.rounds):
            r = await t.call(dest, items=item)
            log.append(("c", r.error, r.label, tuple(r.words), r.string_bytes, t.now))

    async def hog(t: Any) -> None:
        for _ in range(3):
            await t.compute(sc.hog)

    async def ticker(t: Any) -> None:
        for _ in range(60):
            await t.sleep(Timeout.at(t.now + sc.ticker))
            log.append(("t", t.now))

    st = k.new_task("server")
    srv = st.new_thread(server, name="server", priority=sc.server_prio)
    ct = st if sc.same_task else k.new_task("client")
    ct.new_thread(client, ct.add_cap(srv), name="client", priority=sc.client_prio)
    if sc.hog:
        ct.new_thread(hog, name="hog", priority=sc.client_prio)
    if sc.ticker:
        ct.new_thread(ticker, name="ticker", priority=200)
    runs = []
    if sc.steps:
        while True:
            res = k.run(max_steps=sc.steps)
            runs.append((res.reason, res.now))
            if res.reason != "steps":
                break
    else:
        res = k.run()
        runs.append((res.reason, res.now))
    states = sorted((th.name, th.state) for th in k.threads.values())
    return tuple(log), tuple(received), tuple(runs), states, k.now


def _copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    real = longipc.copy_strings

    async def counting(k: Any, x: Any) -> Any:
        count[0] += 1
        return await real(k, x)

    monkeypatch.setattr(longipc, "copy_strings", counting)
    return count


def _equivalent(sc: Scene, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    count = _copies(monkeypatch)
    fast = _run(sc, True)
    fast_copies = count[0]
    count[0] = 0
    slow = _run(sc, False)
    assert fast == slow
    return fast_copies, count[0]


TAKEN = [
    Scene(),
    Scene(copy="kernel-buffer"),
    Scene(same_task=True),
    Scene(copy="kernel-buffer", same_task=True),
    Scene(size=5, buf_size=100, buf_off=17),
    Scene(size=1000, src_off=3000 - 2048, buf_size=2000, buf_off=1000),
    Scene(server_prio=150),
    Scene(client_prio=50),
]


@pytest.mark.parametrize("sc", TAKEN, ids=[repr(s) for s in TAKEN])
def test_string_calls_take_the_fast_path_and_match_the_general_path(
        sc: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _equivalent(sc, monkeypatch)
    assert slow == sc.rounds and fast < slow


STEPS_ASIDE = [
    Scene(buf_size=100),                            # cut: the buffer is too small
    Scene(size=3000, src_off=2000),                 # the string crosses a page
    Scene(size=3000, buf_off=2000),                 # the buffer crosses a page
    Scene(page_in_buffer=False),                    # a page fault in the receiver's space
    Scene(client_prio=150),                         # the server would inherit the priority
    Scene(hog=20_000),                              # a ready thread of the same priority
    Scene(ticker=700, rounds=8),                    # events due during the copies
    Scene(ticker=1_100, rounds=8),
    Scene(ticker=2_900, rounds=8, copy="kernel-buffer"),
    Scene(timeslice=2_000, hog=5_000),              # timeslices end during the copies
    Scene(server_first=False),                      # the client arrives first
    Scene(steps=3),                                 # a step limit: no fast path at all
    Scene(size=0, buf_size=0),
]


@pytest.mark.parametrize("sc", STEPS_ASIDE, ids=[repr(s) for s in STEPS_ASIDE])
def test_string_calls_the_fast_path_cannot_take_match_the_general_path(
        sc: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    _equivalent(sc, monkeypatch)


def test_bytes_arrive_and_the_counts_are_reported() -> None:
    log, received, *_ = _run(Scene(size=300, buf_size=400, rounds=2), True)
    data = bytes((i * 7 + 3) & 0xFF for i in range(300))
    assert received == (data, data)
    assert [e[4] for e in log if e[0] == "s"] == [(300,), (300,)]
