"""Flexpage IPC: map and grant items, receive windows, the landing rule, unmap.

Send items are two words in the MRs after the untyped words (w0 = send base | map 8 |
grant 2, w1 = the fpage); the receiver offers one window per kind in its BRs, found
through the BDR (bits 0-4 memory, 5-9 I/O, 10-14 objects): BR[i] = 8 (a map buffer),
BR[i+1] = the window fpage. Each item lands by Fiasco's rule (FIASCO_FACTS.md) and
maps every source mapping inside the sent part: unmapped source pages are skipped,
rights = source rights ∧ item rights, a target mapping derived from the same source is
upgraded, any other is unmapped first. An item either applies whole or, on a failed
map (page-table quota, depth, a fpage outside the space), changes nothing.

The receiver's MRs get the items back after the words: w0 as sent, w1 the fpage that
landed in the receiver's space (its base, order and the rights it got); a window that
received nothing gets w1 = 0 (Fiasco's "empty map").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .abi import BR_COUNT, IpcError
from .memory import (
    MAX_DEPTH,
    OBJ_SPACE_BITS,
    USER_SPACE_BITS,
    AddressSpace,
    Mapping,
    R,
    add_child,
    ancestors,
    downgrade_subtree,
    remove_subtree,
    revoke,
)
from .objects import Capability, Task

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Thread

OK = IpcError.OK
SEMAPFAILED = IpcError.SEMAPFAILED
SEMSGCUT = IpcError.SEMSGCUT

SPECIAL, MEMORY, IO, OBJECT = 0, 1, 2, 3
MAP_ITEM = 8
GRANT = 2
_BDR_SHIFT = {MEMORY: 0, IO: 5, OBJECT: 10}
_CAP_R = 4
_PAGE_ORDERS = (30, 21, 12)  # x86-64 page sizes, largest first
_WORD = (1 << 64) - 1
_USER_END = 1 << USER_SPACE_BITS


def fpage_parts(raw: int) -> tuple[int, int, int, int]:
    """(type, base, order, rights) of a raw fpage word; base keeps its low bits."""
    return (raw >> 4) & 3, raw >> 12 << 12, (raw >> 6) & 0x3F, raw & 0xF


def receive_window(th: Thread, kind: int) -> int | None:
    """The raw window fpage `th` offers for items of `kind`, or None."""
    br = th.utcb._br
    if br is None:
        return None
    i = (th.utcb.bdr >> _BDR_SHIFT[kind]) & 0x1F
    if i + 1 >= BR_COUNT or not br[i] & MAP_ITEM:
        return None
    w = br[i + 1]
    wtype, _, order, _ = fpage_parts(w)
    if wtype == kind or (wtype == SPECIAL and order == 63):
        return w
    return None


def _region(base: int, order: int, bits: int, min_order: int, shift: int = 0) -> tuple[int, int] | None:
    """A valid (base, order) within a space of 2^bits, in the space's units, or None.
    `shift` converts fpage bases (ports and selectors sit at bit 12). As in Fiasco, the
    address bits below the order are ignored."""
    base = (base >> shift) & ~((1 << order) - 1)
    if order > bits or order < min_order or base + (1 << order) > 1 << bits:
        return None
    return base, order


def _window(raw: int, bits: int, min_order: int, shift: int) -> tuple[int, int] | None:
    wtype, base, order, _ = fpage_parts(raw)
    if wtype == SPECIAL:  # "all": the whole space
        return 0, bits
    return _region(base, order, bits, min_order, shift)


def landing(snd: tuple[int, int], rcv: tuple[int, int], hot: int) -> tuple[int, int, int]:
    """Fiasco's landing rule: (source base, target base, order) of what is transferred."""
    sbase, so = snd
    rbase, ro = rcv
    if ro >= so:
        return sbase, rbase + ((hot % (1 << ro)) & ~((1 << so) - 1)), so
    return sbase + ((hot % (1 << so)) & ~((1 << ro) - 1)), rbase, ro


