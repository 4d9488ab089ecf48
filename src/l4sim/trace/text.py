"""The plain text log: one line per event, `time cpu thread event detail`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..kernel.kernel import Event, Kernel


def format_event(ev: Event) -> str:
    """One event as a log line: time (cycles), CPU, thread, event, detail."""
    return f"{ev.time:>12}  cpu{ev.cpu}  {ev.thread:<12} {ev.event:<10} {ev.detail}".rstrip()


def to_text(k: Kernel) -> str:
    """The whole record of `k`, a line per event (newline-terminated when not empty)."""
    return "".join(format_event(ev) + "\n" for ev in k.events)


def write_text(k: Kernel, path: str | Path) -> Path:
    """Write `to_text(k)` to `path`."""
    path = Path(path)
    path.write_text(to_text(k))
    return path
