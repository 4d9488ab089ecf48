"""A page fault served by the default servers without running them.

A fault of a thread whose pager is the default one is four IPCs: the fault to the
anonymous-memory pager, its call to sigma0 for a page (into a window in its pool),
sigma0's reply mapping the page, and -- after the pager's zero-fill of that pool page --
its reply mapping the page on to the faulting address. When nothing can tell the steps
in between apart, `serve_fault` applies the four IPCs' effects at once: the same cycles,
kernel entries, switches and timeslices, the same registers and state words of the three
threads, the same mappings, the same records of sigma0 and books of the pager, and the
same zero-filled frame.

Nothing can tell them apart when the fast path would take all four IPCs and nothing else
would run or happen in between: one CPU, no check, trace, step limit or single step
(`Cpu.alone`: other CPUs' steps would come in between; `Kernel.fastpath`,
`UserContext.fast`, `Kernel.stepping`); both servers are the boot
servers' unmodified bodies, waiting openly, parked in the fast path's reply (whose resume
does nothing but return the message); no thread above the faulting one ready, no
priority to lend, no timeslice ending and no event due before the fault is served; a
fresh page for the pager, which sigma0 has a frame for and which every map of the four
takes. Anything else takes the IPCs. `tests/test_pagershortcut.py` runs the same programs
both ways and compares.
"""

from __future__ import annotations

from types import CodeType
from typing import TYPE_CHECKING, Any, Protocol

from .abi import IpcError
from .fastpath import _reply_typed, reply_and_wait
from .memory import MAX_DEPTH, USER_SPACE_BITS, add_child
from .states import READY, RECEIVE_WAIT

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Thread

OK = IpcError.OK
PAGE = 4096
_RWX = 7
_MEM_PAGE = 12 << 6 | 1 << 4 | _RWX  # the low bits of an RWX memory fpage of one page
_ITEM_TAG = 1 << 6                   # a reply of one map item and no words
_SPACE_END = 1 << USER_SPACE_BITS
_REPLY_AND_WAIT: CodeType = reply_and_wait.__code__
_REPLY_TYPED: CodeType = _reply_typed.__code__


class PagerBooks(Protocol):
    """The anonymous-memory pager's bookkeeping (`lib/anon_pager.py`)."""

    served: dict[tuple[int, int], int]
    next_pool: int


class FrameBooks(Protocol):
    """sigma0's record of which client owns which frames (`lib/sigma0.py`)."""

    def find_free(self, order: int) -> int | None: ...

    def take(self, start: int, end: int, client: int) -> None: ...


class Parked:
    """Where a server was last found parked in the fast path's reply: its body's coroutine,
    the `reply_and_wait` that awaits, and what that awaits (None, or `_reply_typed`'s
    generator). While the same objects stand there, their codes need no second look."""

    __slots__ = ("coro", "op", "inner")

    def __init__(self) -> None:
        self.coro: Any = _NOTHING
        self.op: Any = None
        self.inner: Any = None


_NOTHING = object()  # (no coroutine is this: an empty record matches no thread)


class DefaultServers:
    """The boot servers as the shortcut needs them: the threads, the code of their
    bodies, their bookkeeping, and what the pager asks sigma0 for and fills pages with."""

    __slots__ = ("pager", "pager_code", "books", "sigma0_sel", "request", "fill",
                 "sigma0", "sigma0_code", "frames", "pager_parked", "sigma0_parked")

    def __init__(self, pager: Thread, pager_code: CodeType, books: PagerBooks, sigma0_sel: int,
                 request: tuple[int, int], fill: bytes, sigma0: Thread, sigma0_code: CodeType,
                 frames: FrameBooks) -> None:
        self.pager = pager
        self.pager_code = pager_code
        self.books = books
        self.sigma0_sel = sigma0_sel
        self.request = request          # the sigma0 request's words: (op, order)
        self.fill = fill                # what a fresh pool page is filled with
        self.sigma0 = sigma0
        self.sigma0_code = sigma0_code
        self.frames = frames
        self.pager_parked = Parked()
        self.sigma0_parked = Parked()


def _waiting(th: Thread, body: CodeType, seen: Parked) -> bool:
    """Whether `th` runs `body`, waits openly with nothing that the fast path's handshake
    would also end, and waits in the fast path's reply (`reply_and_wait`'s own switch or
    `_reply_typed`'s), whose resume only returns the message it got."""
    q = th.sendq
    if not (th.state == RECEIVE_WAIT and th.partner is None and th.timer is None
            and th.reply_caller is None and (q is None or not q._len)  # (no Python call)
            and th.in_strings is None and th.pf_target is None and th.prio == th.priority
            and th.user.fast):
        return False
    coro: Any = th.coro
    if coro is seen.coro:
        op = coro.cr_await
        if op is seen.op:
            inner = op.cr_await
            if inner is seen.inner:  # (each object's code was checked: not again)
                return inner is None or inner.gi_yieldfrom is None
    return _parked(coro, body, seen)