def transfer_items(k: Kernel, snd: Thread, rcv: Thread, n: int, nitems: int) -> IpcError:
    """Apply the map items among MR[n .. n + 2·nitems) of `snd` to `rcv` (to the thread
    a nested page fault is for, `rcv.pf_target`, if set): OK, SEMSGCUT (no window for an
    item) or SEMAPFAILED; the items before a failed one stay applied, the failed one
    changed nothing."""
    smr, rmr = snd.mr, rcv.mr
    target = rcv.pf_target or rcv
    windows: dict[int, int | None] = {}  # per kind, decoded once per message
    for i in range(n, n + 2 * nitems, 2):
        w0, w1 = smr[i], smr[i + 1]
        rmr[i] = w0
        rmr[i + 1] = 0
        if w0 == 0:
            continue  # void item
        if not w0 & MAP_ITEM:
            continue  # a string item: copied by longipc.py, which writes its return item
        kind = (w1 >> 4) & 3
        if kind == SPECIAL:
            return SEMAPFAILED
        window = windows[kind] if kind in windows else windows.setdefault(
            kind, receive_window(rcv, kind))
        if window is None:
            if k.trace:
                k.record(snd, "map", f"to {rcv.name}: no receive window")
            return SEMSGCUT
        grant = bool(w0 & GRANT)
        hot = w0 >> 12 << 12
        if kind == OBJECT:
            landed = map_caps(k, snd.task, target.task, w1, hot >> 12, window, grant)
        else:
            src_space = snd.task.space if kind == MEMORY else snd.task.io
            dst_space = target.task.space if kind == MEMORY else target.task.io
            landed = map_mem(k, src_space, dst_space, w1, hot if kind == MEMORY else hot >> 12,
                             window, grant)
        if landed is None:
            if k.trace:
                k.record(snd, "map", f"to {rcv.name}: map failed")
            return SEMAPFAILED
        rmr[i + 1] = landed
        if k.trace:
            k.record(snd, "map", f"to {rcv.name}: {'grant' if grant else 'map'} {_fp_text(w1)} "
                     f"-> {_fp_text(landed)}")
    return OK


def _fp_text(raw: int) -> str:
    kind, base, order, rights = fpage_parts(raw)
    if raw == 0:
        return "nothing"
    if kind == MEMORY:
        return f"mem {base:#x}/{order} {rights:#x}"
    return f"{('special', 'mem', 'io', 'obj')[kind]} {base >> 12}/{order} {rights:#x}"


def map_mem(k: Kernel, src: AddressSpace, dst: AddressSpace, fpage: int, hot: int,
            window_raw: int, grant: bool) -> int | None:
    """Map (or grant) a memory or I/O fpage from `src` into `dst` through the window.
    Returns the fpage that landed (0: nothing was mapped), or None if the map failed."""
    if k.check:
        for space in (src, dst):  # for the next incremental check
            if space.task is not None:
                k.touched_tasks.add(space.task)
    kind = src.kind
    order = (fpage >> 6) & 0x3F
    if kind == 1 and order == 12 and not grant and window_raw & 0x30:
        # One 4 KiB page (a pager's reply, most maps): the rule below, unrolled.
        base = fpage & ~0xFFF & _WORD
        rorder = (window_raw >> 6) & 0x3F
        rbase = (window_raw & ~0xFFF & _WORD) & ~((1 << rorder) - 1)
        if base >= _USER_END or rorder < 12 or rbase + (1 << rorder) > _USER_END:
            return None
        return _map_page(src, dst, base, rbase + ((hot % (1 << rorder)) & ~0xFFF), fpage & 0xF)
    _, base, order, frights = fpage_parts(fpage)
    shift = 0 if kind == 1 else 12
    if kind == 1 and order < 12:
        return 0  # memory orders < 12 map nothing
    sreg = _region(base, order, src.bits, src.min_order, shift)
    wreg = _window(window_raw, dst.bits, dst.min_order, shift)
    if sreg is None or wreg is None:
        return None
    s, t, o = landing(sreg, wreg, hot)
    if o == 12 and kind == 1 and not grant:
        return _map_page(src, dst, s, t, frights)
    size = 1 << o
    plan: list[tuple[Mapping, int, int, int, int]] = []
    for m in src.overlapping(s, o):
        if m.base <= s and m.base + (1 << m.order) >= s + size:
            start, mo = s, o
        else:
            start, mo = m.base, m.order
        rights = m.rights & frights
        if not rights:
            continue
        tv, phys = t + (start - s), m.phys + (start - m.base)
        if kind == 1 and mo not in _PAGE_ORDERS:
            # Entries of the sizes x86-64 has (4 KiB, 2 MiB, 1 GiB): a 16 KiB fpage is
            # four 4 KiB mappings, each revocable alone, as in Fiasco's page tables.
            h = next(o for o in _PAGE_ORDERS if o <= mo)
            step = 1 << h
            plan.extend((m, tv + i, h, phys + i, rights) for i in range(0, 1 << mo, step))
        else:
            plan.append((m, tv, mo, phys, rights))
    if not plan:
        return 0
    if not grant and any(m.depth >= MAX_DEPTH for m, *_ in plan):
        return None
    if not dst.fits([(tv, mo) for _, tv, mo, _, _ in plan]):
        return None
    for m, tv, mo, phys, rights in plan:
        if not src.holds(m):
            continue  # an earlier page of this item replaced it: skipped, as unmapped
        existing = dst.overlapping(tv, mo)
        if existing:
            e = existing[0]
            if (len(existing) == 1 and e.parent is m and e.phys == phys and e.base == tv
                    and e.order == mo and not grant):
                e.rights |= rights  # upgrade a mapping derived from the same source
                continue
            mine = {m, *ancestors(m)}
            if any(e in mine for e in existing):
                continue  # would unmap its own source
            for e in existing:
                remove_subtree(e)
        if grant and m.base == s + (tv - t) and m.order == mo:
            src.remove(m)  # grant moves the node; its children stay attached
            m.space = dst
            m.base = tv
            if m.rights & ~rights:
                downgrade_subtree(m, m.rights & ~rights)
            dst.insert(m)
        else:
            # A grant of a part of a larger entry is demoted to a map, as in Fiasco
            # ("can't grant page from superpage"): the sender keeps its entry.
            add_child(m, dst, tv, mo, phys, rights)
    return (t << 12 if kind != 1 else t) | o << 6 | kind << 4 | frights


