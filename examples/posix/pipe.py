"""Pipes and a named FIFO through the pipe server; the bytes move by long IPC.

A parent makes a pipe and hands its read end to a child process (a token the child
adopts: the fd passing of a fork). It writes 100 KiB, more than the pipe holds
(64 KiB), so its write waits until the child has read enough; then it closes, and the
child reads end of file. Over a FIFO ("/fifo"), a writer's open waits for a reader, a
write of PIPE_BUF bytes arrives in one piece, and after the reader has closed, a write
fails with EPIPE. A non-blocking read of an empty pipe is EAGAIN.

    l4sim run examples/posix/pipe.py
"""

from __future__ import annotations

import errno
import os
from typing import Any

from l4sim import Kernel, RunResult, Timeout
from l4sim.lib.boot import System
from l4sim.lib.framework import Env, PosixError
from l4sim.lib.pipe import PIPE_BUF, Pipe

DATA = bytes(i * 7 % 251 for i in range(100 * 1024))


async def parent(t: Any, env: Env, ex: dict[str, Any]) -> None:
    rd, wr = await Pipe.pipe(t, env)
    ex["token"] = await rd.share()
    await rd.close()
    ex["wrote"] = await wr.write(DATA)
    ex["write_done"] = t.now
    await wr.close()


async def child(t: Any, env: Env, ex: dict[str, Any]) -> None:
    while "token" not in ex:
        await t.sleep(Timeout.us(5))
    rd = await Pipe.adopt(t, env, ex["token"])
    got = bytearray()
    while True:
        await t.sleep(Timeout.us(10))          # a slow reader: the writer waits for room
        chunk = await rd.read(16 * 1024)
        if not chunk:
            break
        got += chunk
    ex["read"] = bytes(got)
    ex["eof_at"] = t.now


async def fifo_writer(t: Any, env: Env, ex: dict[str, Any]) -> None:
    await Pipe.mkfifo(t, env, "/fifo")
    w = await Pipe.open(t, env, "/fifo", os.O_WRONLY)     # waits for the reader
    ex["fifo_open"] = t.now
    await w.write(b"A" * PIPE_BUF)
    await t.sleep(Timeout.us(200))                        # the reader closes meanwhile
    try:
        await w.write(b"nobody reads this")
    except PosixError as exc:
        ex["fifo_write_after_close"] = exc.errno


async def fifo_reader(t: Any, env: Env, ex: dict[str, Any]) -> None:
    await t.sleep(Timeout.us(50))
    r = await Pipe.open(t, env, "/fifo", os.O_RDONLY | os.O_NONBLOCK)
    ex["fifo_reader_open"] = t.now
    await t.sleep(Timeout.us(20))
    ex["fifo_read"] = len(await r.read(2 * PIPE_BUF))
    try:
        await r.read(10)
    except PosixError as exc:
        ex["empty_nonblocking_read"] = exc.errno
    await r.close()


def build(k: Kernel) -> None:
    system = System(k, servers=("pipe",))
    ex: dict[str, Any] = {}
    k.example = ex  # type: ignore[attr-defined]
    system.process("parent").thread(parent, ex, name="parent")
    system.process("child").thread(child, ex, name="child")
    system.process("fifo-writer").thread(fifo_writer, ex, name="fifo-writer")
    system.process("fifo-reader").thread(fifo_reader, ex, name="fifo-reader")


def report(k: Kernel, result: RunResult) -> None:
    ex = k.example  # type: ignore[attr-defined]
    print(f"pipe: wrote {ex['wrote']} bytes (done at {ex['write_done']} cycles), the child "
          f"read {len(ex['read'])} bytes, end of file at {ex['eof_at']}")
    print(f"fifo: writer's open returned at {ex['fifo_open']} (reader opened at "
          f"{ex['fifo_reader_open']}); read {ex['fifo_read']} bytes in one piece; "
          f"write after the reader closed: {errno.errorcode[ex['fifo_write_after_close']]}; "
          f"empty non-blocking read: {errno.errorcode[ex['empty_nonblocking_read']]}")
    assert ex["read"] == DATA and ex["wrote"] == len(DATA)
    assert ex["eof_at"] > ex["write_done"]
    assert ex["fifo_open"] >= ex["fifo_reader_open"] and ex["fifo_read"] == PIPE_BUF
    assert ex["fifo_write_after_close"] == errno.EPIPE
    assert ex["empty_nonblocking_read"] == errno.EAGAIN
    assert result.reason == "done" and not result.died, result


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
