"""The emulator's own speed: wall-clock ns per call/reply round trip on l4sim.

Each case runs a client that calls a server `n` times and an echo server in
`reply_and_wait`, on a `Kernel(check=False, trace=False)`, through the public API only.
The timed region is `Kernel.run()`; building the system is outside it. As in the
peers benchmark: one warm-up run at n/10, then the median of `repeats` runs, garbage
collected before each. The floor (`floor.py`) is measured in the same process run, and
each case is reported as a multiple of it: of the floor as the peers benchmark measures
it, of the same floor once CPython has specialized it (warm), and of the floor entered
with l4sim's system-call shape (shaped: the API's own price, with no kernel work).

Before the speed rows come the cost model's rows (`model.py`): the lecture's six
configurations simulated beside the lecture's figures, then the model's predictions.
"""

from __future__ import annotations

import statistics
import sys
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from ..kernel import IpcError, Kernel, MsgTag, StringItem, Thread, Timeout
from ..kernel.costs import CostProfile
from ..user import UserContext
from .floor import floor_ns_per_rt, measure, run_floor, run_shaped_floor, warm_up

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Case:
    name: str
    words: int          # untyped words each way
    same_space: bool    # client and server in one task
    string: int = 0     # bytes of a string item per call (user-memory IPC), 0: none
    copy: str = "window"
    runs: int = 1       # round trips per run are n // runs (long IPC takes longer)
    cross_cpu: bool = False  # the server on a second CPU: every handshake is a DRQ by IPI
    cpus: int = 1            # CPUs of the kernel (2 with `cross_cpu`)
    fastpath: bool = True    # False: Kernel(fastpath=False), every IPC on the general path
    timeouts: bool = False   # finite send and receive timeouts on both sides


CASES = (
    Case("register-same-space", 2, True),
    Case("register-cross-space", 2, False),
    Case("register-cross-cpu", 2, False, cross_cpu=True, cpus=2),
    Case("register-same-cpu-of-two", 2, True, cpus=2),
    Case("utcb-8-same-space", 8, True),
    Case("utcb-63-cross-space", 63, False),
    Case("string-4k-window", 0, False, 4096, "window", 10),
    Case("string-4k-kernel-buffer", 0, False, 4096, "kernel-buffer", 10),
    Case("string-1m-window", 0, False, 1 << 20, "window", 1000),
    Case("general-register", 2, True, fastpath=False),
    Case("timeouts-both", 2, True, timeouts=True),
    Case("string-4k-mapped", 0, False, 4096, "window", 10),
)

# The timeouts of the `timeouts-both` case: long enough never to expire in a round trip
# (1 s of simulated time); the server's reply has the zero send timeout of every reply.
LONG = Timeout.us(1_000_000)


async def echo_server(t: UserContext, words: tuple[int, ...], utcb: bool) -> None:
    """Wait for a call, then answer every call with `words` and wait for the next.

    UTCB IPC (`utcb`): the request is already in our MRs; reply with it as it is,
    passing only the tag (the lecture's "copy data from one UTCB to another UTCB")."""
    await t.wait()
    if utcb:
        tag = MsgTag(words=len(words))
        while True:
            await t.reply_and_wait(tag=tag)
    while True:
        await t.reply_and_wait(words=words)


async def timed_echo_server(t: UserContext, words: tuple[int, ...]) -> None:
    """As `echo_server`, each wait bounded by `LONG`: it ends when no call comes."""
    r = await t.wait(receive_timeout=LONG)
    while r.ok:
        r = await t.reply_and_wait(words=words, receive_timeout=LONG)


async def timed_client(t: UserContext, dest: int, n: int, words: tuple[int, ...],
                       log: list[tuple[int, float]]) -> IpcError:
    """As `pinging_client`, each call with finite send and receive timeouts."""
    r = None
    start = t.now
    t0 = perf_counter()
    for _ in range(n):
        r = await t.call(dest, words=words, send_timeout=LONG, receive_timeout=LONG)
    log.append((t.now - start, perf_counter() - t0))
    return r.error if r is not None else IpcError.OK


