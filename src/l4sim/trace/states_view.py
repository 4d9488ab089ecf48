"""The IPC state machine drawn for people: short edge labels, long-IPC states grouped.

`l4sim states` prints each transition with its full sentence (`kernel/states.py`); the
drawings here keep that sentence for tooltips and label each edge with a few words, so
that the DOT diagram fits a slide and the report's graph stays readable.
"""

from __future__ import annotations

from typing import Final

from ..kernel import states as _states

# (old, new) -> a few words; the full sentence stays in states.WHY.
SHORT_LABELS: Final[dict[tuple[str, str], str]] = {
    ("inactive", "ready"): "start",
    ("ready", "send_wait"): "send, no receiver",
    ("ready", "receive_wait"): "receive, no sender",
    ("send_wait", "ready"): "taken",
    ("send_wait", "receive_wait"): "call taken",
    ("receive_wait", "ready"): "delivered",
    ("send_wait", "canceled"): "cancel",
    ("receive_wait", "canceled"): "cancel",
    ("send_wait", "timed_out"): "timeout",
    ("receive_wait", "timed_out"): "timeout",
    ("canceled", "ready"): "resume",
    ("timed_out", "ready"): "resume",
    ("ready", "dead"): "end",
    ("send_wait", "dead"): "deleted",
    ("receive_wait", "dead"): "deleted",
    ("canceled", "dead"): "deleted",
    ("timed_out", "dead"): "deleted",
    ("receive_wait", "ipc_transfer"): "strings arrive",
    ("send_wait", "ipc_transfer"): "pulled",
    ("ready", "ipc_transfer"): "sender-driven",
    ("ready", "receive_in_progress"): "pull",
    ("receive_in_progress", "ready"): "pull done",
    ("ipc_transfer", "ready"): "copy done",
    ("ipc_transfer", "receive_wait"): "wait for reply",
    ("ipc_transfer", "canceled"): "abort",
    ("ipc_transfer", "transfer_dying"): "delete (locked)",
    ("transfer_dying", "dead"): "unlocked",
    ("ipc_transfer", "dead"): "deleted",
    ("receive_in_progress", "dead"): "deleted",
    ("ready", "lock_wait"): "delete a locked one",
    ("lock_wait", "ready"): "deleted, returns",
    ("lock_wait", "dead"): "deleted",
    ("ready", "drq_wait"): "partner on other CPU",
    ("drq_wait", "ready"): "handshake done",
    ("drq_wait", "send_wait"): "queued there",
    ("drq_wait", "receive_wait"): "call delivered there",
    ("drq_wait", "canceled"): "cancel in flight",
    ("drq_wait", "dead"): "deleted",
}

LONG_IPC: Final = ("receive_in_progress", "ipc_transfer", "transfer_dying", "lock_wait")

# Where each state sits in the report's graph (x, y).
STATE_LAYOUT: Final[dict[str, tuple[int, int]]] = {
    "inactive": (0, 200), "ready": (220, 200), "send_wait": (470, 60),
    "receive_wait": (470, 340), "canceled": (720, 130), "timed_out": (720, 270),
    "dead": (960, 200), "receive_in_progress": (220, 470), "ipc_transfer": (470, 520),
    "transfer_dying": (720, 470), "lock_wait": (960, 520), "drq_wait": (220, 30),
}


def short_label(old: str, new: str) -> str:
    label = SHORT_LABELS.get((old, new))
    if label is None:
        why = _states.WHY.get((_states.STATES[old], _states.STATES[new]), "")
        label = " ".join(why.split()[:3])
    return label


def to_dot_slide() -> str:
    """The declared machine as Graphviz DOT that fits a slide: a few words per edge (the
    sentence as the edge's tooltip), the long-IPC states in a box of their own."""
    out = ["digraph ipc_states {", "  rankdir=LR;", "  nodesep=0.35; ranksep=0.6;",
           '  node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", '
           'fontname="Helvetica", fontsize=12];',
           '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for name, bits in _states.STATES.items():
        if name not in LONG_IPC:
            out.append(f'  {name} [tooltip="{bits:#x}"];')
    out.append('  subgraph cluster_long_ipc {')
    out.append('    label="long IPC"; style="rounded,dashed"; color="#888888"; fontname="Helvetica";')
    for name in LONG_IPC:
        out.append(f'    {name} [tooltip="{_states.STATES[name]:#x}"];')
    out.append("  }")
    for t in _states.TRANSITIONS:
        a, b = _states.state_name(t.old), _states.state_name(t.new)
        why = t.why.replace('"', "'")
        out.append(f'  {a} -> {b} [label="{short_label(a, b)}", tooltip="{why}"];')
    out.append("}")
    return "\n".join(out) + "\n"
