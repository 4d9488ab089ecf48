"""The floor: what a call/reply round trip costs with trivial kernel logic.

Two `async def` threads and a minimal synchronous-IPC kernel loop, built the way l4sim
is built (a thread is a coroutine chain; one trap yields a request to the CPU loop; on a
rendezvous the loop switches straight to the partner) but with no capabilities, no
state machine, no MRs, no cost model. Whatever l4sim spends above this is the price of
its IPC semantics, not of the thread-as-coroutine design.

The shaped floor (`run_shaped_floor`) is the same kernel entered as l4sim's threads
enter theirs: `await t.call(dest, words=...)` with l4sim's keyword parameters, and an
`IpcResult` back from every IPC. It splits what l4sim spends above the floor into the
price of the API's shape and the work of its IPC.
"""

from __future__ import annotations

import gc
import statistics
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Sequence
from time import perf_counter
from typing import Any

from ..kernel.abi import NEVER, IpcError, MsgTag, Timeout
from ..kernel.result import IpcResult, new_result

CALL, REPLY_WAIT, WAIT = 0, 1, 2
OK = IpcError.OK

Request = tuple[int, "FloorThread | None", Any]  # (op, destination, message)


@types.coroutine
def trap(op: int, dest: FloorThread | None, msg: int) -> Generator[Request, Any, Any]:
    """The one kernel entry: hand a request to the loop, get back what it resumes us with."""
    return (yield (op, dest, msg))


class FloorThread:
    """A thread of the floor kernel: its chain, whether it waits openly, its senders."""

    __slots__ = ("coro", "result", "senders", "waiting")

    def __init__(self, coro: Coroutine[Request, Any, Any]) -> None:
        self.coro = coro
        self.waiting = False
        self.senders: deque[tuple[FloorThread, int]] = deque()
        self.result: Any = None


def run_kernel(threads: list[FloorThread]) -> None:
    """The CPU loop of the floor kernel: the only place that calls `send()`.

    CALL(dest, msg): deliver to dest if it waits (switch to it), else queue and block.
    REPLY_WAIT(caller, msg): resume the caller with msg (switch to it); wait for the
    next message, or take the first queued sender (it becomes ready).
    WAIT: take the first queued sender or block in an open wait.
    A receiver is resumed with (sender, msg).
    """
    ready: deque[tuple[FloorThread, Any]] = deque((th, None) for th in threads)
    while ready:
        cur: FloorThread | None
        cur, val = ready.popleft()
        while cur is not None:
            try:
                op, dest, msg = cur.coro.send(val)
            except StopIteration as stop:
                cur.result = stop.value
                break
            if op == CALL:
                assert dest is not None
                if dest.waiting:  # rendezvous: switch directly to the receiver
                    dest.waiting = False
                    cur, val = dest, (cur, msg)
                else:
                    dest.senders.append((cur, msg))
                    cur = None
            elif op == REPLY_WAIT:
                if cur.senders:
                    ready.append((cur, cur.senders.popleft()))
                else:
                    cur.waiting = True
                cur, val = dest, msg  # switch directly to the caller with the reply
            elif cur.senders:  # WAIT, a sender is queued
                val = cur.senders.popleft()
            else:
                cur.waiting = True
                cur = None


def run_floor(n: int) -> float:
    """Run `n` round trips on the floor kernel; wall-clock seconds of the loop."""
    async def client_body() -> int:
        last = -1
        for i in range(n):
            last = await trap(CALL, server, i)
        return last

    async def server_body() -> None:
        caller, msg = await trap(WAIT, None, 0)
        while True:
            caller, msg = await trap(REPLY_WAIT, caller, msg)

    server = FloorThread(server_body())
    client = FloorThread(client_body())
    t0 = perf_counter()
    run_kernel([server, client])
    dt = perf_counter() - t0
    server.coro.close()
    if client.result != n - 1:
        raise AssertionError(f"floor kernel lost a message: {client.result} != {n - 1}")
    return dt


# --- the floor with l4sim's system-call shape -----------------------------------------
# The same loop and rendezvous, but the threads enter it as l4sim's users do: `await
# t.call(dest, words=...)`, a method with l4sim's keyword parameters, and each IPC
# returns an `IpcResult` (built as l4sim's fast path builds it). No capability, state,
# MR, cost or timeslice: what remains above the floor is the price of the API's shape,
# which no kernel behind that API can go below; a case's distance from it is the work
# of l4sim's IPC itself.