async def pinging_client(t: UserContext, dest: int, n: int, words: tuple[int, ...],
                         utcb: bool, log: list[tuple[int, float]]) -> IpcError:
    """Call `dest` `n` times with `words`; append (simulated cycles, wall-clock seconds)
    of the n round trips to `log`; return the error of the last call.

    UTCB IPC (`utcb`): write the message into the MRs (one slice copy) and pass the tag."""
    r = None
    start = t.now
    t0 = perf_counter()
    if utcb:
        tag = MsgTag(words=len(words))
        msg = array("Q", words)
        mr = t.utcb.mr
        count = len(words)
        for _ in range(n):
            mr[:count] = msg
            r = await t.call(dest, tag=tag)
    else:
        for _ in range(n):
            r = await t.call(dest, words=words)
    log.append((t.now - start, perf_counter() - t0))
    return r.error if r is not None else IpcError.OK


STRING_SRC = 0x10000000   # the client's string, in its space
STRING_BUF = 0x20000000   # the server's receive buffer, in its space


async def string_server(t: UserContext, size: int) -> None:
    """Receive a string of `size` bytes per call into a buffer paged in beforehand, and
    answer with one word."""
    await t.store(STRING_BUF, bytes(size))
    await t.wait(buffers=[(STRING_BUF, size)])   # the buffer stays offered (BRs)
    while True:
        await t.reply_and_wait(words=(1,))