def _parked(coro: Any, body: CodeType, seen: Parked) -> bool:
    """Whether the coroutine `coro` of `body` is parked in the fast path's reply; if so,
    `seen` records the chain."""
    if coro is None or coro.cr_code is not body:
        return False
    op = coro.cr_await
    if op is None or getattr(op, "cr_code", None) is not _REPLY_AND_WAIT:
        return False
    inner = op.cr_await
    if not (inner is None or (getattr(inner, "gi_code", None) is _REPLY_TYPED
                              and inner.gi_yieldfrom is None)):
        return False
    seen.coro = coro
    seen.op = op
    seen.inner = inner
    return True


def serve_fault(k: Kernel, th: Thread, addr: int) -> int:
    """Serve a fault on the unmapped page at `addr` of `th` (the caller's translation
    found no mapping there), whose pager is the default one, as the four IPCs would, if
    nothing could tell the difference: the physical address of the page now mapped there;
    -1, with nothing done, otherwise."""
    ds = k.default_servers
    if ds is None or k.stepping:
        return -1  # (no pager yet: the first fault starts it)
    pager = ds.pager
    s0 = ds.sigma0
    cpu = th.cpu
    task = th.task
    if not (cpu.alone and pager.cpu is cpu and s0.cpu is cpu and th.timer is None
            and th.pf_target is None and th.in_strings is None and th.prio <= pager.prio <= s0.prio
            and not cpu.bitmap >> (th.prio + 1)
            and task is not pager.task and task is not s0.task and pager.task is not s0.task
            and _waiting(pager, ds.pager_code, ds.pager_parked)
            and _waiting(s0, ds.sigma0_code, ds.sigma0_parked)):
        return -1
    try:
        cap = pager.caps[ds.sigma0_sel]  # (a selector above 0, into a list that may shrink)
    except IndexError:
        return -1
    if cap is None or cap.obj is not s0 or not cap.rights & 4:
        return -1
    # The clock: the fault's entry and IPC, then switch, call, switch, reply, switch, reply,
    # switch (each to another address space). Each thread resumes with time left in its
    # slice and nothing due, as the fast path requires to return quietly; the client's
    # time left is fixed when it switches away.
    costs = k.costs
    ipc0, ipc1, ipc2 = cpu.ipc_costs[:3]  # an IPC of 0, 1, 2 words
    sent = cpu.now + costs.page_fault + ipc2
    served = sent + ipc2 + ipc1 + ipc0 + 4 * (costs.thread_switch + costs.space_switch)
    client_left = cpu.slice_end - sent
    if (client_left <= 0 or pager.slice_left <= ipc2 or s0.slice_left <= 0
            or served >= cpu.next_event):
        return -1
    # What the pager and sigma0 would do: a fresh page (a page served before is the
    # two-IPC case, left to the IPCs), a free frame, and maps that all succeed.
    books = ds.books
    page = addr & ~(PAGE - 1)
    key = (task.id, page)
    if key in books.served or ds.request[1] != 12:
        return -1
    pool = books.next_pool
    frames = ds.frames
    frame = frames.find_free(12)
    if frame is None or pool + PAGE > _SPACE_END:
        return -1
    pool_space, space = pager.task.space, task.space
    root = s0.task.space.lookup(frame)
    if (root is None or root.rights != _RWX or root.depth + 2 >= MAX_DEPTH
            or pool_space.lookup(pool) is not None or not pool_space.fits_page(pool)
            or not space.fits_page(page)):
        return -1
    # Commit. sigma0's reply maps the frame into the pager's window (as `_map_page` does
    # when nothing is in the way) and records the pager as its owner.
    phys = root.phys + frame - root.base
    add_child(add_child(root, pool_space, pool, 12, phys, _RWX), space, page, 12, phys, _RWX)
    frames.take(frame, frame + PAGE, pager.tid)
    k.phys.view[phys:phys + PAGE] = ds.fill  # the pager's zero-fill
    books.next_pool = pool + PAGE
    books.served[key] = pool
    # Registers: sigma0's reply (its word and item); the pager's reply (its item) over the
    # sigma0 reply it got (the item that landed in MR2); the pager's window. The client's
    # MRs and BRs are restored after a fault (its BRs made if it had none).
    window = pool | _MEM_PAGE
    smr = s0.mr
    smr[0] = frame
    smr[1] = frame | 8
    smr[2] = frame | _MEM_PAGE
    pmr = pager.mr
    pmr[0] = page | 8
    pmr[1] = window
    pmr[2] = window
    utcb = pager.utcb
    br = utcb._br  # (made when the pager set its window: no property call)
    if br is None:
        br = utcb.br
    br[0] = 8
    br[1] = window
    utcb.bdr &= 0x1F << 15
    utcb = th.utcb
    if utcb._br is None:
        utcb.br  # noqa: B018
    # The servers wait again as their replies leave them; the client runs on.
    pager.wake_error = s0.wake_error = OK
    pager.in_words = s0.in_words = None
    pager.in_tag = pager.in_label = s0.in_tag = s0.in_label = 0
    pager.slice_left -= ipc2 + ipc0
    s0.slice_left -= ipc1
    th.in_words = None
    th.in_tag = _ITEM_TAG
    th.in_label = pager.tid
    th.wake_error = OK
    th.partner = None
    th.state = READY
    th.slice_left = client_left
    cpu.entries += 4
    cpu.now = served
    cpu.slice_end = served + client_left
    return phys
