"""User memory access and page faults.

`t.load` / `t.store` translate through the task's address space; when every page is
mapped with the needed rights they complete without a kernel entry. Otherwise the
access is a page fault: the kernel calls the thread's pager on its behalf (tag label
-2, MR0 = fault address | write bit 1 | present bit 0, MR1 = the code location of the
access, a receive window of the whole space, never/never timeouts), saving and
restoring the thread's MR0/MR1/BDR/BR0/BR1 around it, and retries the access after
the reply. No pager, a failed fault IPC or a refusing reply (negative label) kills the
thread with the reason in the run result.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .abi import NEVER, Label
from .boot import boot_servers
from .fastpath import call_to
from .ipc import OP_CALL, ipc
from .lifecycle import kill
from .memory import USER_SPACE_BITS, W
from .pagershortcut import serve_fault
from .states import DEAD

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Thread

R = 4
PAGE = 4096
PF_TAG = Label.PAGE_FAULT << 16 | 2
PF_WRITE = 2
PF_PRESENT = 1  # a protection fault: the page is mapped without the needed right
_ALL = 63 << 6  # Fpage.all() without rights
_SPACE_END = 1 << USER_SPACE_BITS
_KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))
_OWN_DIRS = (_KERNEL_DIR + os.sep, os.path.join(os.path.dirname(_KERNEL_DIR), "user") + os.sep)


def translate(th: Thread, addr: int, n: int, need: int) -> tuple[list[tuple[int, int]], int, bool]:
    """The physical pieces of [addr, addr + n) and, if a page is missing or lacks
    `need`, the address of the first such page and whether it was present."""
    space = th.task.space
    pieces: list[tuple[int, int]] = []
    end = addr + n
    a = addr
    while a < end:
        m = space.lookup(a)
        if m is None or not m.rights & need:
            return pieces, a, m is not None
        stop = min(end, m.base + (1 << m.order))
        pieces.append((m.phys + a - m.base, stop - a))
        a = stop
    return pieces, -1, False


async def access(k: Kernel, th: Thread, addr: int, n: int, write: bool,
                 missing: int = -1, present: bool = False) -> list[tuple[int, int]]:
    """Translate an access, faulting in what is missing; the physical pieces. `missing`
    (with `present`): the caller's translation already found that page missing."""
    if addr < 0 or n < 0 or addr + n > _SPACE_END:
        raise kill(k, th, f"access to {addr:#x}+{n} outside the address space at "
                           f"{k.code_location(_caller_ip(k))}")
    need = W if write else R
    if missing < 0:
        pieces, missing, present = translate(th, addr, n, need)
    while missing >= 0:
        ip = _caller_ip(k)  # (also registers the file: later code locations keep their ids)
        if th.pager_default and not present and th.user.fast:
            phys = serve_fault(k, th, missing)  # (served as the IPCs would serve it)
            if phys >= 0:
                page = missing & -PAGE
                if missing == addr and addr + n <= page + PAGE:
                    return [(phys + addr - page, n)]  # what translating again would give
                pieces, missing, present = translate(th, addr, n, need)
                continue
        await page_fault(k, th, missing, write, present, ip)
        pieces, missing, present = translate(th, addr, n, need)
    return pieces


def _caller_ip(k: Kernel) -> int:
    """The code location of the user code that made the access: the first frame outside
    l4sim's own files, above the caller of `access` (one of them: `load`, `store`, ...)."""
    f = sys._getframe(2)
    while f.f_back is not None and f.f_code.co_filename.startswith(_OWN_DIRS):
        f = f.f_back
    return k.code_ip(f.f_code.co_filename, f.f_lineno)


async def page_fault(k: Kernel, th: Thread, addr: int, write: bool, present: bool,
                     ip: int) -> None:
    """The page-fault IPC to `th`'s pager; returns when the pager has replied."""
    if th.pager_default:
        pager = k._anon_pager  # (made on the first fault)
        if pager is None:
            pager = k.default_pager()
    else:
        pager = th.pager
    if pager is None:
        raise kill(k, th, f"{_what(k, addr, write, ip)}, and no pager")
    if pager.state & DEAD or not pager.alive:
        raise kill(k, th, f"{_what(k, addr, write, ip)}: its pager {pager.name} has ended "
                     f"({pager.exit_reason or 'returned'}), so nobody resolves it")
    utcb = th.utcb
    mr = th.mr
    br = utcb.br
    saved = mr[0], mr[1], utcb.bdr, br[0], br[1]
    mr[0] = (addr & ~7) | (PF_WRITE if write else 0) | (PF_PRESENT if present else 0)
    mr[1] = ip
    br[0] = 8        # a map buffer ...
    br[1] = _ALL     # ... for the whole address space
    utcb.bdr = 0
    if k.trace:
        k.record(th, "page fault", f"{'write' if write else 'read'} at {addr:#x} -> {pager.name}")
    th.cpu.now += k.costs.page_fault
    # The default pager serves address spaces, not threads: it sees the task's id, so
    # that two threads of one task faulting on one page at once get one frame.
    label = th.task.id if th.pager_default else th.tid
    r = await call_to(k, th, pager, label, PF_TAG) if th.user.fast else None
    if r is None:  # not the fast path: the general one
        r = await ipc(k, th, OP_CALL, 0, PF_TAG, NEVER, NEVER, dest=pager, dest_label=label)
    mr[0], mr[1], utcb.bdr, br[0], br[1] = saved
    if r.error:
        raise kill(k, th, f"{_what(k, addr, write, ip)}: the page-fault IPC to {pager.name} "
                           f"failed with {r.error.name}")
    if r.tag.label < 0:
        raise kill(k, th, f"{_what(k, addr, write, ip)}: refused by {pager.name}"
                           f"{_why_refused(k, pager, r.words)}")


def _what(k: Kernel, addr: int, write: bool, ip: int) -> str:
    """The fault, as a kill reason begins (made only when one is)."""
    return f"{'write' if write else 'read'} page fault at {addr:#x} ({k.code_location(ip)})"


def _why_refused(k: Kernel, pager: Thread, words: tuple[int, ...]) -> str:
    """sigma0 says why it refuses in MR0 of its reply."""
    why = boot_servers().refusal_reason(k, pager, words)
    return f" ({why})" if why else ""


def reachable_by_others(th: Thread, addr: int, n: int) -> bool:
    """Can a thread other than `th` reach [addr, addr + n)? Another live thread of its
    task can; so can every task the memory is mapped from or into (a pager, a sharer)."""
    task = th.task
    if any(o is not th and not o.state & DEAD for o in task.threads):
        return True
    space = task.space
    a, end = addr, addr + n
    while a < end:
        m = space.lookup(a)
        if m is None:
            return False
        if m.children or (m.parent is not None and m.parent.parent is not None):
            return True
        a = m.base + (1 << m.order)
    return False


async def explored_access(k: Kernel, th: Thread, addr: int, n: int,
                          write: bool) -> list[tuple[int, int]]:
    """A load or store under a chooser that preempts: a choice point first when another
    thread can reach the memory, then the access, which the chooser is told of."""
    pieces, missing, _ = translate(th, addr, n, W if write else R)
    if missing >= 0:
        pieces = await access(k, th, addr, n, write)
    if reachable_by_others(th, addr, n):
        await th.cpu.shared_access_point(th)
        pieces, missing, _ = translate(th, addr, n, W if write else R)  # may have changed
        if missing >= 0:
            pieces = await access(k, th, addr, n, write)
        k.chooser.access(th, pieces, write)
    return pieces
