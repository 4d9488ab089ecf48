"""Memory: wall-clock speed of flexpage mapping, unmapping and page faults,
measured through the real kernel paths (IPC with map items, `t.unmap`, `t.store` with
page-fault IPC to the anonymous-memory pager) on `Kernel(check=False, trace=False)`.

Four cases, each timed with `time.perf_counter` inside the thread that does the work
(so thread start-up and the setup IPC are not counted, the IPC that carries the items is):

- `map-4k`: a sender obtains a 1 GiB region from sigma0 (the sigma0 protocol, one
  order-30 item) and maps it on, 4 KiB page by page, into a receiver's 1 GiB receive
  window: 31 map items per call (all the MRs hold), `maps` items in all. Figure:
  maps per second (median of `repeats` kernels). Then the receiver flushes the pages it
  got, one `t.unmap(Fpage.mem(page, 12), self_too=True)` per page: unmaps per second.
- `map-unmap-1g-fpage`: a sender holding a 1 GiB region (one mapping node) maps it as
  a single order-30 item to a receiver, then takes it back with
  `t.unmap(Fpage.mem(base, 30))`. Figures: ms per map + unmap (median of `cycles`
  cycles after a warm-up one) and the peak of the Python heap (tracemalloc) during one
  more, traced, cycle.
- `unmap-100k-tree`: a tree of mappings derived from one root region, built by IPC with
  map items across tasks: the root task gets `tree[0]` pages from sigma0 and maps each
  page to task B; B maps all of them on to `tree[1]` tasks, each of those to `tree[2]`
  tasks of its own, and so on (default 1,000 pages, then 9, then 10 tasks: 1,000 +
  9,000 + 90,000 = 100,000 mappings in 101 tasks, three levels deep). Then the root task
  unmaps its region with one `t.unmap`, which removes all of them. Figure: ms of that
  unmap.
- `page-faults`: a client thread with the default pager (the anonymous-memory pager,
  which gets each page from sigma0) stores one byte into each of `faults` fresh pages:
  every store is one page fault (fault IPC, the pager's sigma0 call, the zero-fill,
  the map reply). Figure: faults per second. It does not depend on `faults`: sigma0
  merges the regions it hands out and searches from below what it has handed out, so
  a fault costs the same at the first page and the ten-thousandth.

Each case checks that the work was done (mappings counted in the address spaces, the
counts `t.unmap` returned) and raises RuntimeError if not.
"""

from __future__ import annotations

import gc
import platform
import statistics
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Any

from ..kernel import Kernel
from ..kernel.abi import Fpage, Label, MapItem, Rights
from ..kernel.objects import Task, Thread
from ..lib.sigma0 import SIGMA0_FPAGE
from ..user import UserContext
from .pingpong import Progress

PAGE = 4096
ITEMS_PER_IPC = 31          # 31 map items (62 MRs) fill the 63 MRs with one word to spare
REGION = 1 << 30            # where every task of a case keeps its memory (1 GiB aligned)
WINDOW = Fpage.mem(REGION, 30)  # every receiver's window: 1 GiB at REGION
GIB_ORDER = 30
CLIENT_BASE = 0x1000_0000   # where the page-fault client touches its pages

# The targets (from the issue); 10 MB is 10,000,000 bytes.
TARGET_MAPS_PER_S = 200_000
TARGET_1G_MS = 50.0
TARGET_1G_PEAK_BYTES = 10_000_000
TARGET_TREE_MS = 1000.0

CASE_NAMES = ("map-4k", "map-unmap-1g-fpage", "unmap-100k-tree", "page-faults")


@dataclass(frozen=True)
class Sizes:
    maps: int = 200_000                    # map-4k: 4 KiB items mapped per run
    repeats: int = 3                       # map-4k: runs (a kernel each), median reported
    cycles: int = 20                       # 1g fpage: timed map + unmap cycles
    tree: tuple[int, ...] = (1000, 9, 10)  # pages, then the fan-out of each level below
    faults: int = 4096                     # page-faults: fresh pages touched


FULL = Sizes()
QUICK = Sizes(maps=3_100, repeats=1, cycles=3, tree=(100, 3, 4), faults=256)


def tree_size(tree: tuple[int, ...]) -> int:
    """Mappings in the tree: pages · (1 + f1 + f1·f2 + …)."""
    total, width = 0, 1
    for i, f in enumerate(tree):
        width *= f
        if i == 0:
            total = width
        else:
            total += width
    return total


def _batches(n: int, base: int = REGION) -> list[list[MapItem]]:
    """`n` 4 KiB map items of [base, base + n pages), each sent from its own address
    (so it lands at the same offset in a window at `base`), 31 to a message."""
    items = [MapItem(Fpage.mem(base + i * PAGE, 12, Rights.RWX), send_base=base + i * PAGE)
             for i in range(n)]
    return [items[i:i + ITEMS_PER_IPC] for i in range(0, n, ITEMS_PER_IPC)]


