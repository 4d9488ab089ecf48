"""Chrome trace-event JSON (opens in https://ui.perfetto.dev and chrome://tracing).

One process per task (pid = task id) and one thread track per l4sim thread (tid =
thread tid). Each track is a sequence of B/E slices named by what the thread is doing:
"running" while it is the CPU's current thread, otherwise its state ("ready",
"send_wait", "receive_wait", "canceled", "timed_out"). Every message is a flow arrow
from the sender's track at the transfer to the receiver's track (ids unique per
message) carrying the message (kind, label and protocol, words, items and what each map
did, string bytes, errors), and an instant on both tracks named by it (`call PUT(3, 7)`);
timeouts, interrupts, exceptions, preemptions, page faults, maps, errors and thread ends
are instant events. Timestamps are microseconds: cycles / `k.mhz`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import messages

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

RUNNABLE = frozenset({"ready", "canceled", "timed_out"})
INSTANTS = frozenset({"timeout", "irq", "exception", "preemption", "timeslice", "end", "error",
                      "page fault", "map", "unmap"})
_EPS_US = 0.001  # flow ends sit 1 ns inside the slices they bind to


def _tracks(k: Kernel) -> tuple[dict[str, tuple[int, int]], list[dict[str, Any]]]:
    """pid/tid per thread name, and the metadata events naming processes and threads."""
    meta: list[dict[str, Any]] = []
    where: dict[str, tuple[int, int]] = {}
    for task in k.tasks:
        meta.append({"name": "process_name", "ph": "M", "pid": task.id, "tid": 0,
                     "args": {"name": task.name}})
        meta.append({"name": "process_sort_index", "ph": "M", "pid": task.id, "tid": 0,
                     "args": {"sort_index": task.id}})
    for tid in sorted(k.threads):
        th = k.threads[tid]
        where.setdefault(th.name, (th.task.id, tid))
    # Threads deleted before the export are gone from k.threads: a track of their own.
    orphans = [ev.thread for ev in k.events if ev.thread not in where]
    if orphans:
        meta.append({"name": "process_name", "ph": "M", "pid": 0, "tid": 0,
                     "args": {"name": "deleted threads"}})
        for name in dict.fromkeys(orphans):
            where[name] = (0, 1_000_000 + len(where))
    for name, (pid, tid) in where.items():
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                     "args": {"name": name}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
                     "args": {"sort_index": tid}})
    return where, meta


def _first_current(k: Kernel) -> str | None:
    """The thread running when the record starts: the one the first switch leaves, else
    the first thread that does something other than becoming ready."""
    for ev in k.events:
        if ev.event == "switch" and ev.detail.startswith("from "):
            return ev.detail[5:]
    for ev in k.events:
        if not (ev.event == "state" and ev.detail == "ready"):
            return ev.thread
    return None


def to_chrome(k: Kernel) -> dict[str, Any]:
    """The trace of `k` as a Chrome trace-event JSON object."""
    mhz = k.mhz
    where, meta = _tracks(k)
    out: list[dict[str, Any]] = []
    state: dict[str, str] = {}                  # last recorded state per thread
    open_slice: dict[str, tuple[str, int]] = {}  # thread -> (slice name, start cycles)
    current = _first_current(k)
    last = current  # the thread that ran last: resumed without a "switch" after idling

    def us(cycles: int) -> float:
        return round(cycles / mhz, 6)

    def close(name: str, time: int) -> None:
        sl = open_slice.pop(name, None)
        if sl is None:
            return
        pid, tid = where[name]
        if time > sl[1]:  # zero-length slices are left out
            out.append({"name": sl[0], "cat": "state", "ph": "B", "ts": us(sl[1]),
                        "pid": pid, "tid": tid})
            out.append({"name": sl[0], "cat": "state", "ph": "E", "ts": us(time),
                        "pid": pid, "tid": tid})

    def show(name: str, time: int) -> None:
        """Open the slice that says what `name` does now, if it changed."""
        st = state.get(name)
        if st is None or st == "dead":
            close(name, time)
            return
        label = "running" if name == current and st in RUNNABLE else st
        sl = open_slice.get(name)
        if sl is not None and sl[0] == label:
            return
        close(name, time)
        open_slice[name] = (label, time)

    for ev in k.events:
        name = ev.thread
        if ev.event == "state":
            state[name] = ev.detail
            if name == current and ev.detail not in RUNNABLE:
                current = None
            elif current is None and name == last and ev.detail in RUNNABLE:
                current = name  # the CPU idled; the last thread is woken and goes on
            show(name, ev.time)
        elif ev.event == "switch":
            prev = current
            current = last = name
            if prev is not None:
                show(prev, ev.time)
            if ev.detail.startswith("from "):
                show(ev.detail[5:], ev.time)
            show(name, ev.time)
        elif ev.event in INSTANTS:
            pid, tid = where[name]
            out.append({"name": ev.event, "cat": "kernel", "ph": "i", "s": "t",
                        "ts": us(ev.time), "pid": pid, "tid": tid,
                        "args": {"detail": ev.detail}})
    end = max([k.now] + [ev.time for ev in k.events])
    for name in list(open_slice):
        close(name, end)

    for flow_id, msg in enumerate(messages(k.events), 1):
        if msg.receiver not in where:
            continue
        spid, stid = where[msg.sender]
        rpid, rtid = where[msg.receiver]
        args = msg.describe()
        title = msg.title()
        ts = us(msg.time)
        out.append({"name": msg.kind, "cat": "ipc", "ph": "s", "id": flow_id,
                    "ts": max(0.0, round(ts - _EPS_US, 6)), "pid": spid, "tid": stid, "args": args})
        out.append({"name": msg.kind, "cat": "ipc", "ph": "f", "bp": "e", "id": flow_id,
                    "ts": round(ts + _EPS_US, 6), "pid": rpid, "tid": rtid, "args": args})
        # The message itself, on both tracks: click it to read label, words, items.
        out.append({"name": f"{title} → {msg.receiver}", "cat": "message", "ph": "i", "s": "t",
                    "ts": ts, "pid": spid, "tid": stid, "args": args})
        out.append({"name": f"{title} ← {msg.sender}", "cat": "message", "ph": "i", "s": "t",
                    "ts": ts, "pid": rpid, "tid": rtid, "args": args})
    # Stable: at one timestamp a slice's E stays before the next one's B.
    out.sort(key=lambda e: float(e["ts"]))
    return {"traceEvents": meta + out, "displayTimeUnit": "ns",
            "otherData": {"generator": "l4sim", "mhz": mhz,
                          "dropped events": getattr(k.events, "dropped", 0)}}


def write_chrome(k: Kernel, path: str | Path) -> Path:
    """Write `to_chrome(k)` as JSON to `path`."""
    path = Path(path)
    path.write_text(json.dumps(to_chrome(k), separators=(",", ":")) + "\n")
    return path
