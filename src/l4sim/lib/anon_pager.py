"""The anonymous-memory pager: every thread created without an explicit
pager has it. A fault on an unmapped page is served with a zero-filled page that the
pager obtained from sigma0 (into a pool in its own address space) and maps on, read and
write; the same page again for a later fault there. A protection fault (a write to a
page someone else mapped read-only: MR0 bit 0 set) is refused, so the thread is killed.
"""

from __future__ import annotations

from ..kernel.abi import Fpage, Label, MapItem, Rights
from ..user.context import UserContext
from .sigma0 import SIGMA0_ANY

POOL_BASE = 1 << 46  # where the pager keeps its pages, in its own space
PAGE = 4096
ZERO_PAGE = bytes(PAGE)
REFUSED = -12
REQUEST = (SIGMA0_ANY, 12)  # what the pager asks sigma0 for: any one page


class AnonPagerBooks:
    """The pager's bookkeeping, in an object of its own so that the kernel's page-fault
    shortcut (`kernel/pagershortcut.py`), which serves a fault as this body would
    without running it, keeps it exactly as the body does."""

    __slots__ = ("served", "next_pool")

    def __init__(self) -> None:
        self.served: dict[tuple[int, int], int] = {}  # (client task's id, page) -> pool address
        self.next_pool = POOL_BASE


async def anon_pager_body(t: UserContext, sigma0: int, books: AnonPagerBooks | None = None) -> None:
    if books is None:
        books = AnonPagerBooks()
    served = books.served
    r = await t.wait()
    while True:
        if r.error:
            r = await t.wait()
            continue
        reply_label, items = REFUSED, []
        words = r.words
        if r.tag.label == Label.PAGE_FAULT and len(words) == 2 and not words[0] & 1:
            page = words[0] & ~(PAGE - 1)
            key = (r.label, page)
            pool = served.get(key)
            if pool is None:
                got = await t.call(sigma0, words=REQUEST, label=Label.SIGMA0,
                                   window=Fpage.mem(books.next_pool, 12))
                if not got.error and got.tag.label >= 0:
                    pool = books.next_pool
                    books.next_pool = pool + PAGE
                    await t.store(pool, ZERO_PAGE)
                    served[key] = pool
            if pool is not None:
                reply_label = 0
                items = [MapItem(Fpage.mem(pool, 12, Rights.RWX), send_base=page)]
        r = await t.reply_and_wait(label=reply_label, items=items)