def _order_for(pages: int) -> int:
    """The order of the smallest naturally aligned region holding `pages` pages."""
    return max(12, (pages * PAGE - 1).bit_length())


async def _take_region(t: UserContext, sigma0: int, phys: int, order: int) -> None:
    """Ask sigma0 for [phys, phys + 2^order) (1:1, sigma0 protocol); it lands at REGION."""
    r = await t.call(sigma0, words=[SIGMA0_FPAGE, Fpage.mem(phys, order).raw],
                     label=Label.SIGMA0, window=Fpage.mem(REGION, order))
    if not r.ok or r.tag.label < 0:
        raise RuntimeError(f"sigma0 refused {phys:#x}/{order}: {r!r}")


async def _server(t: UserContext) -> None:
    """Receive (and acknowledge) messages with map items forever, into WINDOW."""
    r = await t.wait(window=WINDOW)
    while True:
        if not r.ok:
            raise RuntimeError(f"{t.name}: receive failed: {r!r}")
        r = await t.reply_and_wait()


def _check_run(k: Kernel, what: str) -> None:
    res = k.run()
    if res.reason != "done" or res.died:
        raise RuntimeError(f"{what}: the run did not complete: {res!r}")


def _kernel(memory: int) -> Kernel:
    return Kernel(memory=memory, check=False, trace=False)


# --- map-4k ---------------------------------------------------------------------------------

def _map_4k_once(maps: int) -> tuple[float, float, int, int]:
    """One kernel: (seconds to map, seconds to unmap, mapped, unmapped)."""
    if not 0 < maps <= 1 << (GIB_ORDER - 12):
        raise ValueError(f"map-4k maps 1 to {1 << (GIB_ORDER - 12):,} pages, got {maps}")
    k = _kernel(2 << 30)
    batches = _batches(maps)
    out: dict[str, float] = {}
    receiver_task = k.new_task("receiver")
    receiver = receiver_task.new_thread(_server, name="receiver", pager=None)
    sender_task = k.new_task("sender")
    s0 = sender_task.add_cap(k.sigma0)
    dest = sender_task.add_cap(receiver)

    async def sender(t: UserContext) -> None:
        await _take_region(t, s0, 0, GIB_ORDER)
        gc.collect()
        t0 = perf_counter()
        for b in batches:
            r = await t.call(dest, items=b)
            if not r.ok:
                raise RuntimeError(f"map-4k: the map IPC failed: {r!r}")
        out["map_s"] = perf_counter() - t0

    sender_task.new_thread(sender, name="sender", pager=None)
    _check_run(k, "map-4k")
    mapped = receiver_task.space.count

    async def flusher(t: UserContext) -> None:
        gc.collect()
        removed = 0
        t0 = perf_counter()
        for i in range(maps):
            removed += await t.unmap(Fpage.mem(REGION + i * PAGE, 12, Rights.RWX), self_too=True)
        out["unmap_s"] = perf_counter() - t0
        out["removed"] = removed

    receiver_task.new_thread(flusher, name="flusher", pager=None)
    _check_run(k, "map-4k unmap")
    unmapped = int(out["removed"])
    if receiver_task.space.count:
        raise RuntimeError(f"map-4k: {receiver_task.space.count} mappings left after the unmap")
    return out["map_s"], out["unmap_s"], mapped, unmapped


