"""A prefetching pager (lecture: "the pager can map more than just the page where the
page fault happened").

The pager gets a 64 KiB region from sigma0 at start (the sigma0 protocol: label
Label.SIGMA0, words [SIGMA0_ANY, 16], a receive window of that size) and backs the
client's 64 KiB buffer with it. On a page fault it does not map only the faulting page:
it replies with one map item of a 2^ORDER-byte flexpage (16 KiB by default) around the
fault, naturally aligned. The kernel offers a window of the whole space for the faulting
thread, so the fpage lands at the send base aligned down to its size: the faulting page
and its neighbours in the same 2^ORDER block. (x86-64 has no 16 or 64 KiB pages: the
kernel enters such an fpage as 4 KiB page-table entries, one mapping each in the mapping
database.) The client's next accesses there find their pages mapped and do not fault.

The client makes ACCESSES word stores, one every STRIDE bytes, across the buffer, then
reads them all back. The pager counts the faults: REGION / 2^ORDER of them (4 with
16 KiB blocks, 1 with 64 KiB, 16 without prefetching, order 12) instead of one per page.

    python examples/prefetch_pager.py    # or: l4sim run examples/prefetch_pager.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Fpage, Kernel, Label, MapItem, Rights, RunResult
from l4sim.lib.sigma0 import SIGMA0_ANY

PAGE = 4096
REGION_ORDER = 16                 # the client's buffer: 64 KiB ...
REGION = 1 << REGION_ORDER
BASE = 0x400000                   # ... at this address (aligned to its size)
POOL = 0x10000000                 # where the pager keeps the 64 KiB from sigma0
ORDER = 14                        # the pager maps 16 KiB per fault
STRIDE = 1024                     # the client touches a word every 1 KiB ...
ACCESSES = REGION // STRIDE       # ... across the whole buffer: 64 accesses, 16 pages
REFUSED = -12

Fault = tuple[int, int, bool, int]   # (time, fault address, write, base of the fpage mapped)


async def pager(t: Any, order: int, faults: list[Fault]) -> None:
    got = await t.call(t.pager_sel, words=[SIGMA0_ANY, REGION_ORDER], label=Label.SIGMA0,
                       window=Fpage.mem(POOL, REGION_ORDER))
    if not got.ok or got.tag.label < 0:
        raise RuntimeError(f"sigma0 gave no memory: {got!r}")
    r = await t.wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        if r.tag.label == Label.PAGE_FAULT:
            addr = r.words[0] & ~7
            if BASE <= addr < BASE + REGION:
                block = (addr - BASE) & ~((1 << order) - 1)   # the aligned block around it
                faults.append((t.now, addr, bool(r.words[0] & 2), BASE + block))
                r = await t.reply_and_wait(items=[
                    MapItem(Fpage.mem(POOL + block, order, Rights.RW), send_base=BASE + block)])
                continue
        r = await t.reply_and_wait(label=REFUSED)   # outside the buffer: the client dies


async def client(t: Any) -> dict[str, Any]:
    for i in range(ACCESSES):
        await t.store_word(BASE + i * STRIDE, 0x1000 + i)
    back = [await t.load_word(BASE + i * STRIDE) for i in range(ACCESSES)]
    return {"wrote": [0x1000 + i for i in range(ACCESSES)], "read": back}


def build(k: Kernel, order: int = ORDER) -> None:
    if not 12 <= order <= REGION_ORDER:
        raise ValueError(f"the pager maps 4 KiB .. {REGION >> 10} KiB: order 12..{REGION_ORDER}")
    faults: list[Fault] = []
    pg = k.new_task("pager").new_thread(pager, order, faults, name="pager", priority=200,
                                        pager=k.sigma0)
    k.new_task("client").new_thread(client, name="client", priority=100, pager=pg)


def _thread(k: Kernel, name: str) -> Any:
    return next(th for th in k.threads.values() if th.name == name)


def faults_of(k: Kernel) -> list[Fault]:
    return list(_thread(k, "pager").args[1])


def report(k: Kernel, result: RunResult) -> None:
    order = _thread(k, "pager").args[0]
    cl = _thread(k, "client")
    faults = faults_of(k)
    pages = REGION // PAGE
    print(f"{ACCESSES} accesses across {pages} pages; the pager maps {1 << order >> 10} KiB "
          f"per fault; run ended {result.reason!r} at {result.now} cycles")
    for time, addr, write, base in faults:
        print(f"  {time:>8}  {'write' if write else 'read'} fault at {addr:#x} -> mapped "
              f"{base:#x}..{base + (1 << order) - 1:#x}")
    print(f"page faults: {len(faults)} (one per page would be {pages})")
    print("mapping database:")
    print(k.mapdb.dump(), end="")
    if result.reason != "done" or result.died:
        raise AssertionError(f"unexpected end of run: {result!r}")
    if not cl.returned or cl.result["read"] != cl.result["wrote"]:
        raise AssertionError(f"the client did not read what it wrote: {cl.result!r}")
    if len(faults) != REGION >> order:
        raise AssertionError(f"{len(faults)} faults, expected {REGION >> order}")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
