"""Scaling: does a crowd of threads blocked in IPC slow the IPC path down, and what does
one blocked thread cost in memory?

The crowd is `threads` threads truly blocked in IPC, in a task of their own:
- "send": each calls one of a few sink threads that never receive (they sleep forever),
  so it sits in SEND_WAIT in the sink's sender queue;
- "wait": each waits openly for a message that never comes (RECEIVE_WAIT);
- "mixed" (default): half of each.
Memory is measured with tracemalloc around creating the crowd and running it until every
thread of it has blocked. Then the register-same-space round trip (as in `pingpong.py`)
runs beside the blocked crowd, and again on a kernel with only the two threads.
"""

from __future__ import annotations

import gc
import resource
import statistics
import tracemalloc
from time import perf_counter
from typing import Any

from ..kernel import Kernel, Timeout
from ..user import UserContext
from .pingpong import Progress, check_pair, echo_server, pinging_client

KINDS = ("mixed", "send", "wait")
SINKS = 4
PAIR_WORDS = 2


async def sink(t: UserContext) -> None:
    """A server that is never ready: it sleeps forever, so its callers queue."""
    await t.sleep(Timeout.never())


async def blocked_caller(t: UserContext, dest: int) -> None:
    await t.call(dest, words=(1, 2))


async def blocked_waiter(t: UserContext) -> None:
    await t.wait()


def add_crowd(k: Kernel, threads: int, kind: str) -> int:
    """Create the crowd and run `k` until all of it has blocked; returns how many
    threads (crowd and sinks) are blocked in IPC."""
    sink_task = k.new_task("sinks")
    sinks = [sink_task.new_thread(sink, name=f"sink{i}", priority=100) for i in range(SINKS)]
    crowd = k.new_task("crowd")
    sink_sels = [crowd.add_cap(s) for s in sinks]
    senders = {"send": threads, "wait": 0, "mixed": threads // 2}[kind]
    new_thread = crowd.new_thread
    for i in range(senders):
        new_thread(blocked_caller, sink_sels[i % SINKS], name=f"c{i}", priority=100)
    for i in range(senders, threads):
        new_thread(blocked_waiter, name=f"w{i}", priority=100)
    res = k.run()
    blocked = len(res.blocked)
    if res.died or blocked != threads + SINKS:
        raise RuntimeError(f"the crowd did not block as planned: {res!r}")
    return blocked


class PairBench:
    """The register-same-space ping-pong on one kernel, run again and again: the echo
    server stays in its wait between runs, each run brings a new client."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.task = k.new_task("pair")
        msg = tuple(range(1, PAIR_WORDS + 1))
        self.msg = msg
        server = self.task.new_thread(echo_server, msg, False, name="server", priority=100)
        self.dest = self.task.add_cap(server)
        self.run_ns: list[float] = []    # per round trip, timing `k.run()`
        self.loop_ns: list[float] = []   # per round trip, timing the client's loop
        self.sim: list[float] = []       # simulated cycles per round trip

    def run(self, n: int, keep: bool = True) -> None:
        """`n` round trips with a new client; `keep` the figures of this run."""
        log: list[tuple[int, float]] = []
        client = self.task.new_thread(pinging_client, self.dest, n, self.msg, False, log,
                                      name="client", priority=100)
        t0 = perf_counter()
        res = self.k.run()
        dt = perf_counter() - t0
        check_pair("scale", client, log, res.died)
        if keep:
            self.run_ns.append(dt / n * 1e9)
            self.loop_ns.append(log[0][1] / n * 1e9)
            self.sim.append(log[0][0] / n)


def run_scale(threads: int = 100_000, n: int = 100_000, repeats: int = 5, kind: str = "mixed",
              progress: Progress | None = None) -> dict[str, Any]:
    """Blocked-crowd scaling figures; see the module docstring.

    The crowded and the two-thread kernel run alternately (one warm-up run each at n/10,
    then `repeats` runs each, garbage collected before each), so that drift of the
    machine's speed affects both alike; medians are reported. `ns_per_rt` times
    `Kernel.run()` (as `pingpong.py` does), which includes the per-run work (a thread's
    end, the end-of-run result); `loop_ns_per_rt` times only the client's loop of calls."""
    if threads < 1 or n < 1 or repeats < 1:
        raise ValueError("threads, n and repeats must be positive")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    say = progress or (lambda _msg: None)

    say(f"creating {threads} threads and blocking them in IPC ({kind}; memory traced)")
    k = Kernel(check=False, trace=False)
    gc.collect()
    t0 = perf_counter()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        add_crowd(k, threads, kind)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    setup_s = perf_counter() - t0

    say(f"{n} round trips x {repeats}, beside {threads} blocked threads and alone")
    crowded = PairBench(k)
    alone = PairBench(Kernel(check=False, trace=False))
    for bench in (crowded, alone):
        bench.run(max(n // 10, 1), keep=False)
    for _ in range(repeats):
        for bench in (crowded, alone):
            gc.collect()
            bench.run(n)
    # Runs go on in one kernel, so some cross a timeslice end more than others (its
    # timer tick adds a fraction of a cycle per round trip): compare whole cycles.
    sims = {round(s) for s in crowded.sim + alone.sim}
    if len(sims) != 1:
        raise RuntimeError(f"simulated round trips differ: {crowded.sim} vs {alone.sim}")
    med = statistics.median
    ns, two_ns = med(crowded.run_ns), med(alone.run_ns)
    loop_ns, two_loop_ns = med(crowded.loop_ns), med(alone.loop_ns)
    return {
        "threads": threads,
        "kind": kind,
        "n": n,
        "ns_per_rt": ns,
        "two_thread_ns_per_rt": two_ns,
        "ratio_to_two_threads": ns / two_ns,
        "loop_ns_per_rt": loop_ns,
        "two_thread_loop_ns_per_rt": two_loop_ns,
        "loop_ratio_to_two_threads": loop_ns / two_loop_ns,
        "bytes_per_blocked_thread": (after - before) / threads,
        "crowd_setup_s": setup_s,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "sim_cycles_per_rt": crowded.sim[0],
    }
