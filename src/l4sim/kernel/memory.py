"""Memory: physical frames, address spaces with their page tables, and the mapping
database.

A mapping is one node: (space, base, order, physical base, rights), a parent (the
mapping it was derived from) and children. A node is one page-table entry of an x86-64
page size (4 KiB, 2 MiB, 1 GiB: superpage entries), so a 1 GiB flexpage is one node,
not 262,144, and map and unmap cost per entry, not per 4 KiB page; a flexpage of
another size becomes the entries that make it up. sigma0's mappings of physical memory
(1:1, in the largest aligned blocks) are the roots. Fiasco keeps one tree per physical
frame; here a frame's tree is the set of nodes that cover it (a superpage node belongs
to the trees of all the frames it covers), and `dump(frame=...)` prints it that way.

Page tables are counted, not built: a node needs the x86-64 tables above its entry size
(a 4 KiB entry lives in a page table covering 2 MiB, under a directory covering 1 GiB,
under a pointer table covering 512 GiB); each table costs 4 KiB of the task's quota.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Capability, Task

PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
USER_SPACE_BITS: Final = 47     # x86-64 user half
IO_SPACE_BITS: Final = 16       # 65,536 I/O ports
OBJ_SPACE_BITS: Final = 16      # capability selectors
MAX_DEPTH: Final = 255          # mapping depth limit (FIASCO_FACTS)
TABLE_SIZE: Final = 4096
DEFAULT_PT_QUOTA: Final = 64 << 20
_MEM_TABLES: Final = ((12, (21, 30, 39)), (21, (30, 39)), (30, (39,)))

# Memory rights (flexpage bits).
R: Final = 4
W: Final = 2
X: Final = 1


class PhysicalMemory:
    """Physical memory: frames of 4 KiB in one anonymous mmap, made on first access, so
    that the host pays only for the frames touched (the OS backs an mmap lazily)."""

    __slots__ = ("size", "_map", "_view")

    def __init__(self, size: int) -> None:
        self.size = size
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None

    @property
    def view(self) -> memoryview:
        """All physical memory as one writable memoryview (slices copy no bytes)."""
        v = self._view
        if v is None:
            flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20) | getattr(
                mmap, "MAP_NORESERVE", 0)
            self._map = mmap.mmap(-1, self.size, flags=flags)
            v = self._view = memoryview(self._map)
        return v

    def read(self, paddr: int, n: int) -> bytes:
        return bytes(self.view[paddr:paddr + n])

    def write(self, paddr: int, data: bytes | bytearray | memoryview) -> None:
        self.view[paddr:paddr + len(data)] = data


class Mapping:
    """One node of the mapping database: `space` maps [base, base + 2^order) to
    [phys, phys + 2^order) with `rights`, derived from `parent`."""

    __slots__ = ("space", "base", "order", "phys", "rights", "parent", "children", "depth",
                 "by_frame")

    def __init__(self, space: AddressSpace, base: int, order: int, phys: int, rights: int,
                 parent: Mapping | None) -> None:
        self.space = space
        self.base = base
        self.order = order
        self.phys = phys
        self.rights = rights
        self.parent = parent
        self.children: dict[Mapping, None] = {}
        self.depth: int = 0 if parent is None else parent.depth + 1
        # The children by physical page, made when a node with many children is unmapped
        # in part: a pager holding 1 GiB that unmaps one page then finds its children at once.
        self.by_frame: dict[int, list[Mapping]] | None = None

    def __repr__(self) -> str:
        return (f"<Mapping {self.space.name} {self.base:#x}/{self.order} -> {self.phys:#x} "
                f"{rights_text(self.rights)}>")


def rights_text(rights: int) -> str:
    return "".join(c if rights & b else "-" for c, b in (("r", R), ("w", W), ("x", X)))


class AddressSpace:
    """A task's memory (or I/O port) space: its mappings by order, for lookup in a few
    dict probes, and the page tables they need, counted against a quota."""

    __slots__ = ("task", "name", "kind", "bits", "min_order", "by_order", "orders",
                 "tables", "pt_quota", "count")

    def __init__(self, task: Task | None, name: str, kind: int, bits: int, min_order: int,
                 pt_quota: int | None) -> None:
        self.task = task
        self.name = name
        self.kind = kind          # Fpage type: 1 memory, 2 I/O
        self.bits = bits
        self.min_order = min_order
        self.by_order: dict[int, dict[int, Mapping]] = {}
        self.orders: list[int] = []   # orders in use, largest first
        self.tables: dict[tuple[int, int], int] = {}  # (level shift, region) -> entries
        self.pt_quota = pt_quota      # bytes of page tables, None: no page tables (I/O)
        self.count = 0

    # --- lookup -------------------------------------------------------------------------

    def lookup(self, addr: int) -> Mapping | None:
        """The mapping that covers `addr`, or None."""
        by_order = self.by_order
        for o in self.orders:
            m = by_order[o].get(addr >> o)
            if m is not None:
                return m
        return None

    def holds(self, m: Mapping) -> bool:
        """Whether `m` is (still) an entry of this space."""
        table = self.by_order.get(m.order)
        return table is not None and table.get(m.base >> m.order) is m

    def overlapping(self, base: int, order: int) -> list[Mapping]:
        """The mappings that overlap [base, base + 2^order), by address."""
        found: list[Mapping] = []
        end = base + (1 << order)
        for o, table in self.by_order.items():
            if o >= order:
                m = table.get(base >> o)
                if m is not None:
                    found.append(m)
            elif 1 << (order - o) <= len(table):
                get = table.get
                first = base >> o
                for key in range(first, first + (1 << (order - o))):
                    m = get(key)
                    if m is not None:
                        found.append(m)
            else:
                found.extend(m for m in table.values() if base <= m.base < end)
        if len(found) > 1:
            found.sort(key=_base)
        return found

    def mappings(self) -> list[Mapping]:
        """Every mapping of this space, by address."""
        out = [m for table in self.by_order.values() for m in table.values()]
        out.sort(key=_base)
        return out

    # --- page tables ----------------------------------------------------------------------

    @property
    def pt_bytes(self) -> int:
        """Page-table memory in use: the top-level table and every table below it."""
        return 0 if self.pt_quota is None else TABLE_SIZE * (1 + len(self.tables))

    def _tables_of(self, base: int, order: int) -> Iterator[tuple[int, int]] | tuple[tuple[int, int], ...]:
        """The page tables (level shift, region) an entry of this order at `base` needs."""
        if order < 21:  # a 4 KiB entry, the common case: no generator
            return (21, base >> 21), (30, base >> 30), (39, base >> 39)
        return self._tables_of_large(base, order)

    def _tables_of_large(self, base: int, order: int) -> Iterator[tuple[int, int]]:
        for entry, levels in _MEM_TABLES:
            if order < entry:
                break
            last = levels
        for shift in last:
            if order < shift:
                yield shift, base >> shift
            else:
                first = base >> shift
                yield from ((shift, r) for r in range(first, first + (1 << (order - shift))))

    def new_tables(self, regions: list[tuple[int, int]]) -> int:
        """How many page tables mapping these (base, order) regions would add."""
        if self.pt_quota is None:
            return 0
        tables = self.tables
        new: set[tuple[int, int]] = set()
        for base, order in regions:
            new.update(t for t in self._tables_of(base, order) if t not in tables)
        return len(new)

    def fits(self, regions: list[tuple[int, int]]) -> bool:
        """Whether mapping these regions stays within the page-table quota."""
        quota = self.pt_quota
        return quota is None or self.pt_bytes + TABLE_SIZE * self.new_tables(regions) <= quota

    def fits_page(self, base: int) -> bool:
        """`fits([(base, 12)])` without the generality."""
        quota = self.pt_quota
        if quota is None:
            return True
        tables = self.tables
        if (21, base >> 21) in tables:  # (then its directory and pointer table are there too)
            return TABLE_SIZE * (1 + len(tables)) <= quota
        new = 1 + ((30, base >> 30) not in tables) + ((39, base >> 39) not in tables)
        return TABLE_SIZE * (1 + len(tables) + new) <= quota

    # --- change ---------------------------------------------------------------------------

    def insert(self, m: Mapping) -> None:
        o = m.order
        table = self.by_order.get(o)
        if table is None:
            table = self.by_order[o] = {}
            self.orders.append(o)
            self.orders.sort(reverse=True)
        base = m.base
        table[base >> o] = m
        self.count += 1
        if self.pt_quota is not None:
            tables = self.tables
            if o < 21:  # a 4 KiB entry (most): its three tables, without the tuple of them
                t = 21, base >> 21
                tables[t] = tables.get(t, 0) + 1
                t = 30, base >> 30
                tables[t] = tables.get(t, 0) + 1
                t = 39, base >> 39
                tables[t] = tables.get(t, 0) + 1
            else:
                for t in self._tables_of_large(base, o):
                    tables[t] = tables.get(t, 0) + 1

    def remove(self, m: Mapping) -> None:
        o = m.order
        table = self.by_order[o]
        del table[m.base >> o]
        if not table:
            del self.by_order[o]
            self.orders.remove(o)
        self.count -= 1
        if self.pt_quota is not None:
            tables = self.tables
            for t in self._tables_of(m.base, o):
                n = tables[t] - 1
                if n:
                    tables[t] = n
                else:
                    del tables[t]

    def __repr__(self) -> str:
        return f"<AddressSpace {self.name}: {self.count} mappings>"


def _base(m: Mapping) -> int:
    return m.base


# --- the mapping database -----------------------------------------------------------------

def add_child(parent: Mapping, space: AddressSpace, base: int, order: int, phys: int,
              rights: int) -> Mapping:
    child = Mapping(space, base, order, phys, rights, parent)
    parent.children[child] = None
    index = parent.by_frame
    if index is not None:
        index.setdefault(phys >> PAGE_SHIFT, []).append(child)
    space.insert(child)
    return child


def remove_subtree(m: Mapping) -> int:
    """Remove `m` and everything derived from it; returns how many nodes went."""
    parent = m.parent
    if parent is not None:
        del parent.children[m]
        index = parent.by_frame
        if index is not None:
            index[m.phys >> PAGE_SHIFT].remove(m)
        m.parent = None
    stack = [m]
    n = 0
    while stack:
        node = stack.pop()
        node.space.remove(node)
        n += 1
        kids = node.children
        if kids:
            stack.extend(kids)
            for kid in kids:
                kid.parent = None
            node.children = {}
            node.by_frame = None
    return n


class TreeNode(Protocol):
    """A node of a derivation tree: a memory mapping or a capability."""

    rights: int

    @property
    def parent(self) -> TreeNode | None: ...

    @property
    def children(self) -> Iterable[TreeNode]: ...


def ancestors(node: TreeNode) -> Iterator[TreeNode]:
    """What `node` was derived from, nearest first."""
    p = node.parent
    while p is not None:
        yield p
        p = p.parent


def downgrade_subtree(node: TreeNode, revoke: int) -> None:
    """Take the rights `revoke` from `node` and everything derived from it."""
    keep = ~revoke
    stack = [node]
    while stack:
        n = stack.pop()
        n.rights &= keep
        stack.extend(n.children)


def revoke(m: Mapping, base: int, order: int, rights: int, self_too: bool) -> int:
    """Unmap the part of `m` inside [base, base + 2^order) (addresses of `m`'s space)
    with `rights`: every mapping derived from that part loses them. Revoking R removes
    a derived mapping, revoking only W/X downgrades it and its descendants; a mapping
    larger than the region goes whole, as x86 flushes a superpage. With `self_too`, `m`
    itself too. Returns the number of mappings removed."""
    size = 1 << m.order
    lo = max(base, m.base) - m.base
    hi = min(base + (1 << order), m.base + size) - m.base
    if lo >= hi or not rights:
        return 0
    if self_too:
        if rights & R:
            return remove_subtree(m)
        downgrade_subtree(m, rights)
        return 0
    pstart, pend = m.phys + lo, m.phys + hi
    removed = 0
    for c in _children_in(m, pstart, pend):
        if rights & R:
            removed += remove_subtree(c)
        else:
            downgrade_subtree(c, rights)
    return removed


def _children_in(m: Mapping, pstart: int, pend: int) -> list[Mapping]:
    """The children of `m` that overlap the physical range [pstart, pend)."""
    kids = m.children
    pages = (pend - pstart) >> PAGE_SHIFT
    if len(kids) <= 32 or pages >= len(kids) or m.space.kind != 1:
        return [c for c in kids if c.phys < pend and pstart < c.phys + (1 << c.order)]
    index = m.by_frame
    if index is None:
        index = m.by_frame = {}
        for c in kids:
            index.setdefault(c.phys >> PAGE_SHIFT, []).append(c)
    found: list[Mapping] = []
    for page in range(pstart >> PAGE_SHIFT, pend >> PAGE_SHIFT):
        found.extend(index.get(page, ()))
    # A 2 MiB or 1 GiB child that starts before the range and reaches into it (entries
    # are naturally aligned, so it starts at an aligned address).
    looked = set()
    for shift in (21, 30):
        start = pstart >> shift << shift
        if start < pstart and start not in looked:
            looked.add(start)
            found.extend(c for c in index.get(start >> PAGE_SHIFT, ()) if c.phys + (1 << c.order) > pstart)
    return found


class MappingDatabase:
    """A read-only view of a kernel's mapping database: `k.mapdb`."""

    __slots__ = ("kernel",)

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def roots(self, kind: str = "memory") -> list[Mapping]:
        """The root mappings (sigma0's) of memory or I/O ports, by physical address."""
        attr = _KINDS[kind]
        out = [m for task in self.kernel.tasks for m in getattr(task, attr).mappings()
               if m.parent is None]
        out.sort(key=lambda m: m.phys)
        return out

    def dump(self, kind: str = "memory", frame: int | None = None) -> str:
        """The trees as indented text, children by task name and address. `kind` is
        "memory", "io" or "caps"; `frame` (a physical address) shows only the tree of
        that frame: the mappings that cover it."""
        if kind == "caps":
            return self._dump_caps()
        lines: list[str] = []

        def walk(m: Mapping, indent: int) -> None:
            if frame is not None and not m.phys <= frame < m.phys + (1 << m.order):
                return
            lines.append(f"{'  ' * indent}{m.space.name} {m.base:#x} "
                         f"{_size_text(m.order, m.space.kind)} {rights_text(m.rights)} "
                         f"(phys {m.phys:#x})")
            for c in sorted(m.children, key=lambda c: (c.space.name, c.base)):
                walk(c, indent + 1)

        for r in self.roots(kind):
            walk(r, 0)
        return "\n".join(lines) + ("\n" if lines else "")

    def _dump_caps(self) -> str:
        lines: list[str] = []

        def walk(c: Capability, indent: int) -> None:
            lines.append(f"{'  ' * indent}{c.task.name}[{c.sel}] {c.obj!r} "
                         f"{_cap_rights_text(c.rights)}")
            for d in sorted(c.children, key=lambda d: (d.task.name, d.sel)):
                walk(d, indent + 1)

        for task in self.kernel.tasks:
            for c in task.caps:
                if c is not None and c.parent is None and c.children:
                    walk(c, 0)
        return "\n".join(lines) + ("\n" if lines else "")


_KINDS: Final = {"memory": "space", "io": "io"}


def _cap_rights_text(rights: int) -> str:
    return "".join(c if rights & b else "-" for c, b in (("r", 4), ("w", 1), ("s", 2), ("d", 8)))


def _size_text(order: int, kind: int) -> str:
    if kind != 1:
        return f"{1 << order} ports"
    size = 1 << order
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size >> shift} {unit}"
    return f"{size} B"
