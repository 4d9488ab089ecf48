"""Per-CPU scheduling state: the clock, the current thread and the ready queues.

Fixed priorities 0-255, round robin within one priority. The ready queues are one
deque per priority and a bitmap of the non-empty ones, so the highest ready priority
is one `int.bit_length()`. The current thread is never in a ready queue.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .objects import Thread

PRIORITIES = 256
# "No event": later than any simulated time (an int, so the hot comparisons stay int-int).
INFINITY = 1 << 62


class Cpu:
    __slots__ = ("index", "now", "current", "queues", "bitmap", "slice_end", "timers",
                 "next_event", "entries", "ipc_costs", "last")

    def __init__(self, index: int) -> None:
        self.index = index
        self.now = 0                      # this CPU's clock, in simulated cycles
        self.current: Thread | None = None
        self.last: Thread | None = None   # the thread that ran last when a run() ended
        self.queues: list[deque[Thread]] = [deque() for _ in range(PRIORITIES)]
        self.bitmap = 0                   # bit p set <=> queues[p] is not empty
        self.slice_end = 0                # when the current thread's timeslice ends
        # Timer heap of [time, seq, thread, callback] entries (a cancelled one has neither),
        # and the time of its earliest live entry.
        self.timers: list[list[Any]] = []
        self.next_event = INFINITY
        self.entries = 0                  # kernel entries on this CPU
        self.ipc_costs: list[int] = []    # cycles of one IPC by word count (the kernel's profile)

    def top_prio(self) -> int:
        """Highest priority with a ready thread; -1 if none."""
        return self.bitmap.bit_length() - 1

    def enqueue_back(self, th: Thread) -> None:
        p = th.prio
        self.queues[p].append(th)
        self.bitmap |= 1 << p
        th.rq_prio = p

    def enqueue_front(self, th: Thread) -> None:
        p = th.prio
        self.queues[p].appendleft(th)
        self.bitmap |= 1 << p
        th.rq_prio = p

    def dequeue(self, th: Thread) -> None:
        """Remove `th` from its ready queue (it must be in one)."""
        p = th.rq_prio
        q = self.queues[p]
        q.remove(th)
        if not q:
            self.bitmap &= ~(1 << p)
        th.rq_prio = -1

    def pop_highest(self) -> Thread | None:
        if not self.bitmap:
            return None
        p = self.bitmap.bit_length() - 1
        q = self.queues[p]
        th = q.popleft()
        if not q:
            self.bitmap &= ~(1 << p)
        th.rq_prio = -1
        return th

    def ready_threads(self) -> list[Thread]:
        out: list[Thread] = []
        for p in range(PRIORITIES - 1, -1, -1):
            out.extend(self.queues[p])
        return out
