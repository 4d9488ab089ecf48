"""sigma0, the root pager, as a user-level server.

At boot the kernel gives sigma0's task all physical memory 1:1 (the roots of the mapping
database). sigma0 hands each region out once, to the first client that asks, and maps
it 1:1 (the send base is the physical address):

- a page fault (label -2) maps the faulting page;
- the sigma0 protocol (label -6, l4sim's own words): MR0 = SIGMA0_FPAGE, MR1 = a
  memory fpage: map exactly that region; MR0 = SIGMA0_ANY, MR1 = an order: map any free
  naturally aligned region of that size; the reply's MR0 is its physical address.

A request for memory that does not exist or that another client owns is refused:
the reply has label -12 (ENOMEM), maps nothing, and its MR0 says why (`REASONS`).
Clients are told apart by the label they arrive with (their thread id).
"""

from __future__ import annotations

from bisect import bisect_right

from ..kernel.abi import Fpage, Label, MapItem, Rights
from ..user.context import UserContext

SIGMA0_FPAGE = 1
SIGMA0_ANY = 2
REFUSED = -12
PAGE = 4096

# MR0 of a refusal: why.
BEYOND_MEMORY, OWNED, MALFORMED, NO_FREE_REGION = 1, 2, 3, 4
REASONS = {
    BEYOND_MEMORY: "the region lies beyond physical memory",
    OWNED: "the region was already given to another client",
    MALFORMED: "the request is not a sigma0 request (label -6, MR0 op, MR1 fpage or order)",
    NO_FREE_REGION: "no free region of that size is left",
}


class Ownership:
    """Which client owns which physical region: disjoint intervals, sorted."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.starts: list[int] = []
        self.regions: list[tuple[int, int, int]] = []  # (start, end, owner)
        # [owned_above, size) is all owned: find_free's search starts below it (regions
        # handed out from the top down then cost one probe, not two)
        self.owned_above = size

    def owner_of(self, start: int, end: int) -> list[int]:
        i = bisect_right(self.starts, start) - 1
        owners = []
        for s, e, who in self.regions[max(i, 0):]:
            if s >= end:
                break
            if e > start:
                owners.append(who)
        return owners

    def may_take(self, start: int, end: int, client: int) -> bool:
        """True if [start, end) exists and no other client owns any of it."""
        if start < 0 or end > self.size:
            return False
        return all(who == client for who in self.owner_of(start, end))

    def take(self, start: int, end: int, client: int) -> None:
        starts, regions = self.starts, self.regions
        i = bisect_right(starts, start)
        right = left = False
        if i < len(regions):
            s, e, who = regions[i]
            if s < end:
                return  # already this client's (may_take checked it)
            right = s == end and who == client
        if i:
            ps, pe, pwho = regions[i - 1]
            if pe > start:
                return  # (the same)
            left = pe == start and pwho == client
        if start < self.owned_above <= end:
            self.owned_above = start
        # Merge with a neighbour of the same client, so that the list stays short when
        # regions are handed out one after another (find_free then stays fast).
        if left and right:
            regions[i - 1] = (ps, e, client)
            del starts[i], regions[i]
        elif right:
            regions[i] = (start, e, client)
            starts[i] = start
        elif left:
            regions[i - 1] = (ps, end, client)
        else:
            starts.insert(i, start)
            regions.insert(i, (start, end, client))

    def find_free(self, order: int) -> int | None:
        """The highest free naturally aligned region of 2^order bytes."""
        size = 1 << order
        starts, regions = self.starts, self.regions
        cand = (self.owned_above - size) & -size
        while cand >= 0:
            i = bisect_right(starts, cand + size - 1) - 1
            if i < 0:
                return cand
            start, end, _ = regions[i]
            if end <= cand:
                return cand
            cand = (start - size) & -size if start >= size else -1
        return None


def handle(own: Ownership, label: int, tag_label: int,
           words: tuple[int, ...]) -> tuple[int, list[int], list[MapItem]]:
    """One request: (reply label, reply words, reply items)."""
    if tag_label == Label.PAGE_FAULT and len(words) == 2:
        page = words[0] & ~(PAGE - 1)
        if own.may_take(page, page + PAGE, label):
            own.take(page, page + PAGE, label)
            return 0, [], [MapItem(Fpage.mem(page, 12, Rights.RWX), send_base=page)]
        return REFUSED, [_why(own, page, page + PAGE)], []
    if tag_label == Label.SIGMA0 and len(words) == 2:
        op, arg = words
        if op == SIGMA0_FPAGE:
            fp = Fpage(arg)
            if fp.type == Fpage.MEMORY and 12 <= fp.order < 48:
                start = fp.address
                end = start + (1 << fp.order)
                if own.may_take(start, end, label):
                    own.take(start, end, label)
                    return 0, [start], [MapItem(Fpage.mem(start, fp.order, Rights.RWX),
                                                send_base=start)]
                return REFUSED, [_why(own, start, end)], []
        elif op == SIGMA0_ANY and 12 <= arg < 48:
            free = own.find_free(arg)
            if free is not None:
                own.take(free, free + (1 << arg), label)
                return 0, [free], [MapItem(Fpage.mem(free, arg, Rights.RWX), send_base=free)]
            return REFUSED, [NO_FREE_REGION], []
    return REFUSED, [MALFORMED], []


def _why(own: Ownership, start: int, end: int) -> int:
    return BEYOND_MEMORY if start < 0 or end > own.size else OWNED


async def sigma0_body(t: UserContext, memory: int, own: Ownership | None = None) -> None:
    """sigma0's loop; `own` (made here if not given) is where it records its clients."""
    if own is None:
        own = Ownership(memory)
    r = await t.wait()
    while True:
        if r.error:  # a failed reply (the caller went away) or a failed receive
            r = await t.wait()
            continue
        label, words, items = handle(own, r.label, r.tag.label, r.words)
        r = await t.reply_and_wait(words=words, label=label, items=items)
