"""`l4sim bench posix`: l4sim's POSIX servers beside the host's real primitives.

Three cases, each a loop of operation pairs done by one client, measured in the same
process, wall-clock:

- `semaphore`: post then wait (l4sim's semaphore server; the host's `posix_ipc`
  semaphore, sem_post / sem_wait);
- `message-queue`: send then receive a 64-byte message (l4sim's queue server; the
  host's `posix_ipc` message queue, mq_send / mq_receive);
- `pipe`: write then read 4 KiB (l4sim's pipe server, the bytes carried by long IPC
  both ways; the host's `os.pipe`), with the throughput in MB/s.

l4sim runs on `Kernel(check=False, trace=False)`; only the client's loop is timed (not
booting the servers and opening the connections). The host's figure is the same loop
on the real primitive. `ratio` is l4sim over host. Each row also gives the simulated
cycles of one pair. Without `posix_ipc` (pip install posix_ipc), the host figures of
the first two cases are missing (null) and so is their ratio.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from ..kernel.kernel import Kernel
from ..lib.boot import System
from ..lib.framework import Env
from ..lib.mqueue import MessageQueue
from ..lib.pipe import Pipe
from ..lib.semaphore import Semaphore
from ..user.context import UserContext

MESSAGE = bytes(range(64))
BLOCK = bytes(i % 251 for i in range(4096))
Progress = Callable[[str], None]


def _l4sim(case: str, n: int) -> tuple[float, float]:
    """(seconds of wall-clock, simulated cycles) for n pairs of `case` in l4sim."""
    k = Kernel()
    servers = {"semaphore": "sem", "message-queue": "mq", "pipe": "pipe"}
    system = System(k, [servers[case]])
    out: dict[str, float] = {}

    async def client(t: UserContext, env: Env) -> None:
        if case == "semaphore":
            sem = await Semaphore.open(t, env, "/bench", os.O_CREAT, 0)
            await sem.post()
            await sem.wait()      # warm: the connection and the first faults
            start, cycles = time.perf_counter(), t.now
            for _ in range(n):
                await sem.post()
                await sem.wait()
        elif case == "message-queue":
            q = await MessageQueue.open(t, env, "/bench", os.O_CREAT | os.O_RDWR, 4, 64)
            await q.send(MESSAGE)
            await q.receive()
            start, cycles = time.perf_counter(), t.now
            for _ in range(n):
                await q.send(MESSAGE)
                data, _prio = await q.receive()
            assert data == MESSAGE
        else:
            rd, wr = await Pipe.pipe(t, env)
            await wr.write(BLOCK)
            await rd.read(len(BLOCK))
            start, cycles = time.perf_counter(), t.now
            for _ in range(n):
                await wr.write(BLOCK)
                data = await rd.read(len(BLOCK))
            assert data == BLOCK
        out["s"] = time.perf_counter() - start
        out["cycles"] = t.now - cycles

    system.process("client").thread(client, name="client")
    result = k.run()
    if result.died:
        raise RuntimeError(f"bench client died: {result.died}")
    return out["s"], out["cycles"]


def _host(case: str, n: int) -> float | None:
    """Seconds for n pairs of `case` on the host's real primitive (None: no posix_ipc)."""
    if case == "pipe":
        r, w = os.pipe()
        try:
            os.write(w, BLOCK)
            os.read(r, len(BLOCK))
            start = time.perf_counter()
            for _ in range(n):
                os.write(w, BLOCK)
                os.read(r, len(BLOCK))
            return time.perf_counter() - start
        finally:
            os.close(r)
            os.close(w)
    try:
        import posix_ipc  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    name = f"/l4sim-bench-{os.getpid()}"
    if case == "semaphore":
        sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, initial_value=0)
        try:
            start = time.perf_counter()
            for _ in range(n):
                sem.release()
                sem.acquire()
            return float(time.perf_counter() - start)
        finally:
            sem.unlink()
            sem.close()
    q = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_messages=4, max_message_size=64)
    try:
        start = time.perf_counter()
        for _ in range(n):
            q.send(MESSAGE)
            q.receive()
        return float(time.perf_counter() - start)
    finally:
        q.unlink()
        q.close()


CASES = ("semaphore", "message-queue", "pipe")


def run_posix(n: int, repeats: int, progress: Progress | None = None) -> dict[str, Any]:
    """Every case: the median of `repeats` timed loops of n pairs, each side."""
    rows = []
    for case in CASES:
        if progress:
            progress(f"{case}: {repeats} x {n:,} pairs in l4sim and on the host")
        sims = [_l4sim(case, n) for _ in range(repeats)]
        l4_s = statistics.median(s for s, _ in sims)
        hosts = [_host(case, n) for _ in range(repeats)]
        host_s = None if hosts[0] is None else statistics.median(h for h in hosts if h is not None)
        l4_us = l4_s / n * 1e6
        host_us = None if host_s is None else host_s / n * 1e6
        row: dict[str, Any] = {
            "case": case,
            "pair": {"semaphore": "post + wait", "message-queue": "send + receive 64 B",
                     "pipe": "write + read 4 KiB"}[case],
            "n": n,
            "l4sim_us_per_op": l4_us,
            "host_us_per_op": host_us,
            "ratio": None if host_us is None else l4_us / host_us,
            "sim_cycles_per_op": sims[0][1] / n,
        }
        if case == "pipe":
            row["l4sim_mb_per_s"] = len(BLOCK) / (l4_us / 1e6) / 1e6
            row["host_mb_per_s"] = None if host_us is None else len(BLOCK) / (host_us / 1e6) / 1e6
        rows.append(row)
    return {"python": platform.python_version(), "machine": platform.machine(),
            "n": n, "repeats": repeats, "unit": "one op = one pair", "rows": rows}
