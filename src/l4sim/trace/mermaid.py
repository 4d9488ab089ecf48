"""Mermaid sequence diagrams: one participant per thread (in creation order), an arrow
per message (a dashed one for a reply), notes for timeouts, cancels, interrupts,
exceptions and thread ends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from . import messages

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def _words(n: int) -> str:
    return f"{n} word" if n == 1 else f"{n} words"


def to_mermaid(k: Kernel) -> str:
    """The trace of `k` as a Mermaid `sequenceDiagram` (text, newline-terminated)."""
    ids, lines = _participants(k)
    out = ["sequenceDiagram", *lines]
    msgs = {m.at: m for m in messages(k.events)}
    for i, ev in enumerate(k.events):
        who = ids[ev.thread]
        msg = msgs.get(i)
        if msg is not None:
            if msg.receiver not in ids:
                continue
            arrow = "-->>" if msg.kind == "reply" else "->>"
            what = _words(msg.words) + (", items cut" if msg.cut else "")
            out.append(f"    {who}{arrow}{ids[msg.receiver]}: {msg.kind} ({what})")
        elif ev.event == "timeout":
            out.append(f"    Note over {who}: timeout")
        elif ev.event == "state" and ev.detail == "canceled":
            out.append(f"    Note over {who}: canceled")
        elif ev.event == "irq" and "delivered" in ev.detail:
            out.append(f"    Note over {who}: interrupt {_clean(ev.detail.split()[0])}")
        elif ev.event == "exception":
            out.append(f"    Note over {who}: exception {_clean(ev.detail)}")
        elif ev.event == "end":
            out.append(f"    Note over {who}: ends ({_clean(ev.detail)})")
    return "\n".join(out) + "\n"


def write_mermaid(k: Kernel, path: str | Path) -> Path:
    """Write `to_mermaid(k)` to `path`: in a ```mermaid block for a Markdown file
    (.md, .markdown), as the bare diagram otherwise (.mmd)."""
    path = Path(path)
    text = to_mermaid(k)
    if path.suffix.lower() in (".md", ".markdown"):
        text = f"```mermaid\n{text}```\n"
    path.write_text(text)
    return path
