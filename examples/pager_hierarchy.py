"""A pager hierarchy: sigma0 -> a user-level pager -> a client (lecture: "recursive
address spaces").

sigma0 owns all physical memory (the roots of the mapping database). The pager is an
ordinary thread in its own task whose own pager is sigma0; it gets memory from sigma0 in
the two ways sigma0 offers:

- its bookkeeping page (a log of what it served) by a page fault: the first store there
  faults, the kernel calls sigma0 on the pager's behalf and sigma0 maps the faulting page
  1:1 (virtual address = physical address);
- the pages it hands on to its client by the sigma0 protocol: a call to sigma0 with
  label Label.SIGMA0 (-6), words [SIGMA0_ANY, 12] and a receive window of one page in
  its pool; sigma0 replies with the frame's physical address and maps it there.

The client's thread has the pager as its pager. It writes a buffer of several pages and
reads it back: each first touch of a page is a write page fault, which the kernel turns
into an IPC to the pager (label -2, words (address | bits, code location)); the pager
takes a fresh page from sigma0, zero-fills it and replies with a map item for the
faulting page. At the end the client asks the pager (an ordinary call, label CHECK) to
read the first word of every page it served through its own mapping: the pager sees
what the client wrote, because both mappings name the same frames.

The mapping database then holds one tree: sigma0's root, the pager's pages derived from
it, and the client's pages derived from those.

    python examples/pager_hierarchy.py   # or: l4sim run examples/pager_hierarchy.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Fpage, Kernel, Label, MapItem, Rights, RunResult
from l4sim.lib.sigma0 import SIGMA0_ANY

PAGE = 4096
PAGES = 4                    # the client's buffer: this many pages ...
BUFFER = 0x100000            # ... at this address in the client's space
POOL = 0x40000000            # where the pager keeps the pages it got from sigma0
LOG_PAGE = 0x10000           # the pager's bookkeeping page, faulted in from sigma0 (1:1)
MAGIC = 0x5EED_0000          # the client writes MAGIC + page number at each page's start
CHECK = 1                    # client -> pager: "read back the first word of each page"
REFUSED = -12

Log = list[tuple[int, str, str]]


async def pager(t: Any, log: Log) -> None:
    """Serve page faults with pages from sigma0 (our own pager: t.pager_sel)."""
    served: dict[int, int] = {}          # client page -> pool address
    next_pool = POOL
    # The first store to the log page faults; sigma0 maps that page 1:1.
    await t.store_word(LOG_PAGE, 0)
    log.append((t.now, "pager", f"log page {LOG_PAGE:#x} faulted in from sigma0"))
    r = await t.wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        if r.tag.label == Label.PAGE_FAULT:
            addr, _ip = r.words
            page = addr & ~(PAGE - 1)
            write = bool(addr & 2)
            pool = served.get(page)
            if pool is None:
                got = await t.call(t.pager_sel, words=[SIGMA0_ANY, 12], label=Label.SIGMA0,
                                   window=Fpage.mem(next_pool, 12))
                if not got.ok or got.tag.label < 0:
                    r = await t.reply_and_wait(label=REFUSED)   # no memory: the client dies
                    continue
                pool, phys = next_pool, got.words[0]
                next_pool += PAGE
                await t.store(pool, bytes(PAGE))                # anonymous memory: zeroes
                served[page] = pool
                log.append((t.now, "pager", f"sigma0 gave frame {phys:#x}, at {pool:#x} here"))
            n = await t.load_word(LOG_PAGE)
            await t.store_word(LOG_PAGE + 8 + 8 * n, page)      # bookkeeping in our own page
            await t.store_word(LOG_PAGE, n + 1)
            log.append((t.now, "pager", f"{'write' if write else 'read'} fault at {addr & ~7:#x}"
                        f" -> map {pool:#x} to {page:#x}"))
            r = await t.reply_and_wait(items=[MapItem(Fpage.mem(pool, 12, Rights.RW),
                                                      send_base=page)])
        elif r.tag.label == CHECK:
            # Read the pages through our own mappings: the client's data is there.
            words = [await t.load_word(served[p]) for p in sorted(served)]
            log.append((t.now, "pager", f"read back {len(words)} pages for the client"))
            r = await t.reply_and_wait(words=words)
        else:
            r = await t.reply_and_wait(label=REFUSED)


def pattern(page: int) -> bytes:
    """What the client writes after the first word of `page` (of its buffer)."""
    return bytes((page * 37 + i) & 0xFF for i in range(PAGE - 8))


async def client(t: Any, log: Log) -> dict[str, Any]:
    """Write every page of the buffer (faulting each in), then read it back."""
    for p in range(PAGES):
        addr = BUFFER + p * PAGE
        await t.store_word(addr, MAGIC + p)            # the first touch: a write fault
        await t.store(addr + 8, pattern(p))
        log.append((t.now, "client", f"wrote page {p} at {addr:#x}"))
    ok = True
    for p in range(PAGES):
        addr = BUFFER + p * PAGE
        ok &= await t.load_word(addr) == MAGIC + p
        ok &= await t.load(addr + 8, PAGE - 8) == pattern(p)
    whole = await t.load(BUFFER, PAGES * PAGE)          # one load across every page
    ok &= len(whole) == PAGES * PAGE
    log.append((t.now, "client", f"read back {PAGES} pages: {'all as written' if ok else 'WRONG'}"))
    r = await t.call(t.pager_sel, label=CHECK)
    if not r.ok:
        raise RuntimeError(f"CHECK failed: {r.error.name}")
    return {"read_ok": ok, "pager_saw": list(r.words)}


def build(k: Kernel) -> None:
    log: Log = []
    ptask = k.new_task("pager")
    pg = ptask.new_thread(pager, log, name="pager", priority=200, pager=k.sigma0)
    ctask = k.new_task("client")
    ctask.new_thread(client, log, name="client", priority=100, pager=pg)


def _thread(k: Kernel, name: str) -> Any:
    return next(th for th in k.threads.values() if th.name == name)


def faults_served(k: Kernel) -> list[int]:
    """The client pages the pager served, in order, from the pager's own log page."""
    pg = _thread(k, "pager")
    m = pg.task.space.lookup(LOG_PAGE)
    n = int.from_bytes(k.phys.read(m.phys, 8), "little")
    return [int.from_bytes(k.phys.read(m.phys + 8 + 8 * i, 8), "little") for i in range(n)]


def report(k: Kernel, result: RunResult) -> None:
    cl = _thread(k, "client")
    log = cl.args[0]
    print(f"sigma0 -> pager -> client; run ended {result.reason!r} at {result.now} cycles")
    for time, who, text in log:
        print(f"  {time:>8}  {who:<6}  {text}")
    print("mapping database:")
    print(k.mapdb.dump(), end="")
    if result.reason != "done" or result.died:
        raise AssertionError(f"unexpected end of run: {result!r}")
    if not cl.returned or not cl.result["read_ok"]:
        raise AssertionError(f"the client did not read what it wrote: {cl.result!r}")
    if cl.result["pager_saw"] != [MAGIC + p for p in range(PAGES)]:
        raise AssertionError(f"the pager saw {cl.result['pager_saw']}")
    want = [BUFFER + p * PAGE for p in range(PAGES)]
    if faults_served(k) != want:
        raise AssertionError(f"the pager served {faults_served(k)}, expected {want}")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
