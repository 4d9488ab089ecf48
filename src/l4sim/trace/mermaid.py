"""Mermaid sequence diagrams: one participant per thread (in creation order), an arrow
per message naming its label and first words (`call PUT(3, 7)`; a dashed one for a
reply), page faults drawn as `page fault write 0x10000` arrows to the pager and each map
item as a note of what landed, notes for timeouts, cancels, interrupts, exceptions and
thread ends.

Mermaid refuses diagrams over 50,000 characters (its `maxTextSize`), and large ones are
unreadable anyway: `limit` (default `DEFAULT_LIMIT`) bounds the number of messages, the
text stays under `MAX_TEXT`, and a closing note says what was cut."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from . import Message, messages

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_LIMIT = 300   # messages drawn
MAX_TEXT = 45_000     # characters: under Mermaid's default maxTextSize of 50,000
_PF_WRITE, _PF_PRESENT = 2, 1


def _clean(text: str) -> str:
    """Text Mermaid shows as is: no statement separators, entities or line breaks."""
    return re.sub(r"[;#\n\r]", " ", text).strip()


def _participants(k: Kernel) -> tuple[dict[str, str], list[str]]:
    """Participant id per thread name, and the participant lines, in creation order."""
    names = [k.threads[tid].name for tid in sorted(k.threads)]
    names += [ev.thread for ev in k.events]  # threads deleted before the export
    ids: dict[str, str] = {}
    lines: list[str] = []
    for name in dict.fromkeys(names):
        if _IDENT.match(name) and name not in ("end", "participant", "actor", "Note"):
            ids[name] = name
            lines.append(f"    participant {name}")
        else:
            pid = f"p{len(ids) + 1}"
            ids[name] = pid
            lines.append(f"    participant {pid} as {_clean(name)}")
    return ids, lines


_MAP = re.compile(r"^(?P<op>map|grant) (?P<kind>mem|io|obj) (?P<src>\S+)/(?P<order>\d+) (?P<r>0x[0-9a-f]+) "
                  r"-> (?:(?P<kind2>mem|io|obj) (?P<dst>\S+)/(?P<order2>\d+) (?P<r2>0x[0-9a-f]+)|nothing)$")


def _size(order: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if order >= shift:
            return f"{1 << (order - shift)} {unit}"
    return f"{1 << order} B"


def map_text(what: str) -> str:
    """A map event for people: `map 0x10000 4 KiB r-- landed at 0x800000`."""
    m = _MAP.match(what)
    if m is None:
        return what
    order = int(m.group("order"))
    if m.group("kind") == "mem":
        r = int(m.group("r"), 16)
        rights = ("r" if r & 4 else "-") + ("w" if r & 2 else "-") + ("x" if r & 1 else "-")
        head = f"{m.group('op')} {m.group('src')} {_size(order)} {rights}"
    else:
        head = f"{m.group('op')} {m.group('kind')} {m.group('src')}/{order}"
    if m.group("dst") is None:
        return f"{head}: nothing landed"
    return f"{head} landed at {m.group('dst')}"


def arrow_text(msg: Message, labels: dict[int, str] | None = None) -> str:
    """What an arrow says: `call PUT(3, 7)`, `reply(1)`, `page fault write 0x10000`."""
    if msg.protocol == "page fault" and msg.values and msg.kind == "call":
        w0 = msg.values[0]
        kind = "write" if w0 & _PF_WRITE else "read"
        what = " (protection)" if w0 & _PF_PRESENT else ""
        return f"page fault {kind} {w0 & ~7:#x}{what}"
    text = msg.title(labels)
    if msg.items and not msg.maps and not msg.strings:
        text += f" + {msg.items} item" + ("s" if msg.items > 1 else "")
    return text


def to_mermaid(k: Kernel, limit: int | None = DEFAULT_LIMIT,
               labels: dict[int, str] | None = None) -> str:
    """The trace of `k` as a Mermaid `sequenceDiagram` (text, newline-terminated).

    `labels` names message labels (`{1: "PUT"}` draws `call PUT(3, 7)`); `limit` is
    the number of messages drawn (None: all, as long as the text stays under
    `MAX_TEXT` characters); what is left out is said in a closing note."""
    ids, lines = _participants(k)
    out = ["sequenceDiagram", *lines]
    size = sum(len(x) + 1 for x in out)
    msgs = {m.at: m for m in messages(k.events)}
    drawn = cut_msgs = cut_notes = 0
    full = False
    for i, ev in enumerate(k.events):
        who = ids[ev.thread]
        msg = msgs.get(i)
        add: list[str] = []
        if msg is not None:
            if msg.receiver not in ids:
                continue
            if full or (limit is not None and drawn >= limit):
                full = True
                cut_msgs += 1
                continue
            arrow = "-->>" if msg.kind == "reply" else "->>"
            add.append(f"    {who}{arrow}{ids[msg.receiver]}: {_clean(arrow_text(msg, labels))}")
            add += [f"    Note over {ids[msg.receiver]}: {_clean(map_text(what))}" for what in msg.maps]
            drawn += 1
        elif ev.event == "timeout" and not ev.detail.startswith("ignored"):
            add.append(f"    Note over {who}: timeout")
        elif ev.event == "state" and ev.detail == "canceled":
            add.append(f"    Note over {who}: canceled")
        elif ev.event == "irq" and "delivered" in ev.detail:
            add.append(f"    Note over {who}: interrupt {_clean(ev.detail.split()[0])}")
        elif ev.event == "exception":
            add.append(f"    Note over {who}: exception {_clean(ev.detail)}")
        elif ev.event == "preempted":
            add.append(f"    Note over {who}: preempted")
        elif ev.event in ("load", "store"):
            add.append(f"    Note over {who}: {ev.event} {_clean(ev.detail)}")
        elif ev.event == "end":
            add.append(f"    Note over {who}: ends ({_clean(ev.detail)})")
        if not add:
            continue
        if full:
            cut_notes += len(add)
            continue
        grow = sum(len(x) + 1 for x in add)
        if size + grow > MAX_TEXT - 300:  # room for the closing notes
            full = True
            cut_msgs += msg is not None
            cut_notes += len(add) - (msg is not None)
            continue
        out += add
        size += grow
    if cut_msgs or cut_notes:
        why = (f"the limit of {limit} messages (--mermaid-limit N)"
               if limit is not None and drawn >= limit else
               f"Mermaid's size limit ({MAX_TEXT:,} characters)")
        first = out[1].split()[1] if len(out) > 1 else ""
        last = out[len(ids)].split()[1] if len(ids) > 1 else first
        span = f"{first},{last}" if last != first else first
        out.append(f"    Note over {span}: {cut_msgs} more messages and {cut_notes} notes "
                   f"cut by {why}")
    if getattr(k.events, "dropped", 0):
        out.insert(1 + len(ids), f"    Note over {out[1].split()[1]}: the first "
                   f"{k.events.dropped} events were dropped by the trace ring "  # type: ignore[attr-defined]
                   "(Kernel(trace_limit=...))")
    return "\n".join(out) + "\n"


def write_mermaid(k: Kernel, path: str | Path, limit: int | None = DEFAULT_LIMIT,
                  labels: dict[int, str] | None = None) -> Path:
    """Write `to_mermaid(k)` to `path`: in a ```mermaid block for a Markdown file
    (.md, .markdown), as the bare diagram otherwise (.mmd)."""
    path = Path(path)
    text = to_mermaid(k, limit, labels)
    if path.suffix.lower() in (".md", ".markdown"):
        text = f"```mermaid\n{text}```\n"
    path.write_text(text)
    return path
