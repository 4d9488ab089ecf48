"""A client library whose cancel cannot take a stale reply (the correct twin of
cancel_bug.py).

The same key-value server, client, canceller and writer, with two changes:
- every READ carries a request id that the server echoes in its answer (a reply or a
  later completion), and the library takes only an answer with its own id;
- the server keeps one request per client: a new READ from a client proves that the
  client gave up its older one (cancelled), which is dropped, never completed.

The ids alone are not enough, and the explorer shows why: a stale completion, even
when the library recognises and skips it, has ended the call's receive phase; the true
answer, sent with a zero timeout while the library is between that call and its next
receive, finds nobody receiving and is lost (a deadlock). Dropping the abandoned
request in the server removes the stale completion itself.
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "clean"
BOUND = 2

READ, WRITE = 1, 2
KEY_A, KEY_B = 1, 2
VALUES = {KEY_A: 111, KEY_B: 222}
ARRIVE_US = 5               # when the cancel and the writes come


async def kv_server(t: Any, client_sel: dict[int, int]) -> None:
    """`client_sel`: a client's tid -> this task's capability to its thread (boot
    configuration, read only)."""
    values: dict[int, int] = {}
    readers: list[tuple[int, int, int]] = []  # (tid, key, id) of READs waiting for a value
    r = await t.wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        key = r.words[0]
        rid = r.words[1] if r.tag.label == READ else 0
        if r.tag.label == READ:
            # One request outstanding per client: a new READ proves that the client
            # gave up its older one, which must never be completed now.
            readers = [x for x in readers if x[0] != r.label]
        if r.tag.label == READ and key not in values:
            readers.append((r.label, key, rid))
            r = await t.wait()            # no reply now: the WRITE completes it
            continue
        if r.tag.label == WRITE:
            values[key] = r.words[1]
            for tid, k, wid in [x for x in readers if x[1] == key]:
                readers.remove((tid, k, wid))  # a reader that stopped waiting misses it
                await t.send(client_sel[tid], words=[values[key], wid],
                             send_timeout=Timeout.zero())
        r = await t.reply_and_wait(words=[values.get(key, 0), rid])


async def read(t: Any, kv: int, key: int, rid: int) -> int | None:
    """The library's read with request id `rid` (new for every request): the value, or
    None when the read was cancelled."""
    r = await t.call(kv, words=[key, rid], label=READ)
    while r.ok and r.words[1] != rid:  # the late answer of a cancelled read: not ours
        r = await t.receive(kv)
    if not r.ok:
        return None
    return int(r.words[0])


async def client(t: Any, kv: int) -> list[int | None]:
    a = await read(t, kv, KEY_A, 1)   # cancelled by the other thread, or answered
    b = await read(t, kv, KEY_B, 2)
    assert b == VALUES[KEY_B], f"read of key B returned {b}: the stale answer of key A"
    return [a, b]


async def canceller(t: Any, client_sel: list[int]) -> None:
    await t.sleep(Timeout.us(ARRIVE_US))
    await t.ex_regs(client_sel[0], cancel=True)   # give up the client's read


async def writer(t: Any, kv: int) -> None:
    await t.sleep(Timeout.us(ARRIVE_US))
    for key, value in VALUES.items():
        r = await t.call(kv, words=[key, value], label=WRITE)
        assert r.ok, f"WRITE failed: {r.error.name}"


def build(k: Kernel) -> None:
    client_sel: dict[int, int] = {}
    stask = k.new_task("kv")
    srv = stask.new_thread(kv_server, client_sel, name="kv", priority=120)
    ctask = k.new_task("client")
    c = ctask.new_thread(client, ctask.add_cap(srv), name="client")
    client_sel[c.tid] = stask.add_cap(c)
    ctask.new_thread(canceller, [ctask.add_cap(c)], name="canceller")
    wtask = k.new_task("writer")
    wtask.new_thread(writer, wtask.add_cap(srv), name="writer")


def check(k: Kernel, result: RunResult) -> None:
    stuck = [th.name for th in k.threads.values() if th.name != "kv" and not th.returned]
    assert not stuck, f"threads that never finished: {stuck}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    c = next(th for th in k.threads.values() if th.name == "client")
    print(f"client read {c.result} (A, then B; None: cancelled)")