class ShapeContext:
    """A thread's `t` on the shaped floor: its capabilities (selector -> thread) and the
    caller its next reply goes to."""

    __slots__ = ("caller", "caps")

    def __init__(self) -> None:
        self.caps: list[FloorThread | None] = [None, None]
        self.caller: FloorThread | None = None

    @types.coroutine
    def call(self, dest: int, words: Sequence[int] = (), label: int = 0,
             items: Sequence[object] = (), send_timeout: Timeout = NEVER,
             receive_timeout: Timeout = NEVER, pagefault_timeout: Timeout = NEVER,
             tag: MsgTag | None = None, window: object = None, buffers: object = None
             ) -> Generator[Request, Any, IpcResult]:
        reply = yield (CALL, self.caps[dest], words)
        # The result built as the fast path builds it, written out in each operation as
        # there: a shared helper would add a Python call per IPC to what is measured.
        r: IpcResult = new_result(IpcResult)
        r.error = OK
        r.label = 0
        r._tag = len(reply)
        r._words = reply
        return r

    @types.coroutine
    def wait(self, receive_timeout: Timeout = NEVER, pagefault_timeout: Timeout = NEVER,
             window: object = None, buffers: object = None
             ) -> Generator[Request, Any, IpcResult]:
        self.caller, msg = yield (WAIT, None, ())
        r: IpcResult = new_result(IpcResult)
        r.error = OK
        r.label = 0
        r._tag = len(msg)
        r._words = msg
        return r

    @types.coroutine
    def reply_and_wait(self, words: Sequence[int] = (), label: int = 0,
                       items: Sequence[object] = (), receive_timeout: Timeout = NEVER,
                       pagefault_timeout: Timeout = NEVER, tag: MsgTag | None = None,
                       window: object = None, buffers: object = None
                       ) -> Generator[Request, Any, IpcResult]:
        self.caller, msg = yield (REPLY_WAIT, self.caller, words)
        r: IpcResult = new_result(IpcResult)
        r.error = OK
        r.label = 0
        r._tag = len(msg)
        r._words = msg
        return r


def run_shaped_floor(n: int) -> float:
    """Run `n` round trips on the floor kernel entered with l4sim's system-call shape, as
    `l4sim bench pingpong`'s register case does (a call with two words, an echo server
    in `reply_and_wait`); wall-clock seconds of the loop."""
    words = (1, 2)

    async def client_body(t: ShapeContext) -> IpcResult | None:
        r = None
        for _ in range(n):
            r = await t.call(1, words=words)
        return r

    async def server_body(t: ShapeContext) -> None:
        await t.wait()
        while True:
            await t.reply_and_wait(words=words)

    client_t, server_t = ShapeContext(), ShapeContext()
    server = FloorThread(server_body(server_t))
    client = FloorThread(client_body(client_t))
    client_t.caps[1] = server
    t0 = perf_counter()
    run_kernel([server, client])
    dt = perf_counter() - t0
    server.coro.close()
    if not (isinstance(client.result, IpcResult) and client.result.words == words):
        raise AssertionError(f"shaped floor lost a message: {client.result!r}")
    return dt


def measure(run: Callable[[int], float], n: int, repeats: int = 5) -> list[float]:
    """As the peers benchmark does: one untimed warm-up run at n/10, then `repeats`
    timed runs (garbage collected before each); ns per round trip of each."""
    run(max(n // 10, 1))
    samples = []
    for _ in range(repeats):
        gc.collect()
        samples.append(run(n) / n * 1e9)
    return samples


def floor_ns_per_rt(n: int, repeats: int = 5) -> float:
    """Median ns per round trip of the floor kernel."""
    return statistics.median(measure(run_floor, n, repeats))


# CPython 3.11 specializes ("quickens") a function's bytecode only after it has been
# entered 8 times. A loop entered once per measurement, like `run_kernel` here and in
# pingpong_peers.py, therefore runs unspecialized in the first runs, and 40 % slower.
QUICKENING_CALLS = 10


def warm_up(run: Callable[[int], float]) -> None:
    """Enter `run` often enough that every loop in it runs specialized afterwards."""
    for _ in range(QUICKENING_CALLS):
        run(100)
