"""A timeout racing with a reply: the stale-reply bug (its twin is timeout_ok.py).

A sensor server answers a QUERY of a channel with the channel's next reading: it keeps
the query and goes back to its open wait; when the sensor thread delivers a SAMPLE it
completes every waiting query by a zero-timeout send to the client's thread (a deferred
answer is a direct send: the server has received other messages since the query).

The client queries channel 1 with a deadline and, when the deadline passes, goes on to
query channel 2. The sample is read just as the deadline expires. If the client has
already started its second query when the sample arrives, the completion of the first
(timed-out) query is accepted as the answer to the second: the client takes channel 1's
reading for channel 2. Under the kernel's policy the sensor finishes its reading first,
the completion finds the client not receiving and fails, and the client's second query
gets its own answer; one preemption of the sensor at the deadline shows the bug.
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "bug"
BOUND = 2

QUERY, SAMPLE = 1, 2
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
        r = await t.reply_and_wait()


async def query(t: Any, srv: int, channel: int, deadline: Timeout) -> tuple[int, int] | None:
    """The library's query: (channel, reading), or None when the deadline passed."""
    r = await t.call(srv, words=[channel], label=QUERY, receive_timeout=deadline)
    if not r.ok:
        return None
    return r.words[0], r.words[1]   # BUG: the late answer of an earlier query is taken too


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
