"""A block-device driver as a user-level server: clients read and write sectors
by IPC; the driver programs the device, waits for its interrupt, and replies.

The platform's block device (`l4sim.platform.BlockDevice`) holds SECTORS sectors of 512
bytes, filled at build time with a known pattern (`pattern`); a request completes LATENCY
cycles after it was issued and raises the device's interrupt line. The driver holds the
device's registers (the device object, passed to it: its register page "mapped" into the
driver's task) and a capability to the line's `Irq`, bound with DISK_LABEL.

Protocol (message label = operation), clients call the driver thread directly:
    READ  [sector]            -> [0, CRC-32 of the sector, its first 8 words]  or [error]
    WRITE [sector, w0 .. w7]  -> [0]  or [error]: the sector's first 8 words become w0..w7,
                                 the rest stays (read-modify-write: two device requests)
Errors are the device's ERROR codes (E_SECTOR for a sector it does not have), or
E_REQUEST for a malformed request.

The driver serves one request at a time: while it waits for the interrupt in a closed
receive on the IRQ (`t.irq_receive`, which also unmasks it), other callers queue in its
sender queue, by priority; `reply_and_wait` answers one and takes the next.

    python examples/block_driver.py      # or: l4sim run examples/block_driver.py
"""

from __future__ import annotations

import itertools
import zlib
from typing import Any

from l4sim import Kernel, RunResult
from l4sim.platform import SECTOR_SIZE, BlockDevice, Platform

SECTORS = 32
LATENCY = 40_000          # cycles per device request (~15 us at 2663 MHz)
DISK_LINE = 1
DISK_LABEL = 0xD15C
DRIVER_PRIORITY = 150
READ, WRITE = 1, 2
E_REQUEST = 0xFF
WORDS = BlockDevice.DATA_WORDS

# (client name, priority, requests): ("read", sector) or ("write", sector, first word)
CLIENTS: list[tuple[str, int, list[tuple[Any, ...]]]] = [
    ("fs", 120, [("read", 0), ("read", 5), ("write", 7, 0xF5_0000), ("read", 7), ("read", 31)]),
    ("db", 100, [("read", 3), ("read", 3), ("read", 12), ("write", 20, 0xDB_0000), ("read", 20)]),
    ("logger", 110, [("read", 1), ("read", SECTORS + 3), ("read", 2), ("read", 9)]),
]
THINK = 3_000             # cycles a client computes between requests


def pattern(sector: int, i: int) -> int:
    """Word i of a sector as the disk image holds it at build time."""
    return (sector << 48) | (i << 32) | ((sector * 0x9E3779B1 + i * 0x85EBCA77) & 0xFFFFFFFF)


