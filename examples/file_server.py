"""A file server: reads return 64 KiB by string IPC (user-memory IPC).

The server holds a "file" in its memory. A client first writes 64 KiB to the server's
inbox while the server is still busy (so the client's long message waits in the
server's sender queue), then reads the file: it calls with a read request and offers a
receive buffer (`buffers=[(addr, size)]`) that it has never touched, so the buffer is
not paged in. The server replies with a string item; the kernel copies the 64 KiB page
by page into the client's buffer, and each page of the buffer faults on the way — a
nested page-fault IPC to the client's pager (the anonymous-memory pager) in the middle
of the reply — after which the copy resumes.

The same system runs under both copy strategies (kernel buffer: two copies; IPC window:
one copy, the window re-established after every switch or fault) and both transfer
algorithms (symmetric: whoever arrives second copies; sender-driven: the sender always
copies). The results are identical; the simulated cycles differ, and `report` prints
them side by side.

    l4sim run examples/file_server.py         # or: python examples/file_server.py
"""

from __future__ import annotations

import itertools
from typing import Any

from l4sim import Kernel, RunResult, StringItem

FILE_SIZE = 64 * 1024
FILE_AT = 0x100000      # in the server's space
INBOX_AT = 0x200000     # in the server's space: where writes land
BUFFER_AT = 0x800000    # in the client's space, not paged in before the read
OUTBOX_AT = 0x900000    # in the client's space: what it writes
READ, WRITE = 0x52, 0x57  # gate labels: the server tells requests apart by them


def content(n: int = FILE_SIZE) -> bytes:
    return bytes((i * 31 + 7) & 0xFF for i in range(n))


async def server(t: Any) -> None:
    await t.store(FILE_AT, content())      # the file, in the server's memory (busy meanwhile)
    r = await t.wait(buffers=[(INBOX_AT, FILE_SIZE)])   # the inbox stays offered (BRs)
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        if r.label == WRITE:
            r = await t.reply_and_wait(words=[r.string_bytes[0]])
            continue
        offset, length = r.words
        length = max(0, min(length, FILE_SIZE - offset))
        r = await t.reply_and_wait(words=[length], items=[StringItem(FILE_AT + offset, length)])


async def client(t: Any, reads: int, writes: int) -> dict[str, Any]:
    start = t.now
    r = await t.call(writes, items=[StringItem(OUTBOX_AT, FILE_SIZE)])  # fresh zero pages
    write = t.now - start
    if not r.ok or r.words != (FILE_SIZE,):
        raise RuntimeError(f"write failed: {r.error.name} {r.words}")
    start = t.now
    r = await t.call(reads, words=[0, FILE_SIZE], buffers=[(BUFFER_AT, FILE_SIZE)])
    read = t.now - start
    if not r.ok:
        raise RuntimeError(f"read failed: {r.error.name}")
    data = await t.load(BUFFER_AT, FILE_SIZE)
    return {"length": r.words[0], "string_bytes": r.string_bytes, "ok": data == content(),
            "write_cycles": write, "read_cycles": read}


def build(k: Kernel) -> None:
    srv = k.new_task("fs").new_thread(server, name="fs")
    ctask = k.new_task("client")
    # A gate per operation; the client runs at a higher priority, so its write arrives
    # while the server is still loading the file: the write waits in the sender queue.
    ctask.new_thread(client, ctask.add_cap(k.new_gate(srv, label=READ)),
                     ctask.add_cap(k.new_gate(srv, label=WRITE)), name="client", priority=110)


def read_once(copy: str, transfer: str, check: bool = False) -> tuple[Kernel, dict[str, Any]]:
    k = Kernel(copy=copy, transfer=transfer, check=check)
    build(k)
    res = k.run()
    cl = next(th for th in k.threads.values() if th.name == "client")
    if res.reason != "done" or res.died or not cl.returned:
        raise AssertionError(f"the read did not complete: {res!r}")
    return k, cl.result


def report(k: Kernel, result: RunResult) -> None:
    cl = next(th for th in k.threads.values() if th.name == "client")
    out = cl.result
    if result.reason != "done" or result.died or out is None:
        raise AssertionError(f"unexpected end of run: {result!r}")
    if not out["ok"] or out["string_bytes"] != (FILE_SIZE,):
        raise AssertionError(f"the client did not get the file: {out}")
    print(f"wrote {FILE_SIZE} bytes while the server was busy, then read {out['length']} "
          f"bytes into a buffer that was not paged in ({k.copy}, {k.transfer})")
    print(f"{'copy':<14} {'transfer':<14} {'write cycles':>13} {'read cycles':>12}")
    for copy, transfer in itertools.product(("window", "kernel-buffer"), ("symmetric", "sender-driven")):
        _, other = read_once(copy, transfer)
        if not other["ok"]:
            raise AssertionError(f"{copy}/{transfer}: wrong data")
        print(f"{copy:<14} {transfer:<14} {other['write_cycles']:>13} {other['read_cycles']:>12}")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
