"""A timeout racing with a reply, handled: the library withdraws a timed-out query
(the correct twin of timeout_bug.py).

The same sensor server, client and sensor. When its deadline passes, the library tells
the server with a CANCEL call before it does anything else, and the server drops the
client's waiting query and replies. Only the server thread completes queries, and it
handles one message at a time: before it has the CANCEL, the client is in the CANCEL's
send phase (or not in an IPC), so a completion sent then finds it not receiving and
fails; once it has the CANCEL, the query is gone. No answer of the timed-out query can
reach a later one.
"""

from __future__ import annotations

from typing import Any

from l4sim import IpcError, Kernel, RunResult, Timeout

EXPECT = "clean"
BOUND = 2

QUERY, SAMPLE, CANCEL = 1, 2, 3
PERIOD = 20_000             # cycles between samples; the first query's deadline is PERIOD
READ_CYCLES = 400           # reading the sensor: the deadline falls in the middle of it
SAMPLES = 2


async def sensor_server(t: Any, client_sel: dict[int, int]) -> None:
    """`client_sel`: a client's tid -> this task's capability to its thread (boot
    configuration, read only)."""
    queries: list[tuple[int, int]] = []   # (tid, channel) waiting for the next sample
    r = await t.wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        if r.tag.label == QUERY:
            queries.append((r.label, r.words[0]))
            r = await t.wait()            # no reply now: the next SAMPLE answers it
            continue
        if r.tag.label == SAMPLE:
            for tid, channel in queries:  # a client that gave up misses its answer
                await t.send(client_sel[tid], words=[channel, r.words[0] * channel],
                             send_timeout=Timeout.zero())
            queries.clear()
        elif r.tag.label == CANCEL:       # the client gave up: its query is withdrawn
            queries = [q for q in queries if q[0] != r.label]
        r = await t.reply_and_wait()


async def query(t: Any, srv: int, channel: int, deadline: Timeout) -> tuple[int, int] | None:
    """The library's query: (channel, reading), or None when the deadline passed."""
    r = await t.call(srv, words=[channel], label=QUERY, receive_timeout=deadline)
    if r.ok:
        return r.words[0], r.words[1]
    if r.error == IpcError.RETIMEOUT:  # withdraw it, so that no late answer can come
        c = await t.call(srv, label=CANCEL)
        assert c.ok, f"CANCEL failed: {c.error.name}"
    return None


async def client(t: Any, srv: int) -> list[tuple[int, int] | None]:
    first = await query(t, srv, 1, Timeout.at(PERIOD))
    second = await query(t, srv, 2, Timeout.never())
    assert second is not None and second[0] == 2, \
        f"the query of channel 2 was answered with {second}: a stale answer for channel 1"
    return [first, second]


async def sensor(t: Any, srv: int) -> None:
    for i in range(1, SAMPLES + 1):
        await t.sleep(Timeout.at(i * PERIOD - READ_CYCLES // 2))
        await t.compute(READ_CYCLES)     # the deadline expires meanwhile
        r = await t.call(srv, words=[100 + i], label=SAMPLE)
        assert r.ok, f"SAMPLE failed: {r.error.name}"


def build(k: Kernel) -> None:
    client_sel: dict[int, int] = {}
    stask = k.new_task("sensor-server")
    srv = stask.new_thread(sensor_server, client_sel, name="server", priority=120)
    ctask = k.new_task("client")
    c = ctask.new_thread(client, ctask.add_cap(srv), name="client")
    client_sel[c.tid] = stask.add_cap(c)
    htask = k.new_task("sensor")
    htask.new_thread(sensor, htask.add_cap(srv), name="sensor")


def check(k: Kernel, result: RunResult) -> None:
    stuck = [th.name for th in k.threads.values() if th.name != "server" and not th.returned]
    assert not stuck, f"threads that never finished: {stuck}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    c = next(th for th in k.threads.values() if th.name == "client")
    print(f"client's answers (channel, reading): {c.result}")