def image_sector(sector: int) -> bytes:
    return b"".join(pattern(sector, i).to_bytes(8, "little") for i in range(SECTOR_SIZE // 8))


def written_words(first: int) -> list[int]:
    return [first + i for i in range(WORDS)]


async def transfer(t: Any, irq: int, disk: BlockDevice, command: int, sector: int,
                   log: list[tuple[int, int, int, int, int]], client: int) -> int:
    """One device request: program it, wait for its interrupt; 0 or the device's error."""
    disk.write(BlockDevice.SECTOR, sector)
    disk.write(BlockDevice.COMMAND, command)
    if disk.read(BlockDevice.STATUS) & BlockDevice.ERROR_BIT:   # rejected: no interrupt
        err = disk.read(BlockDevice.ERROR)
        disk.write(BlockDevice.STATUS, 0)
        return err
    issued = t.now
    r = await t.irq_receive(irq)            # closed: only the interrupt; callers queue
    if not r.ok:
        return E_REQUEST
    status = disk.read(BlockDevice.STATUS)
    err = disk.read(BlockDevice.ERROR) if status & BlockDevice.ERROR_BIT else 0
    disk.write(BlockDevice.STATUS, 0)       # acknowledge
    log.append((issued, t.now, command, sector, client))
    return err


async def driver(t: Any, irq: int, disk: BlockDevice,
                 log: list[tuple[int, int, int, int, int]]) -> None:
    """Serve READ and WRITE requests forever, one at a time."""
    await t.irq_bind(irq, DISK_LABEL)
    r = await t.wait()
    while True:
        if not r.ok or r.tag.label == -1:   # a failed reply, or a stray interrupt
            r = await t.wait()
            continue
        op, words, client = r.tag.label, r.words, r.label
        answer: list[int]
        if op == READ and len(words) == 1:
            err = await transfer(t, irq, disk, READ, words[0], log, client)
            if err:
                answer = [err]
            else:
                disk.write(BlockDevice.WINDOW, 0)
                answer = [0, disk.read(BlockDevice.CHECKSUM),
                          *(disk.read(BlockDevice.DATA + i) for i in range(WORDS))]
        elif op == WRITE and len(words) == 1 + WORDS:
            err = await transfer(t, irq, disk, READ, words[0], log, client)
            if not err:
                disk.write(BlockDevice.WINDOW, 0)
                for i, w in enumerate(words[1:]):
                    disk.write(BlockDevice.DATA + i, w)
                err = await transfer(t, irq, disk, WRITE, words[0], log, client)
            answer = [err]
        else:
            answer = [E_REQUEST]
        r = await t.reply_and_wait(words=answer)


async def client(t: Any, drv: int, requests: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    out = []
    for req in requests:
        await t.compute(THINK)
        called = t.now
        if req[0] == "read":
            r = await t.call(drv, words=[req[1]], label=READ)
        else:
            r = await t.call(drv, words=[req[1], *written_words(req[2])], label=WRITE)
        if not r.ok:
            raise RuntimeError(f"{req}: IPC failed: {r.error.name}")
        out.append({"request": req, "called": called, "answered": t.now, "reply": r.words})
    return out


def build(k: Kernel) -> None:
    platform = Platform(k)
    disk = platform.add_block_device(DISK_LINE, sectors=SECTORS, latency=LATENCY, name="disk")
    for s in range(SECTORS):
        disk.load(s, image_sector(s))
    dtask = k.new_task("disk-driver")
    irq_sel = dtask.add_cap(platform.irq(DISK_LINE))
    log: list[tuple[int, int, int, int, int]] = []
    drv = dtask.new_thread(driver, irq_sel, disk, log, name="driver", priority=DRIVER_PRIORITY)
    for name, prio, requests in CLIENTS:
        ctask = k.new_task(name)
        ctask.new_thread(client, ctask.add_cap(drv), requests, name=name, priority=prio)


def expected_replies(requests: list[tuple[Any, ...]]) -> list[list[int]]:
    """What a client must get, request by request (its writes touch only its sectors)."""
    medium: dict[int, bytearray] = {}
    out: list[list[int]] = []
    for req in requests:
        sector = req[1]
        if not 0 <= sector < SECTORS:
            out.append([BlockDevice.E_SECTOR])
            continue
        data = medium.setdefault(sector, bytearray(image_sector(sector)))
        if req[0] == "write":
            data[:8 * WORDS] = b"".join(w.to_bytes(8, "little") for w in written_words(req[2]))
            out.append([0])
        else:
            words = [int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(WORDS)]
            out.append([0, zlib.crc32(data), *words])
    return out


def driver_log(k: Kernel) -> list[tuple[int, int, int, int, int]]:
    """(issued, interrupt received, command, sector, client tid) per device request."""
    drv = next(th for th in k.threads.values() if th.name == "driver")
    log: list[tuple[int, int, int, int, int]] = drv.args[2]
    return log


def report(k: Kernel, result: RunResult) -> None:
    platform = Platform.of(k)
    disk = platform.device(DISK_LINE)
    assert isinstance(disk, BlockDevice)
    by_name = {th.name: th for th in k.threads.values()}
    names = {th.tid: th.name for th in k.threads.values()}
    log = driver_log(k)
    raises = platform.controller.raises(DISK_LINE)
    print(f"block driver (priority {DRIVER_PRIORITY}), {SECTORS} sectors, latency {LATENCY} "
          f"cycles; run ended {result.reason!r} at {result.now} cycles")
    print(f"  {'issued':>8} {'completes':>9} {'irq taken':>9}  command sector  client")
    for (issued, taken, command, sector, tid), dreq in zip(log, disk.requests, strict=False):
        print(f"  {issued:>8} {dreq.completes:>9} {taken:>9}  {'READ' if command == READ else 'WRITE':<7} "
              f"{sector:>6}  {names.get(tid, tid)}")
    problems = []
    for name, _prio, requests in CLIENTS:
        th = by_name[name]
        if not th.returned:
            problems.append(f"client {name} did not finish")
            continue
        got = [list(x["reply"]) for x in th.result]
        want = expected_replies(requests)
        ok = sum(1 for g, w in zip(got, want, strict=True) if g == w)
        print(f"  client {name:<6}: {ok}/{len(requests)} replies as expected")
        for req, g, w in zip(requests, got, want, strict=True):
            if g != w:
                problems.append(f"{name} {req}: got {g}, expected {w}")
    # The driver serialized the requests: one at a time, each exactly LATENCY long, its
    # interrupt raised at its completion and received after it.
    reqs = disk.requests
    if len(reqs) != len(log) or len(raises) != len(reqs):
        problems.append(f"{len(reqs)} device requests, {len(log)} logged, {len(raises)} raises")
    for a, b in itertools.pairwise(reqs):
        if b.issued < a.completes:
            problems.append(f"requests overlap: {a} and {b}")
    for req, raised, entry in zip(reqs, raises, log, strict=False):
        if req.completes - req.issued != LATENCY or raised != req.completes or entry[1] < raised:
            problems.append(f"request {req}: raised {raised}, interrupt taken {entry[1]}")
    if result.reason != "done" or result.died:
        problems.append(f"unexpected end of run: {result!r}")
    if problems:
        raise AssertionError("; ".join(problems))
    print(f"{len(reqs)} device requests, one at a time; every client got its data")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
