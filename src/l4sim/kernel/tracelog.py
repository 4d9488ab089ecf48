"""The bounded event record of a traced kernel (`Kernel(trace=True, trace_limit=N)`).

A ring of the last events: it keeps between N and 2N of them (trimming N at a time, so
that an append stays O(1) amortised) and counts what it dropped. A traced program that
loops forever therefore runs in flat memory; the exporters read the newest events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kernel import Event

DEFAULT_TRACE_LIMIT = 200_000


class EventLog(list["Event"]):
    """`k.events` when tracing: a list holding at least the last `limit` events (at most
    2 * `limit`); `dropped` counts the older ones it let go."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        if not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"trace_limit must be a positive int of events, got {limit!r}")
        self.limit = limit
        self.dropped = 0

    def append(self, ev: Event) -> None:
        super().append(ev)
        if len(self) >= 2 * self.limit:
            cut = len(self) - self.limit
            del self[:cut]
            self.dropped += cut

    def __reduce__(self) -> Any:  # pickles (and copies) as a plain list
        return (list, (list(self),))


def message_text(tag: int, label: int, words: object) -> str:
    """What a "transfer" event says about the message after the receiver and the counts:
    " | label L | words w0 w1 ... | as X": the tag's label (signed), up to 8 words (hex
    from 1024 on) and the label the receiver sees it with (gate label or sender tid)."""
    tl = tag >> 16
    if tl >= 1 << 47:
        tl -= 1 << 48
    ws = list(words) if words is not None else []  # type: ignore[call-overload]
    shown = " ".join(str(w) if w < 1024 else hex(w) for w in ws[:8])
    if len(ws) > 8:
        shown += " …"
    return f" | label {tl} | words {shown or '-'} | as {label:#x}"
