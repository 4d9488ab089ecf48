"""Shared memory through the shm server: an object mapped into two processes.

A writer creates "/board", sizes it to 3 pages, maps it (the server's reply carries
the pages as flexpages into the window the stub offers) and writes a message into the
middle page; it posts a semaphore. A reader maps the same object read-only and reads
the message through its own mapping of the same frames. The name is unlinked while
both still have it mapped: the mappings survive until unmapped, and when the last one
goes the server revokes its pages. The mapping database shows who derived what.

    l4sim run examples/posix/shm.py
"""

from __future__ import annotations

import errno
import os
from typing import Any

from l4sim import Kernel, RunResult
from l4sim.lib.boot import System
from l4sim.lib.framework import Env, PosixError
from l4sim.lib.semaphore import Semaphore
from l4sim.lib.shm import SharedMemory

SIZE = 3 * 4096
MESSAGE = b"hello through shared memory"


async def writer(t: Any, env: Env, ex: dict[str, Any]) -> None:
    ready = await Semaphore.open(t, env, "/ready", os.O_CREAT, 0)
    shm = await SharedMemory.open(t, env, "/board", os.O_CREAT | os.O_RDWR)
    await shm.truncate(SIZE)
    m = await shm.map(SIZE)
    await t.store(m.addr + 4096 + 100, MESSAGE)
    ex["writer_addr"] = m.addr
    await ready.post()
    done = await Semaphore.open(t, env, "/done", os.O_CREAT, 0)
    await done.wait()
    ex["writer_sees"] = await t.load(m.addr + 4096 + 100, len(MESSAGE))
    await m.unmap()
    await shm.close()


async def reader(t: Any, env: Env, ex: dict[str, Any]) -> None:
    ready = await Semaphore.open(t, env, "/ready", os.O_CREAT, 0)
    await ready.wait()
    shm = await SharedMemory.open(t, env, "/board", os.O_RDONLY)
    ex["size"] = await shm.size()
    try:
        await shm.map(SIZE, write=True)
    except PosixError as exc:
        ex["map_rw_of_readonly"] = exc.errno
    m = await shm.map(SIZE, write=False)
    ex["reader_addr"] = m.addr
    ex["read"] = await t.load(m.addr + 4096 + 100, len(MESSAGE))
    await SharedMemory.unlink(t, env, "/board")
    ex["read_after_unlink"] = await t.load(m.addr + 4096 + 100, len(MESSAGE))
    try:
        await SharedMemory.open(t, env, "/board")
    except PosixError as exc:
        ex["open_after_unlink"] = exc.errno
    await m.unmap()
    await shm.close()
    await (await Semaphore.open(t, env, "/done", os.O_CREAT, 0)).post()


def build(k: Kernel) -> None:
    system = System(k, servers=("sem", "shm"))
    ex: dict[str, Any] = {}
    k.example = ex  # type: ignore[attr-defined]
    system.process("writer").thread(writer, ex, name="writer")
    system.process("reader").thread(reader, ex, name="reader")


def report(k: Kernel, result: RunResult) -> None:
    ex = k.example  # type: ignore[attr-defined]
    print(f"writer mapped the object at {ex['writer_addr']:#x}, the reader at "
          f"{ex['reader_addr']:#x}; object size {ex['size']}")
    print(f"reader read {ex['read']!r}; after unlink still {ex['read_after_unlink']!r}; "
          f"open after unlink: {errno.errorcode[ex['open_after_unlink']]}; a writable map of "
          f"a read-only handle: {errno.errorcode[ex['map_rw_of_readonly']]}")
    print("mapping database at the end (the object's pages are gone):")
    print(k.mapdb.dump(), end="")
    assert ex["read"] == MESSAGE == ex["read_after_unlink"] == ex["writer_sees"]
    assert ex["size"] == SIZE
    assert ex["open_after_unlink"] == errno.ENOENT
    assert ex["map_rw_of_readonly"] == errno.EACCES
    assert not [line for line in k.mapdb.dump().splitlines() if line.strip().startswith("shm ")]
    assert result.reason == "done" and not result.died, result


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
