"""Two CPUs: a partner deleted during a long IPC, and a user protocol that handles it
(the correct twin of delete_bug.py).

The same client, storage server, health checker and supervisor. The client sends each
record by `call`, and the server replies only after it has written the record into its
log: a record counts as saved when the reply says so. Every documented way the server's
deletion ends the call is handled by keeping the record for the restarted server:
SECANCELED (deleted before the rendezvous), SEABORTED (during the copy, where the kernel
lets the copy finish first: the receiver is locked), ENOT_EXISTENT (deleted after the
copy while the client waits for the reply, or gone by the next call).
"""

from __future__ import annotations

from typing import Any

from l4sim import IpcError, Kernel, RunResult, StringItem

EXPECT = "clean"
CPUS = 2
BOUND = 1
DEATHS_OK = True            # the storage server is deleted: that is no failure

RECORDS = 2
REC_LEN = 8192              # two pages: the copy has a preemption point between them
OUT = 0x200000              # the client's record buffer
INBOX = 0x200000            # the server's receive buffer
LOG = 0x300000              # the server's log: a count, then the records' first words
CHECKS = 12                 # the health checker's rounds (each a choice point)
CHECK_CYCLES = 10_000        # its work per round
HEARTBEAT = 0x100000        # a word of the supervisor's task the checker reads


async def storage(t: Any) -> None:
    while True:
        r = await t.wait(buffers=[(INBOX, REC_LEN)])
        if not r.ok:
            continue
        first = await t.load_word(INBOX)           # the record's id
        await t.compute(3_000)                     # writing it out takes a while
        count = await t.load_word(LOG)
        await t.store_word(LOG + 8 + 8 * count, first)
        await t.store_word(LOG, count + 1)
        await t.reply(words=[first])              # saved: only now


GONE = (IpcError.SECANCELED, IpcError.SEABORTED, IpcError.ENOT_EXISTENT)


async def client(t: Any, srv: int) -> tuple[list[int], list[int]]:
    """(saved, kept for the restarted server)."""
    saved: list[int] = []
    kept: list[int] = []
    for rec in range(1, RECORDS + 1):
        await t.store_word(OUT, rec)
        await t.store(OUT + 8, bytes([rec]) * (REC_LEN - 8))
        r = await t.call(srv, items=[StringItem(OUT, REC_LEN)])
        if r.ok and r.words[0] == rec:
            saved.append(rec)
        else:
            assert r.error in GONE, f"record {rec}: unexpected {r.error.name}"
            kept.append(rec)
    return saved, kept


async def checker(t: Any) -> None:
    for _ in range(CHECKS):
        await t.load_word(HEARTBEAT)
        await t.compute(CHECK_CYCLES)


async def supervisor(t: Any, srv: int) -> None:
    await t.store_word(HEARTBEAT, 1)
    err = await t.delete(srv)             # the restart: waits while a copy runs
    assert err == IpcError.OK, f"delete failed: {err.name}"


def build(k: Kernel) -> None:
    stask = k.new_task("storage")
    srv = stask.new_thread(storage, name="storage", cpu=0)
    ctask = k.new_task("client")
    ctask.new_thread(client, ctask.add_cap(srv), name="client", cpu=0)
    vtask = k.new_task("supervisor")
    vtask.new_thread(checker, name="checker", cpu=1)
    vtask.new_thread(supervisor, vtask.add_cap(srv), name="supervisor", cpu=1)


def logged(k: Kernel) -> list[int]:
    """The record ids in the storage server's log (read by the host)."""
    stask = next(tk for tk in k.tasks if tk.name == "storage")
    space = stask.space

    def word(addr: int) -> int:
        m = space.lookup(addr)
        if m is None:
            return 0
        return int.from_bytes(k.phys.read(m.phys + addr - m.base, 8), "little")

    return [word(LOG + 8 + 8 * i) for i in range(word(LOG))]


def check(k: Kernel, result: RunResult) -> None:
    c = next(th for th in k.threads.values() if th.name == "client")
    assert c.returned, "the client did not finish"
    saved, kept = c.result
    lost = [rec for rec in saved if rec not in logged(k)]
    assert sorted(saved + kept) == list(range(1, RECORDS + 1)), f"saved {saved}, kept {kept}"
    assert not lost, f"records the client counts as saved but the server never logged: {lost}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    c = next(th for th in k.threads.values() if th.name == "client")
    print(f"saved {c.result[0]}, kept {c.result[1]}, logged {logged(k)}")
