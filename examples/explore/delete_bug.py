"""Two CPUs: a partner deleted during a long IPC, and a user protocol that assumes the
partner still exists after the copy (the planted bug; its twin is delete_ok.py).

CPU 0: a client streams records to a storage server by long IPC (a string of two
pages), one-way: `send`, and counts a record as saved once the send has returned OK --
"the bytes are in the server's buffer, so the server has it". The server writes each
record it receives into its log.

CPU 1: a supervisor restarts the storage server (deletes its thread) once a health
checker of its own task has finished. The kernel makes this safe: the receiver of a
long IPC is locked, and a delete that finds it locked waits until the copy is done.
But then the delete comes right after the copy, before the server has written the
record into its log: the send returned OK for a record that is lost.

Under the kernel's policy the health checker runs to its end first and the restart
comes after the whole stream, so a plain run passes; one preemption of the checker
brings the delete forward into the stream.
"""

from __future__ import annotations

from typing import Any

from l4sim import IpcError, Kernel, RunResult, StringItem

EXPECT = "bug"
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


async def client(t: Any, srv: int) -> list[int]:
    saved: list[int] = []
    for rec in range(1, RECORDS + 1):
        await t.store_word(OUT, rec)
        await t.store(OUT + 8, bytes([rec]) * (REC_LEN - 8))
        r = await t.send(srv, items=[StringItem(OUT, REC_LEN)])
        if r.ok:
            saved.append(rec)   # BUG: the copy is done, but the server may be gone
    return saved


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
    lost = [rec for rec in c.result if rec not in logged(k)]
    assert not lost, f"records the client counts as saved but the server never logged: {lost}"


def report(k: Kernel, result: RunResult) -> None:
    check(k, result)
    c = next(th for th in k.threads.values() if th.name == "client")
    print(f"saved {c.result}, logged {logged(k)}")