async def string_client(t: UserContext, dest: int, n: int, size: int,
                        log: list[tuple[int, float]]) -> IpcError:
    """Call `dest` `n` times with a string of `size` bytes (paged in beforehand)."""
    await t.store(STRING_SRC, bytes(range(256)) * (size // 256) + bytes(size % 256))
    item = [StringItem(STRING_SRC, size)]
    r = None
    start = t.now
    t0 = perf_counter()
    for _ in range(n):
        r = await t.call(dest, items=item)
    log.append((t.now - start, perf_counter() - t0))
    return r.error if r is not None else IpcError.OK


def add_string_pair(k: Kernel, n: int, size: int) -> tuple[Thread, list[tuple[int, float]]]:
    """A server in one task and a client in another that calls it `n` times with a
    string of `size` bytes (user-memory IPC)."""
    server = k.new_task("server").new_thread(string_server, size, name="server", priority=100)
    client_task = k.new_task("client")
    log: list[tuple[int, float]] = []
    client = client_task.new_thread(string_client, client_task.add_cap(server), n, size, log,
                                    name="client", priority=100)
    return client, log


def add_pair(k: Kernel, n: int, words: int, same_space: bool,
             server_cpu: int = 0, timeouts: bool = False) -> tuple[Thread, list[tuple[int, float]]]:
    """Add an echo server (on `server_cpu`) and a client (on CPU 0) that calls it `n`
    times to `k` (with finite timeouts on both sides: `timeouts`). Returns the client and
    the list it will log its round trips to (see `pinging_client`)."""
    msg = tuple(range(1, words + 1))
    server_task = k.new_task("server")
    client_task = server_task if same_space else k.new_task("client")
    log: list[tuple[int, float]] = []
    if timeouts:
        server = server_task.new_thread(timed_echo_server, msg, name="server", priority=100)
        client = client_task.new_thread(timed_client, client_task.add_cap(server), n, msg, log,
                                        name="client", priority=100)
        return client, log
    utcb = words > k.costs.register_words  # more than fits in registers: UTCB IPC
    server = server_task.new_thread(echo_server, msg, utcb, name="server", priority=100,
                                    cpu=server_cpu)
    dest = client_task.add_cap(server)
    client = client_task.new_thread(pinging_client, dest, n, msg, utcb, log, name="client",
                                    priority=100)
    return client, log


def run_case(case: Case, n: int) -> tuple[float, int]:
    """One run of `case`: wall-clock seconds of `k.run()` and simulated cycles of the
    `n` round trips."""
    k = Kernel(check=False, trace=False, copy=case.copy, cpus=case.cpus,
               fastpath=case.fastpath)
    if case.string:
        client, log = add_string_pair(k, n, case.string)
    else:
        client, log = add_pair(k, n, case.words, case.same_space, 1 if case.cross_cpu else 0,
                               case.timeouts)
    t0 = perf_counter()
    res = k.run()
    dt = perf_counter() - t0
    check_pair(case.name, client, log, res.died)
    if case.string:  # the round trips only: paging in the buffers is not IPC
        dt = log[0][1]
    return dt, log[0][0]


def check_pair(what: str, client: Thread, log: list[tuple[int, float]], died: list[Any]) -> None:
    """The client returned, its last call succeeded, it logged its round trips once."""
    if died or client.result != IpcError.OK or len(log) != 1:
        raise RuntimeError(f"{what}: the ping-pong did not complete: died {died!r}, "
                           f"client result {client.result!r}")


def row(case: str, ns: float, floor_ns: float, sim_cycles: float,
        samples: list[float]) -> dict[str, Any]:
    return {
        "case": case,
        "ns_per_rt": ns,
        "rt_per_s": 1e9 / ns,
        "ratio_to_floor": ns / floor_ns,
        "sim_cycles_per_rt": sim_cycles,
        "ns_min": min(samples),
        "ns_max": max(samples),
        "section": "emulator",
    }


def run_pingpong(n: int, repeats: int = 5, progress: Progress | None = None,
                 profiles: Mapping[str, CostProfile] | None = None) -> dict[str, Any]:
    """Simulate the cost model's configurations, then measure the floor and every speed
    case with `n` round trips per timed run.

    Returns {"rows", "model_rows", "speed_rows", "floor_ns_per_rt", "floor_warm_ns_per_rt",
    "shaped_floor_ns_per_rt", "n", "repeats", "python"}. `model_rows` are
    `model.run_model(profiles)` (section "lecture" with lecture_cycles_per_rt,
    lecture_ns_per_rt, rel_diff; then section "prediction"); `speed_rows` (section
    "emulator") are {case, ns_per_rt, rt_per_s, ratio_to_floor, ratio_to_warm_floor,
    ratio_to_shaped_floor, sim_cycles_per_rt, ns_min, ns_max}; `rows` is both lists in
    that order. Every row has `case`, `section` and `sim_cycles_per_rt`."""
    from .model import run_model  # model.py builds on this module's ping-pong pair

    if n < 1 or repeats < 1:
        raise ValueError("n and repeats must be positive")
    say = progress or (lambda _msg: None)
    say("cost model: the lecture's configurations and the predictions")
    model_rows = run_model(profiles)
    say(f"floor (n={n})")
    # As pingpong_peers.py measures it (the definition): in a fresh process its
    # loop has been entered fewer than 8 times, so CPython has not specialized it yet.
    floor_ns = floor_ns_per_rt(n, repeats)
    warm_up(run_floor)
    floor_warm_ns = floor_ns_per_rt(n, repeats)  # the same, specialized: the true floor
    say(f"the floor with l4sim's system-call shape (n={n})")
    warm_up(run_shaped_floor)
    shaped_ns = statistics.median(measure(run_shaped_floor, n, repeats))
    warm_up(lambda m: run_case(CASES[0], m)[0])  # l4sim's loop gets the same chance
    rows = []
    for case in CASES:
        m_n = max(1, n // case.runs)
        say(f"{case.name} (n={m_n})")
        sim: list[int] = []

        def run(m: int, case: Case = case, sim: list[int] = sim, m_n: int = m_n) -> float:
            dt, cycles = run_case(case, m)
            if m == m_n:
                sim.append(cycles)
            return dt

        samples = measure(run, m_n, repeats)
        if len(set(sim)) != 1:  # the simulation is deterministic: every run agrees
            raise RuntimeError(f"{case.name}: simulated cycles differ between runs: {sim}")
        rows.append(row(case.name, statistics.median(samples), floor_ns, sim[0] / m_n, samples))
        rows[-1]["ratio_to_warm_floor"] = rows[-1]["ns_per_rt"] / floor_warm_ns
        rows[-1]["ratio_to_shaped_floor"] = rows[-1]["ns_per_rt"] / shaped_ns
        if case.string:
            rows[-1]["string_bytes"] = case.string
            rows[-1]["copy"] = case.copy
            rows[-1]["gb_per_s"] = case.string / rows[-1]["ns_per_rt"]  # bytes per ns = GB/s
    return {
        "rows": model_rows + rows,
        "model_rows": model_rows,
        "speed_rows": rows,
        "floor_ns_per_rt": floor_ns,
        "floor_warm_ns_per_rt": floor_warm_ns,
        "shaped_floor_ns_per_rt": shaped_ns,
        "n": n,
        "repeats": repeats,
        "python": sys.version.split()[0],
    }