def run_map_4k(maps: int, repeats: int = 3, progress: Progress | None = None) -> dict[str, Any]:
    """The `map-4k` row: maps_per_s (median of `repeats` kernels), unmaps_per_s."""
    map_s: list[float] = []
    unmap_s: list[float] = []
    for i in range(repeats):
        if progress:
            progress(f"map-4k: {maps:,} pages, run {i + 1} of {repeats}")
        ms, us, mapped, unmapped = _map_4k_once(maps)
        if mapped != maps or unmapped != maps:
            raise RuntimeError(f"map-4k: asked {maps} maps; mapped {mapped}, unmapped {unmapped}")
        map_s.append(ms)
        unmap_s.append(us)
    med = statistics.median(map_s)
    per_s = maps / med
    return {
        "case": "map-4k",
        "maps": maps,
        "ipcs": -(-maps // ITEMS_PER_IPC),
        "items_per_ipc": ITEMS_PER_IPC,
        "maps_per_s": per_s,
        "ns_per_map": med * 1e9 / maps,
        "map_s_samples": map_s,
        "unmapped": maps,
        "unmaps_per_s": maps / statistics.median(unmap_s),
        "target": f">= {TARGET_MAPS_PER_S:,} maps/s",
        "met": per_s >= TARGET_MAPS_PER_S,
    }


# --- map-unmap-1g-fpage ---------------------------------------------------------------------

def run_map_unmap_1g(cycles: int = 20, progress: Progress | None = None) -> dict[str, Any]:
    """The `map-unmap-1g-fpage` row: ms (median), peak_bytes (tracemalloc)."""
    if progress:
        progress(f"map-unmap-1g-fpage: {cycles} cycles")
    k = _kernel(2 << 30)
    receiver_task = k.new_task("receiver")
    receiver = receiver_task.new_thread(_server, name="receiver", pager=None)
    sender_task = k.new_task("sender")
    s0 = sender_task.add_cap(k.sigma0)
    dest = sender_task.add_cap(receiver)
    item = [MapItem(Fpage.mem(REGION, GIB_ORDER, Rights.RWX), send_base=REGION)]
    whole = Fpage.mem(REGION, GIB_ORDER, Rights.RWX)
    samples: list[float] = []
    out: dict[str, int] = {}
    counts: list[tuple[int, int]] = []   # (receiver's mappings after the map, removed)

    async def cycle(t: UserContext) -> float:
        t0 = perf_counter()
        r = await t.call(dest, items=item)
        mapped = receiver_task.space.count
        removed = await t.unmap(whole)
        dt = perf_counter() - t0
        if not r.ok:
            raise RuntimeError(f"map-unmap-1g-fpage: the map IPC failed: {r!r}")
        counts.append((mapped, removed))
        return dt

    async def sender(t: UserContext) -> None:
        await _take_region(t, s0, 1 << 30, GIB_ORDER)
        await cycle(t)  # warm-up
        gc.collect()
        for _ in range(cycles):
            samples.append(await cycle(t))
        gc.collect()
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            await cycle(t)
            out["peak"] = tracemalloc.get_traced_memory()[1] - before
        finally:
            if not tracing:
                tracemalloc.stop()

    sender_task.new_thread(sender, name="sender", pager=None)
    _check_run(k, "map-unmap-1g-fpage")
    if counts != [(1, 1)] * (cycles + 2):
        raise RuntimeError(f"map-unmap-1g-fpage: expected one mapping made and removed per "
                           f"cycle, got {counts!r}")
    ms = statistics.median(samples) * 1e3
    peak = out["peak"]
    return {
        "case": "map-unmap-1g-fpage",
        "bytes": 1 << GIB_ORDER,
        "cycles": cycles,
        "ms": ms,
        "ms_min": min(samples) * 1e3,
        "ms_max": max(samples) * 1e3,
        "peak_bytes": peak,
        "mapped_per_cycle": 1,
        "removed_per_cycle": 1,
        "target": f"< {TARGET_1G_MS:g} ms and < {TARGET_1G_PEAK_BYTES:,} bytes peak heap",
        "met": ms < TARGET_1G_MS and peak < TARGET_1G_PEAK_BYTES,
    }


# --- unmap-100k-tree -------------------------------------------------------------------------

def _tree_node(parent_batches: int, children: list[int], batches: list[list[MapItem]],
               what: str) -> Callable[[UserContext], Any]:
    """A node of the tree: receive its pages from its parent (`parent_batches`
    messages), then map all of them on to each child."""

    async def body(t: UserContext) -> None:
        r = await t.wait(window=WINDOW)
        for _ in range(parent_batches - 1):
            if not r.ok:
                raise RuntimeError(f"{what}: receive failed: {r!r}")
            r = await t.reply_and_wait()
        if not r.ok:
            raise RuntimeError(f"{what}: receive failed: {r!r}")
        await t.reply()
        for c in children:
            for b in batches:
                r = await t.call(c, items=b)
                if not r.ok:
                    raise RuntimeError(f"{what}: the map IPC failed: {r!r}")

    return body


def run_unmap_tree(tree: tuple[int, ...] = FULL.tree,
                   progress: Progress | None = None) -> dict[str, Any]:
    """The `unmap-100k-tree` row: build the tree by IPC, time one unmap of its root."""
    if len(tree) < 1 or any(f < 1 for f in tree):
        raise ValueError(f"a tree is pages, then fan-outs >= 1, got {tree!r}")
    pages = tree[0]
    order = _order_for(pages)
    if order > GIB_ORDER:
        raise ValueError(f"the tree's region holds at most {1 << (GIB_ORDER - 12):,} pages")
    total = tree_size(tree)
    if progress:
        progress(f"unmap-100k-tree: building {total:,} mappings by IPC")
    k = _kernel(64 << 20 if order < 26 else 2 << 30)
    batches = _batches(pages)
    nb = len(batches)
    root = k.new_task("root")
    tasks: list[Task] = []
    # widths[d]: the tasks at depth d + 1 below the root (depth 1: one task, B).
    widths = [1]
    for f in tree[1:]:
        widths.append(widths[-1] * f)
    # From the leaves up, so that each task can hold capabilities for its children.
    below: list[Thread] = []
    for d in range(len(widths) - 1, -1, -1):
        fan = tree[d + 1] if d + 1 < len(tree) else 0
        level: list[Thread] = []
        for i in range(widths[d]):
            task = k.new_task(f"t{d + 1}.{i}")
            kids = [task.add_cap(th) for th in below[i * fan:(i + 1) * fan]]
            level.append(task.new_thread(_tree_node(nb, kids, batches, task.name),
                                         name=task.name, pager=None))
            tasks.append(task)
        below = level
    s0 = root.add_cap(k.sigma0)
    first = root.add_cap(below[0])
    t_build = perf_counter()

    async def root_body(t: UserContext) -> None:
        await _take_region(t, s0, 0, order)
        for b in batches:
            r = await t.call(first, items=b)
            if not r.ok:
                raise RuntimeError(f"unmap-100k-tree: the map IPC failed: {r!r}")

    root.new_thread(root_body, name="root", pager=None)
    _check_run(k, "unmap-100k-tree build")
    build_s = perf_counter() - t_build
    built = sum(task.space.count for task in tasks)
    own = root.space.count  # the root's own entries of its region (2 MiB/4 KiB ones)
    if built != total:
        raise RuntimeError(f"unmap-100k-tree: built {built} mappings, planned {total}")
    if progress:
        progress(f"unmap-100k-tree: unmapping {total:,} mappings")
    out: dict[str, float] = {}

    async def unmapper(t: UserContext) -> None:
        gc.collect()
        t0 = perf_counter()
        n = await t.unmap(Fpage.mem(REGION, order, Rights.RWX))
        out["s"] = perf_counter() - t0
        out["removed"] = n

    root.new_thread(unmapper, name="unmapper", pager=None)
    _check_run(k, "unmap-100k-tree unmap")
    removed = int(out["removed"])
    left = sum(task.space.count for task in tasks)
    if removed != total or left or root.space.count != own:
        raise RuntimeError(f"unmap-100k-tree: removed {removed} of {total}, {left} left, "
                           f"the root holds {root.space.count} mappings (had {own})")
    ms = out["s"] * 1e3
    return {
        "case": "unmap-100k-tree",
        "mappings": total,
        "removed": removed,
        "tasks": len(tasks) + 1,
        "depth": len(tree),
        "fanout": list(tree),
        "build_s": build_s,
        "ms": ms,
        "target": f"< {TARGET_TREE_MS:g} ms",
        "met": ms < TARGET_TREE_MS,
    }


# --- page-faults ------------------------------------------------------------------------------

def run_page_faults(faults: int, progress: Progress | None = None) -> dict[str, Any]:
    """The `page-faults` row: faults_per_s through the anonymous-memory pager."""
    if progress:
        progress(f"page-faults: {faults:,} fresh pages")
    memory = max(64 << 20, (faults + 1024) * PAGE)
    memory = 1 << (memory - 1).bit_length()
    k = _kernel(memory)
    client = k.new_task("client")
    out: dict[str, float] = {}
    one = b"\x01"

    async def body(t: UserContext) -> None:
        gc.collect()
        t0 = perf_counter()
        for i in range(faults):
            await t.store(CLIENT_BASE + i * PAGE, one)
        out["s"] = perf_counter() - t0

    client.new_thread(body, name="client")  # the default pager
    _check_run(k, "page-faults")
    # Each store touched a fresh page and completed: one fault, served with one mapping.
    served = client.space.count
    pool = k.anon_pager.task.space.count
    if served != faults or pool != faults:
        raise RuntimeError(f"page-faults: touched {faults} pages; the client has {served} "
                           f"mappings, the pager's pool {pool}")
    return {
        "case": "page-faults",
        "faults": served,
        "faults_per_s": served / out["s"],
        "us_per_fault": out["s"] * 1e6 / served,
        "target": None,
        "met": None,
    }


# --- all ------------------------------------------------------------------------------------

def run_memory(sizes: Sizes = FULL, progress: Progress | None = None) -> dict[str, Any]:
    """Every case. Returns {"rows": [{case, <figures>, target, met}], "sizes", "python"}.
    `target` is text (None: the issue sets none), `met` a bool (None without target)."""
    rows = [
        run_map_4k(sizes.maps, sizes.repeats, progress),
        run_map_unmap_1g(sizes.cycles, progress),
        run_unmap_tree(sizes.tree, progress),
        run_page_faults(sizes.faults, progress),
    ]
    return {"rows": rows, "sizes": {**asdict(sizes), "tree": list(sizes.tree)},
            "python": platform.python_version()}