def _map_page(src: AddressSpace, dst: AddressSpace, s: int, t: int, frights: int) -> int | None:
    """`map_mem` for one 4 KiB page, the common case (a pager's reply), without the plan:
    the same rules, step by step."""
    m = src.lookup(s)
    if m is None or not m.rights & frights:
        return 0
    rights = m.rights & frights
    phys = m.phys + s - m.base
    if m.depth >= MAX_DEPTH:
        return None
    landed = t | 12 << 6 | MEMORY << 4 | frights
    e = dst.lookup(t)
    if e is None:
        if not dst.fits_page(t):
            return None
    elif e.parent is m and e.phys == phys and e.order == 12:
        e.rights |= rights  # upgrade a mapping derived from the same source
        return landed
    elif e is m or e in set(ancestors(m)):
        return landed  # would unmap its own source
    else:
        if not dst.fits([(t, 12)]):
            return None
        remove_subtree(e)
    add_child(m, dst, t, 12, phys, rights)
    return landed


def map_caps(k: Kernel, src: Task, dst: Task, fpage: int, hot: int, window_raw: int,
             grant: bool) -> int | None:
    """Map (or grant) capabilities: the object-space version of `map_mem`."""
    if k.check:
        k.touched_tasks.add(src)
        k.touched_tasks.add(dst)
    _, base, order, frights = fpage_parts(fpage)
    sreg = _region(base, order, OBJ_SPACE_BITS, 0, 12)
    wreg = _window(window_raw, OBJ_SPACE_BITS, 0, 12)
    if sreg is None or wreg is None:
        return None
    s, t, o = landing(sreg, wreg, hot)
    scaps, dcaps = src.caps, dst.caps
    plan: list[tuple[Capability, int, int]] = []
    for sel in range(s, min(s + (1 << o), len(scaps))):
        cap = scaps[sel]
        tsel = t + sel - s
        if cap is None or tsel == 0 or not cap.obj.alive:
            continue
        rights = cap.rights & frights
        if rights:
            plan.append((cap, tsel, rights))
    if not plan:
        return 0
    if not grant and any(sum(1 for _ in ancestors(c)) >= MAX_DEPTH for c, _, _ in plan):
        return None
    for cap, tsel, rights in plan:
        if tsel >= len(dcaps):
            dcaps.extend([None] * (tsel + 1 - len(dcaps)))
        old = dcaps[tsel]
        if old is not None:
            if old.parent is cap and old.obj is cap.obj and not grant:
                old.rights |= rights
                continue
            if old is cap or old in set(ancestors(cap)):
                continue
            revoke_cap(old, _CAP_R, True)
        if grant:
            scaps[cap.sel] = None
            cap.task, cap.sel = dst, tsel
            if cap.rights & ~rights:
                downgrade_subtree(cap, cap.rights & ~rights)
            dcaps[tsel] = cap
        else:
            child = Capability(cap.obj, rights, dst, tsel, cap)
            cap.adopt(child)
            dcaps[tsel] = child
        cap.obj.cap_refs.append((dst, tsel))
    return (t << 12) | o << 6 | OBJECT << 4 | frights


