"""Trace exporters: Chrome trace-event JSON, Mermaid sequence diagrams, a text log.

A kernel made with `trace=True` records every kernel event in `k.events` (an `Event`:
time in cycles, CPU, thread name, event, detail). The exporters read that record after
(or during) a run; nothing here runs while the kernel does, so tracing off costs nothing.

    k = Kernel(trace=True); build(k); k.run()
    write_chrome(k, "out.json")     # open in https://ui.perfetto.dev
    write_mermaid(k, "out.md")      # a ```mermaid block (raw diagram for other suffixes)
    print(to_text(k))
    write_html(k, "report.html", result)   # the run report: one page, no network needed
    Report(k, result)               # the same report, inline in Jupyter
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


PROTOCOLS = {-1: "IRQ", -2: "page fault", -3: "preemption", -4: "system exception",
             -5: "exception", -6: "sigma0", -8: "I/O page fault"}
_LONG_END = re.compile(r"^long IPC (?P<snd>.+) -> (?P<rcv>.+) ended (?P<err>\w+): \[(?P<b>[\d, ]*)\] bytes$")


class Message(NamedTuple):
    """One message transfer, parsed from a "transfer" event and the events around it.

    `at` is the position of that event in `k.events`; `kind` is "call" (the sender
    waits for an answer right after sending), "reply" (the answer to the receiver's
    outstanding call) or "send". `words` is the number of words and `values` the first
    of them (up to 8); `label` the tag's label (negative: a kernel protocol, named by
    `protocol`); `items` the number of typed items, `maps` what each map item did
    ("map mem 0x10000/12 0x7 -> mem 0x800000/12 0x4", "no receive window"), `strings`
    the bytes each string item delivered; `error` the item failure, if any."""

    at: int
    time: int
    sender: str
    receiver: str
    words: int
    cut: bool
    kind: str
    label: int = 0
    values: tuple[int, ...] = ()
    items: int = 0
    maps: tuple[str, ...] = ()
    strings: tuple[int, ...] = ()
    error: str = ""
    seen_as: str = ""

    @property
    def protocol(self) -> str:
        """The kernel protocol's name for a negative label ("page fault", "IRQ", ...), or ""."""
        return PROTOCOLS.get(self.label, "") if self.label < 0 else ""

    def title(self, labels: dict[int, str] | None = None, max_words: int = 3) -> str:
        """A short line for a diagram: `call PUT(3, 7)`, `reply(1)`, `page fault(0x10002, …)`."""
        name = self.protocol or (labels or {}).get(self.label, "")
        if not name and self.label:
            name = f"label {self.label}"
        shown = ", ".join(str(v) if v < 1024 else hex(v) for v in self.values[:max_words])
        if self.words > max_words:
            shown += ", …"
        head = self.kind if not self.protocol else ""
        text = " ".join(x for x in (head, name) if x) + f"({shown})"
        if self.strings:
            text += " + " + ", ".join(f"{b} B" for b in self.strings)
        if self.error:
            text += f" [{self.error}]"
        return text

    def describe(self) -> dict[str, object]:
        """Everything known about the message, for a trace viewer's argument panel."""
        out: dict[str, object] = {"kind": self.kind, "from": self.sender, "to": self.receiver,
                                  "label": self.label, "words": self.words,
                                  "values": list(self.values)}
        if self.protocol:
            out["protocol"] = self.protocol
        if self.seen_as:
            out["seen as"] = self.seen_as
        if self.items:
            out["items"] = self.items
        if self.maps:
            out["maps"] = list(self.maps)
        if self.strings:
            out["string bytes"] = list(self.strings)
        if self.cut:
            out["cut"] = True
        if self.error:
            out["error"] = self.error
        return out


def parse_transfer(detail: str) -> tuple[str, int, bool] | None:
    """The receiver's name, the number of words and whether the items failed (a cut or a
    failed map), from the detail of a "transfer" event ("to NAME: N words[, M items]"
    or "to NAME: N words, items failed: ERROR", then " | label L | words ... | as X")."""
    m = _TRANSFER.match(detail)
    if m is None:
        return None
    return m.group("rcv"), int(m.group("n")), m.group("cut") is not None


def _values(text: str | None) -> tuple[int, ...]:
    if not text or text == "-":
        return ()
    return tuple(int(w, 0) for w in text.split() if w != "…")


def messages(events: list[Event]) -> list[Message]:
    """Every message of a trace, in order, with its kind (call, reply or send) and what
    the record says of its content."""
    out: list[Message] = []
    waiting_on: dict[str, str] = {}  # caller -> the thread whose answer it waits for
    maps: dict[str, list[tuple[str, str]]] = {}  # sender -> (receiver, what) not yet attached
    for i, ev in enumerate(events):
        if ev.event == "state":
            if ev.detail != "receive_wait":
                waiting_on.pop(ev.thread, None)
            continue
        if ev.event == "map":
            rcv, _, what = ev.detail.partition(": ")
            maps.setdefault(ev.thread, []).append((rcv[3:], what))
            continue
        if ev.event != "transfer":
            continue
        m = _TRANSFER.match(ev.detail)
        if m is None:
            long_end = _LONG_END.match(ev.detail)
            if long_end is not None:
                _attach_strings(out, long_end)
            continue
        rcv, n, cut = m.group("rcv"), int(m.group("n")), m.group("cut") is not None
        snd = ev.thread
        if waiting_on.get(rcv) == snd:
            kind = "reply"
            del waiting_on[rcv]
        elif _waits_next(events, i, snd):
            kind = "call"
        else:
            kind = "send"
        mine = [what for r, what in maps.pop(snd, []) if r == rcv]
        out.append(Message(i, ev.time, snd, rcv, n, cut, kind,
                           label=int(m.group("label") or 0), values=_values(m.group("words")),
                           items=int(m.group("items") or 0), maps=tuple(mine),
                           error=m.group("err") or "", seen_as=m.group("as") or ""))
        if kind == "call":
            waiting_on[snd] = rcv
    # A call's atomic switch to receive-wait follows its transfer at the same time.
    return out


def _attach_strings(out: list[Message], m: re.Match[str]) -> None:
    """A long IPC's end names the bytes per string: they belong to its last transfer."""
    snd, rcv = m.group("snd"), m.group("rcv")
    done = tuple(int(b) for b in m.group("b").split(",") if b.strip())
    err = m.group("err")
    for j in range(len(out) - 1, -1, -1):
        msg = out[j]
        if msg.sender == snd and msg.receiver == rcv:
            out[j] = msg._replace(strings=done, error=msg.error or ("" if err == "OK" else err))
            return


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
from .html import Report, report_html, write_html  # noqa: E402
from .mermaid import to_mermaid, write_mermaid  # noqa: E402
from .text import to_text, write_text  # noqa: E402

__all__ = [
    "PROTOCOLS",
    "Message",
    "Report",
    "messages",
    "parse_transfer",
    "report_html",
    "to_chrome",
    "to_mermaid",
    "to_text",
    "write_chrome",
    "write_html",
    "write_mermaid",
    "write_text",
]
