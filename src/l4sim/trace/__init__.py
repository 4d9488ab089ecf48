"""Trace exporters: Chrome trace-event JSON, Mermaid sequence diagrams, a text log.

A kernel made with `trace=True` records every kernel event in `k.events` (an `Event`:
time in cycles, CPU, thread name, event, detail). The exporters read that record after
(or during) a run; nothing here runs while the kernel does, so tracing off costs nothing.

    k = Kernel(trace=True); build(k); k.run()
    write_chrome(k, "out.json")     # open in https://ui.perfetto.dev
    write_mermaid(k, "out.md")      # a ```mermaid block (raw diagram for other suffixes)
    print(to_text(k))
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ..kernel.kernel import Event

_TRANSFER = re.compile(
    r"^to (?P<rcv>.+?): (?P<n>\d+) words(?:, (?P<items>\d+) items)?"
    r"(?P<cut>, items (?:cut|failed: (?P<err>\w+)))?"
    r"(?: \| label (?P<label>-?\d+) \| words (?P<words>[^|]*?) \| as (?P<as>\S+))?$")


class Message(NamedTuple):
    """One message transfer, parsed from a "transfer" event.

    `at` is the position of that event in `k.events`; `kind` is "call" (the sender
    waits for an answer right after sending), "reply" (the answer to the receiver's
    outstanding call) or "send"."""

    at: int
    time: int
    sender: str
    receiver: str
    words: int
    cut: bool
    kind: str


def parse_transfer(detail: str) -> tuple[str, int, bool] | None:
    """The receiver's name, the number of words and whether the items failed (a cut or a
    failed map), from the detail of a "transfer" event ("to NAME: N words[, M items]" or
    "to NAME: N words, items failed: ERROR")."""
    m = _TRANSFER.match(detail)
    if m is None:
        return None
    return m.group("rcv"), int(m.group("n")), m.group("cut") is not None


def messages(events: list[Event]) -> list[Message]:
    """Every message of a trace, in order, with its kind (call, reply or send)."""
    out: list[Message] = []
    waiting_on: dict[str, str] = {}  # caller -> the thread whose answer it waits for
    for i, ev in enumerate(events):
        if ev.event == "state":
            if ev.detail != "receive_wait":
                waiting_on.pop(ev.thread, None)
            continue
        if ev.event != "transfer":
            continue
        parsed = parse_transfer(ev.detail)
        if parsed is None:
            continue
        rcv, n, cut = parsed
        snd = ev.thread
        if waiting_on.get(rcv) == snd:
            kind = "reply"
            del waiting_on[rcv]
        elif _waits_next(events, i, snd):
            kind = "call"
        else:
            kind = "send"
        out.append(Message(i, ev.time, snd, rcv, n, cut, kind))
        if kind == "call":
            waiting_on[snd] = rcv
    # A call's atomic switch to receive-wait follows its transfer at the same time.
    return out


def _waits_next(events: list[Event], i: int, snd: str) -> bool:
    """Does the sender of events[i] go to receive-wait at the same time, right after?"""
    time = events[i].time
    for ev in events[i + 1:]:
        if ev.time != time:
            return False
        if ev.thread == snd and ev.event == "state":
            return ev.detail == "receive_wait"
    return False


from .chrome import to_chrome, write_chrome  # noqa: E402
from .mermaid import to_mermaid, write_mermaid  # noqa: E402
from .text import to_text, write_text  # noqa: E402

__all__ = ["Message", "messages", "parse_transfer", "to_chrome", "to_mermaid", "to_text",
           "write_chrome", "write_mermaid", "write_text"]
