"""Sender queues: ordered by priority (highest first), FIFO within one priority.

One OrderedDict per priority (a linked list with a hash index: O(1) append, O(1)
removal of any sender, O(1) head even after many removals from the front, which a
plain dict does not give) and a sorted list of the priorities present, so enqueue,
dequeue and removal (cancel, timeout, deletion) cost O(log P) with P <= 256
priorities, never O(queue length).
"""

from __future__ import annotations

from bisect import insort
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar


class Sender(Protocol):
    """The role a thread and an IRQ share as senders (Fiasco's `Sender`): where it sits
    in a queue, whether it lends its receiver its priority, and whether its message is
    for a given receiver."""

    queued_prio: int
    lends_priority: bool

    def sends_to(self, rcv: Any) -> bool: ...


S = TypeVar("S", bound=Sender)


class SenderQueue(Generic[S]):
    __slots__ = ("_by_prio", "_prios", "_len")

    def __init__(self) -> None:
        self._by_prio: dict[int, OrderedDict[S, None]] = {}
        self._prios: list[int] = []  # ascending; the head is at the end
        self._len = 0

    def enqueue(self, sender: S, prio: int) -> None:
        """Append `sender` behind all senders of priority >= `prio`."""
        level = self._by_prio.get(prio)
        if level is None:
            level = self._by_prio[prio] = OrderedDict()
            insort(self._prios, prio)
        level[sender] = None
        sender.queued_prio = prio
        self._len += 1

    def remove(self, sender: S) -> None:
        """Take `sender` out of the queue; it must be in it."""
        prio = sender.queued_prio
        level = self._by_prio[prio]
        del level[sender]
        self._len -= 1
        if not level:
            del self._by_prio[prio]
            self._prios.remove(prio)

    def first(self) -> S | None:
        """The head: the oldest sender of the highest priority, or None."""
        if not self._len:
            return None
        return next(iter(self._by_prio[self._prios[-1]]))

    def top_prio(self) -> int:
        """The highest queued priority, -1 when empty."""
        return self._prios[-1] if self._prios else -1

    def top_thread_prio(self) -> int:
        """The highest priority of a queued thread (interrupts lend no priority); -1."""
        for prio in reversed(self._prios):
            for s in self._by_prio[prio]:
                if s.lends_priority:
                    return prio
        return -1

    def __contains__(self, sender: object) -> bool:
        prio = getattr(sender, "queued_prio", None)
        level = self._by_prio.get(prio) if prio is not None else None
        return level is not None and sender in level

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[S]:
        """Senders in delivery order."""
        for prio in reversed(self._prios):
            yield from list(self._by_prio[prio])