def revoke_cap(cap: Capability, rights: int, self_too: bool) -> int:
    """Revoke `rights` from every capability derived from `cap` (and from `cap` itself
    with `self_too`): R deletes them, other bits downgrade them. Returns how many went."""
    if not rights:
        return 0
    if not rights & _CAP_R:
        if self_too:
            downgrade_subtree(cap, rights)
        else:
            for c in cap.children:
                downgrade_subtree(c, rights)
        return 0
    doomed = [cap] if self_too else list(cap.children)
    n = 0
    for top in doomed:
        parent = top.parent
        if parent is not None:
            parent.disown(top)
        stack = [top]
        while stack:
            c = stack.pop()
            caps = c.task.caps
            if c.sel < len(caps) and caps[c.sel] is c:
                caps[c.sel] = None
            stack.extend(c.children)
            c._kids = None
            c.parent = None
            n += 1
    return n


def unmap(k: Kernel, th: Thread, fpage: int, self_too: bool) -> int:
    """`t.unmap`: revoke the fpage's rights from everything derived from the caller's
    mappings (capabilities) in that region, in every task; from the caller's own too
    with `self_too`. Returns how many mappings were removed; an invalid fpage unmaps
    nothing."""
    k.check_all = True  # revocation reaches into any task: the next check is a full one
    kind, base, order, rights = fpage_parts(fpage)
    task = th.task
    if kind == SPECIAL:
        if order != 63:
            return 0
        return (_unmap_space(task.space, 0, task.space.bits, rights, self_too)
                + _unmap_space(task.io, 0, task.io.bits, rights, self_too)
                + _unmap_caps(task, 0, OBJ_SPACE_BITS, rights, self_too))
    if kind == OBJECT:
        reg = _region(base, order, OBJ_SPACE_BITS, 0, 12)
        return 0 if reg is None else _unmap_caps(task, *reg, rights, self_too)
    space = task.space if kind == MEMORY else task.io
    reg = _region(base, order, space.bits, space.min_order, 0 if kind == MEMORY else 12)
    return 0 if reg is None else _unmap_space(space, *reg, rights, self_too)


def _unmap_space(space: AddressSpace, base: int, order: int, rights: int, self_too: bool) -> int:
    n = 0
    for m in space.overlapping(base, order):
        if space.holds(m):  # not removed by an earlier one in this loop
            n += revoke(m, base, order, rights, self_too)
    return n


def _unmap_caps(task: Task, base: int, order: int, rights: int, self_too: bool) -> int:
    caps = task.caps
    n = 0
    for sel in range(base, min(base + (1 << order), len(caps))):
        cap = caps[sel]
        if cap is not None and sel:
            n += revoke_cap(cap, rights, self_too)
    return n


def release_task(task: Task) -> None:
    """A task is deleted: everything it mapped to others is unmapped, and its own
    mappings and capabilities leave the database."""
    task.kernel.check_all = True  # revocation reaches into any task: the next check is a full one
    for space in (task.space, task._io):
        if space is None:
            continue
        for m in space.mappings():
            if space.holds(m):
                remove_subtree(m)
    for cap in task.caps:
        if cap is not None:
            revoke_cap(cap, 0xF, True)


def sigma0_roots(k: Kernel, task: Task) -> None:
    """Give `task` (sigma0) all physical memory 1:1 and every I/O port: the roots of the
    mapping database, in the largest aligned blocks."""
    addr, size = 0, k.memory
    while addr < size:
        order = (addr & -addr).bit_length() - 1 if addr else 63
        while addr + (1 << order) > size:
            order -= 1
        task.space.insert(Mapping(task.space, addr, order, addr, R | 2 | 1, None))
        addr += 1 << order
    task.io.insert(Mapping(task.io, 0, task.io.bits, 0, R | 2, None))
