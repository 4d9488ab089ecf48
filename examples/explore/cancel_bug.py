"""A client library whose cancel races with the server's reply (the planted bug; its
twin is cancel_ok.py).

A key-value server answers a READ of a key that has no value yet later: it keeps the
reader in a list and goes back to its open wait; a WRITE of the key completes the
waiting READs by a zero-timeout send to each reader's thread, which is still in its
call's receive phase, closed on the server. (A server holds only the reply capability
of its last caller, so a deferred answer is a direct send: the usual L4 pattern.)

The client reads key A, another thread of its task cancels that read (`ex_regs`, as a
signal would), and the client goes on to read key B. The server cannot know of the
cancel: its READ of A stays listed. If the write of A comes while the client waits for
B, its completion is accepted as the answer to READ B -- the library takes the stale
value of A for B. The kernel's policy happens to let the client start READ B only after
the write of A has found it not receiving (the send fails, nothing is stale), so a plain
run passes.
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

EXPECT = "bug"
BOUND = 2

READ, WRITE = 1, 2
KEY_A, KEY_B = 1, 2
VALUES = {KEY_A: 111, KEY_B: 222}
ARRIVE_US = 5               # when the cancel and the writes come


async def kv_server(t: Any, client_sel: dict[int, int]) -> None:
    """`client_sel`: a client's tid -> this task's capability to its thread (boot
    configuration, read only)."""
    values: dict[int, int] = {}
    readers: list[tuple[int, int]] = []   # (tid, key) of READs waiting for a value
    r = await t.wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        key = r.words[0]
        if r.tag.label == READ and key not in values:
            readers.append((r.label, key))
            r = await t.wait()            # no reply now: the WRITE completes it
            continue
        if r.tag.label == WRITE:
            values[key] = r.words[1]
            for tid, k in [x for x in readers if x[1] == key]:
                readers.remove((tid, k))  # a reader that stopped waiting misses it
                await t.send(client_sel[tid], words=[values[key]],
                             send_timeout=Timeout.zero())
        r = await t.reply_and_wait(words=[values.get(key, 0)])


async def read(t: Any, kv: int, key: int) -> int | None:
    """The library's read: the value, or None when the read was cancelled."""
    r = await t.call(kv, words=[key], label=READ)
    if not r.ok:
        return None
    return int(r.words[0])  # BUG: whatever the server sent, taken as this key's value


async def client(t: Any, kv: int) -> list[int | None]:
    a = await read(t, kv, KEY_A)      # cancelled by the other thread, or answered
    b = await read(t, kv, KEY_B)
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
