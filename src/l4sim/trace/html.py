"""The run report: one self-contained HTML page (no network needed) showing a run.

- the run result: why it ended, who is blocked and how, the wait-for chains of a
  deadlock, who died and where (tracebacks of the user's code), warnings;
- a timeline of every thread's state over simulated time, with message arrows (zoom and
  pan with the wheel or the slider; click a bar or an arrow for its details);
- the sequence diagram (l4sim's own SVG: arrows named by label and first words, maps);
- the mapping database as a tree;
- the IPC state machine with the transitions this run took highlighted;
- the cost breakdown: time per thread and state, kernel work by the cost model.

Charts are drawn by Apache ECharts (a custom build, inlined from `assets/`); the
sequence diagram is plain SVG made here, so that it needs no 3 MB of mermaid.js.

    write_html(k, "report.html", result)     # or: l4sim run FILE --html report.html
    Report(k, result)                        # displays inline in Jupyter
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..kernel import states as _states
from ..kernel.diagnose import wait_description
from . import Message, messages
from .chrome import to_chrome
from .mermaid import arrow_text, map_text
from .states_view import SHORT_LABELS, STATE_LAYOUT

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel, RunResult

SEQUENCE_LIMIT = 400  # messages drawn in the sequence diagram
MAX_MESSAGES = 5_000   # the timeline shows the run's end: at most this many messages ...
MAX_SLICES = 40_000    # ... and state slices (a browser stays quick, the page small)


@cache
def _asset(name: str) -> str:
    return resources.files("l4sim.trace").joinpath("assets", name).read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that may sit inside a <script> element."""
    return text.replace("</", "<\\/")


# --- the data -------------------------------------------------------------------------------

def _timeline(k: Kernel, rows: dict[str, int]) -> tuple[list[list[Any]], list[list[Any]]]:
    """State slices [row, start µs, end µs, state] and instants [row, µs, name, detail]
    of every thread, from the Chrome export (one place that knows how to read states)."""
    doc = to_chrome(k)
    where: dict[tuple[int, int], str] = {}
    for ev in doc["traceEvents"]:
        if ev["ph"] == "M" and ev["name"] == "thread_name":
            where[(ev["pid"], ev["tid"])] = ev["args"]["name"]
    slices: list[list[Any]] = []
    instants: list[list[Any]] = []
    open_: dict[tuple[int, int], dict[str, Any]] = {}
    for ev in doc["traceEvents"]:
        key = (ev.get("pid", 0), ev.get("tid", 0))
        name = where.get(key)
        if name is None or name not in rows:
            continue
        if ev["ph"] == "B":
            open_[key] = ev
        elif ev["ph"] == "E" and key in open_:
            b = open_.pop(key)
            slices.append([rows[name], b["ts"], ev["ts"], b["name"]])
        elif ev["ph"] == "i" and ev.get("cat") == "kernel":
            instants.append([rows[name], ev["ts"], ev["name"], ev["args"].get("detail", "")])
    return slices, instants


def _thread_rows(k: Kernel) -> list[dict[str, Any]]:
    """Every thread the report shows: alive ones in creation order, then the names only
    the trace knows (deleted threads)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for tid in sorted(k.threads):
        th = k.threads[tid]
        if th.name in seen:
            continue
        seen.add(th.name)
        if th.returned:
            end = f"returned {th.result!r}"[:200]
        elif th.exit_reason is not None:
            end = f"died: {th.exit_reason}"
        elif th.state & (_states.SEND_WAIT | _states.RECEIVE_WAIT):
            end = wait_description(th)
        else:
            end = th.state_name
        out.append({"name": th.name, "task": th.task.name, "tid": th.tid,
                    "priority": th.priority, "state": th.state_name, "outcome": end})
    for ev in k.events:
        if ev.thread not in seen:
            seen.add(ev.thread)
            out.append({"name": ev.thread, "task": "(deleted)", "tid": ev.tid, "priority": "",
                        "state": "deleted", "outcome": "deleted"})
    return out


def _mapdb_tree(k: Kernel) -> dict[str, Any]:
    """The mapping database's memory trees as nested nodes (from its dump)."""
    root: dict[str, Any] = {"name": "physical memory", "children": []}
    if k._root_task is None:
        return root
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for line in k.mapdb.dump().splitlines():
        depth = (len(line) - len(line.lstrip(" "))) // 2
        text = line.strip()
        parts = text.split()
        short = " ".join(parts[:2]) if len(parts) >= 2 else text
        node: dict[str, Any] = {"name": short, "full": text, "children": []}
        while stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1]["children"].append(node)
        stack.append((depth, node))
    return root


def _state_machine(k: Kernel) -> dict[str, Any]:
    """Declared states and transitions, each with how often this run took it."""
    taken: dict[tuple[str, str], int] = {}
    last: dict[int, str] = {}
    for ev in k.events:
        if ev.event != "state":
            continue
        old = last.get(ev.tid, "inactive")
        taken[(old, ev.detail)] = taken.get((old, ev.detail), 0) + 1
        last[ev.tid] = ev.detail
    pairs = {(_states.state_name(t.old), _states.state_name(t.new)) for t in _states.TRANSITIONS}
    edges = []
    for t in _states.TRANSITIONS:
        a, b = _states.state_name(t.old), _states.state_name(t.new)
        edges.append({"source": a, "target": b, "why": t.why, "short": SHORT_LABELS.get((a, b), ""),
                      "count": taken.get((a, b), 0), "curve": 0.25 if (b, a) in pairs else 0.08})
    visited = {a for a, _ in taken} | {b for _, b in taken}
    nodes = [{"name": n, "x": STATE_LAYOUT[n][0], "y": STATE_LAYOUT[n][1], "visited": n in visited}
             for n in _states.STATES]
    return {"nodes": nodes, "edges": edges}


def _costs(k: Kernel, slices: list[list[Any]], threads: list[dict[str, Any]],
           msgs: list[Message]) -> dict[str, Any]:
    """Time per thread and state (µs), and the kernel's work counted from the trace,
    priced by the cost model."""
    per: dict[int, dict[str, float]] = {}
    for row, a, b, st in slices:
        d = per.setdefault(row, {})
        d[st] = d.get(st, 0.0) + (b - a)
    columns = sorted({st for d in per.values() for st in d},
                     key=lambda s: (s != "running", s != "ready", s))
    table = [{"thread": threads[row]["name"], **{c: round(per[row].get(c, 0.0), 3) for c in columns}}
             for row in sorted(per)]
    c = k.costs
    counts = {"IPC (messages)": (len(msgs), c.entry_exit + c.ipc_path),
              "thread switches": (sum(1 for e in k.events if e.event == "switch"), c.thread_switch),
              "page faults": (sum(1 for e in k.events if e.event == "page fault"), c.page_fault),
              "timer interrupts": (sum(1 for e in k.events if e.event in ("timeout", "timeslice")),
                                   c.timer_tick),
              "map items": (sum(1 for e in k.events if e.event == "map"), 0)}
    kernel = [{"what": what, "count": n, "cycles each": each, "cycles": n * each}
              for what, (n, each) in counts.items()]
    return {"columns": ["thread", *columns], "per_thread": table, "kernel": kernel,
            "profile": c.name}


def report_data(k: Kernel, result: RunResult | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able values."""
    threads = _thread_rows(k)
    rows = {t["name"]: i for i, t in enumerate(threads)}
    slices, instants = _timeline(k, rows) if k.events else ([], [])
    msgs = [m for m in messages(k.events) if m.sender in rows and m.receiver in rows]
    mhz = k.mhz
    data_msgs = [{"t": round(m.time / mhz, 6), "from": m.sender, "to": m.receiver,
                  "from_row": rows[m.sender], "to_row": rows[m.receiver], "kind": m.kind,
                  "title": arrow_text(m), "detail": m.describe()} for m in msgs]
    end = max([k.now / mhz] + [s[2] for s in slices]) if slices else k.now / mhz
    cut = 0.0  # the timeline starts here (µs): earlier slices and messages are left out
    if len(data_msgs) > MAX_MESSAGES:
        cut = round(msgs[-MAX_MESSAGES].time / mhz, 6)  # as the messages' "t" are
    if len(slices) > MAX_SLICES:
        cut = max(cut, sorted(s[1] for s in slices)[-MAX_SLICES])
    if cut:
        slices = [s for s in slices if s[2] >= cut]
        instants = [i for i in instants if i[1] >= cut]
        data_msgs = [d for m, d in zip(msgs, data_msgs, strict=True)
                     if round(m.time / mhz, 6) >= cut]
    res: dict[str, Any] = {}
    if result is not None:
        res = {"reason": result.reason, "now": result.now, "steps": result.steps,
               "blocked": [[t.name, result.waits.get(t, t.state_name)] for t in result.blocked],
               "chains": list(result.chains),
               "died": [[t.name, str(why), getattr(why, "traceback", None) or ""]
                        for t, why in result.died],
               "warnings": list(result.warnings)}
    return {"threads": threads, "slices": slices, "instants": instants, "messages": data_msgs,
            "end_us": round(end, 6), "start_us": cut, "mhz": mhz, "now": k.now, "entries": k.entries,
            "events": len(k.events), "dropped": getattr(k.events, "dropped", 0),
            "traced": k.trace, "mapdb": _mapdb_tree(k), "states": _state_machine(k),
            "costs": _costs(k, slices, threads, msgs), "result": res}


# --- the page -------------------------------------------------------------------------------

def _e(x: object) -> str:
    return html.escape(str(x))


def _sequence_svg(k: Kernel, data: dict[str, Any]) -> str:
    """The sequence diagram as SVG: a lifeline per thread, an arrow per message."""
    threads = [t["name"] for t in data["threads"]]
    msgs = data["messages"][:SEQUENCE_LIMIT]
    if not msgs:
        return "<p class='note'>No messages were recorded.</p>"
    col = 130
    width = 80 + col * len(threads)
    rows: list[tuple[str, Any]] = []
    for i, m in enumerate(msgs):
        rows.append(("msg", i))
        for what in m["detail"].get("maps", []):
            rows.append(("note", (m["to_row"], map_text(what))))
    top, step = 50, 30
    height = top + step * (len(rows) + 1)
    x = [60 + col * i + col // 2 for i in range(len(threads))]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="sequence" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}">',
           '<defs><marker id="ah" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>']
    for i, name in enumerate(threads):
        out.append(f'<line class="life" x1="{x[i]}" y1="{top - 10}" x2="{x[i]}" y2="{height - 5}"/>')
        out.append(f'<rect class="head" x="{x[i] - col // 2 + 8}" y="8" width="{col - 16}" '
                   f'height="26" rx="4"/><text class="head" x="{x[i]}" y="26">{_e(name[:20])}</text>')
    for r, (kind, what) in enumerate(rows):
        y = top + step * (r + 1)
        if kind == "note":
            row, text = what
            out.append(f'<rect class="note" x="{x[row] - col // 2 + 6}" y="{y - 16}" width="{col - 12}" '
                       f'height="20" rx="3"/><text class="note" x="{x[row]}" y="{y - 2}">'
                       f'{_e(text[:34])}<title>{_e(text)}</title></text>')
            continue
        m = msgs[what]
        a, b = x[m["from_row"]], x[m["to_row"]]
        cls = "reply" if m["kind"] == "reply" else "send"
        # (a message to oneself is a loop)
        path = f'M{a},{y - 8} h40 v14 h-38' if a == b else f'M{a},{y} L{b + (-6 if b > a else 6)},{y}'
        out.append(f'<g class="seq-msg {cls}" data-msg="{what}"><path d="{path}" marker-end="url(#ah)"/>'
                   f'<rect class="hit" x="{min(a, b)}" y="{y - 18}" width="{max(abs(b - a), 44)}" '
                   'height="22"/>'
                   f'<text x="{(a + b) / 2 if a != b else a + 44}" y="{y - 5}">{_e(m["title"][:44])}</text>'
                   f'<title>{_e(m["from"])} → {_e(m["to"])} at {m["t"]} µs: {_e(m["title"])}</title></g>')
    out.append("</svg>")
    more = len(data["messages"]) - len(msgs)
    note = (f"<p class='note'>The first {len(msgs)} of {len(data['messages'])} messages; "
            f"{more} more are in the timeline.</p>") if more > 0 else ""
    return note + "".join(out)


def _result_html(data: dict[str, Any]) -> str:
    res = data["result"]
    if not res:
        return "<p class='note'>Not run yet, or no run result was given.</p>"
    mhz = data["mhz"]
    parts = [f"<p class='reason reason-{_e(res['reason'])}'>The run ended <b>{_e(res['reason'])}</b> "
             f"at {res['now']:,} cycles ({res['now'] / mhz:,.3f} µs of simulated time), after "
             f"{res['steps']:,} kernel entries.</p>"]
    if res["chains"]:
        parts.append("<h3>Wait-for chains</h3><ul class='chains'>"
                     + "".join(f"<li>{_e(c)}</li>" for c in res["chains"]) + "</ul>")
    if res["blocked"]:
        parts.append("<h3>Blocked</h3><ul>" + "".join(
            f"<li><b>{_e(n)}</b> {_e(w)}</li>" for n, w in res["blocked"]) + "</ul>")
    if res["died"]:
        parts.append("<h3>Died</h3>" + "".join(
            f"<div class='died'><b>{_e(n)}</b>: {_e(why)}"
            + (f"<pre class='traceback'>{_e(tb)}</pre>" if tb else "") + "</div>"
            for n, why, tb in res["died"]))
    if res["warnings"]:
        parts.append("<h3>Warnings</h3><ul class='warnings'>" + "".join(
            f"<li>{_e(w)}</li>" for w in res["warnings"]) + "</ul>")
    return "".join(parts)


def _threads_html(data: dict[str, Any]) -> str:
    head = "<tr><th>thread</th><th>task</th><th>tid</th><th>priority</th><th>outcome</th></tr>"
    rows = "".join(
        f"<tr class='thread' data-thread='{i}'><td><b>{_e(t['name'])}</b></td><td>{_e(t['task'])}</td>"
        f"<td>{_e(t['tid'])}</td><td>{_e(t['priority'])}</td><td>{_e(t['outcome'])}</td></tr>"
        for i, t in enumerate(data["threads"]))
    return f"<table id='threads' class='grid'>{head}{rows}</table>"


def _costs_html(data: dict[str, Any]) -> str:
    c = data["costs"]
    if not c["per_thread"]:
        per = "<p class='note'>Time per state needs a traced run.</p>"
    else:
        head = "".join(f"<th>{_e(col)}{' (µs)' if col != 'thread' else ''}</th>" for col in c["columns"])
        body = "".join("<tr>" + "".join(f"<td>{_e(r.get(col, 0))}</td>" for col in c["columns"])
                       + "</tr>" for r in c["per_thread"])
        per = f"<table class='grid'><tr>{head}</tr>{body}</table>"
    head = "<tr><th>kernel work</th><th>count</th><th>cycles each</th><th>cycles</th></tr>"
    body = "".join(f"<tr><td>{_e(r['what'])}</td><td>{r['count']:,}</td><td>{r['cycles each']:,}</td>"
                   f"<td>{r['cycles']:,}</td></tr>" for r in c["kernel"])
    return (f"<h3>Time per thread and state</h3>{per}<h3>Kernel work in the trace, priced by the "
            f"cost model ({_e(c['profile'])})</h3><table class='grid'>{head}{body}</table>")


def report_html(k: Kernel, result: RunResult | None = None, title: str = "l4sim run") -> str:
    """The whole report as one HTML document (scripts and data inlined)."""
    data = report_data(k, result)
    summary = (f"{len(data['threads'])} threads · {len(data['messages'])} messages · "
               f"{data['events']:,} events recorded · {data['now']:,} cycles "
               f"({data['now'] / data['mhz']:,.3f} µs at {data['mhz']} MHz)")
    if data["dropped"]:
        summary += f" · the first {data['dropped']:,} events were dropped by the trace ring"
    if data["start_us"]:
        summary += (f" · the timeline shows the run from {data['start_us']:,.3f} µs on "
                    f"(at most {MAX_MESSAGES:,} messages, {MAX_SLICES:,} state slices)")
    untraced = ("" if data["traced"] else
                "<p class='note'>This kernel was not traced: the timeline, the sequence diagram "
                "and the transitions taken need <code>Kernel(trace=True)</code> "
                "(<code>l4sim run --html</code> turns it on).</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_asset("report.css")}</style>
</head><body>
<header><h1>{_e(title)}</h1><p class="summary">{_e(summary)}</p>
<nav><a href="#result">result</a><a href="#timeline-sec">timeline</a><a href="#sequence-sec">sequence</a>
<a href="#mapdb-sec">mapping database</a><a href="#states-sec">state machine</a>
<a href="#costs-sec">costs</a></nav>
</header>
<main>
<aside id="details"><p class="note">Click a thread, a bar, an arrow, a message, a mapping or a
transition to see its details here.</p></aside>
<section id="result"><h2>Run result</h2>{_result_html(data)}{_threads_html(data)}</section>
<section id="timeline-sec"><h2>Timeline</h2>{untraced}
<p class="legend">{"".join(f"<span class='sw sw-{s}'></span>{s} " for s in
    ("running", "ready", "send_wait", "receive_wait", "canceled", "timed_out", "ipc_transfer"))}
· arrows: messages (dashed: replies) · wheel or slider: zoom and pan</p>
<div id="timeline" class="chart"></div></section>
<section id="sequence-sec"><h2>Sequence diagram</h2>
<div class="seqwrap">{_sequence_svg(k, data)}</div></section>
<section id="mapdb-sec"><h2>Mapping database</h2>{"" if data["mapdb"]["children"] else
    "<p class='note'>No memory was mapped.</p>"}<div id="mapdb" class="chart"></div></section>
<section id="states-sec"><h2>IPC state machine</h2>
<p class="note">Declared states and transitions; red ones were taken in this run (hover for the
full sentence).</p><div id="states" class="chart tall"></div></section>
<section id="costs-sec"><h2>Costs</h2>{_costs_html(data)}</section>
</main>
<footer>made by l4sim · charts by Apache ECharts (Apache-2.0), inlined</footer>
<script>window.L4SIM = {_script_safe(json.dumps(data, separators=(",", ":"), default=str))};</script>
<script>{_script_safe(_asset("echarts.l4sim.min.js"))}</script>
<script>{_script_safe(_asset("report.js"))}</script>
</body></html>
"""


def write_html(k: Kernel, path: str | Path, result: RunResult | None = None,
               title: str | None = None) -> Path:
    """Write the report of `k` (and its run `result`) to `path`."""
    path = Path(path)
    path.write_text(report_html(k, result, title or f"l4sim run: {path.stem}"), encoding="utf-8")
    return path


def inline_html(page: str, height: int = 900) -> str:
    """A page as a Jupyter output: an iframe holding it (its scripts and styles stay in it)."""
    return (f'<iframe class="l4sim-report" srcdoc="{html.escape(page, quote=True)}" '
            f'style="width:100%;height:{height}px;border:1px solid #ddd" '
            'sandbox="allow-scripts"></iframe>')


class Report:
    """A run report object: displays inline in Jupyter, `.html()` the page, `.save(path)`."""

    def __init__(self, k: Kernel, result: RunResult | None = None, title: str = "l4sim run") -> None:
        self.kernel = k
        self.result = result
        self.title = title

    def html(self) -> str:
        return report_html(self.kernel, self.result, self.title)

    def save(self, path: str | Path) -> Path:
        return write_html(self.kernel, path, self.result, self.title)

    def _repr_html_(self) -> str:
        return inline_html(self.html())


def kernel_html(k: Kernel) -> str:
    """`Kernel._repr_html_`: the report of the kernel as it is now."""
    return inline_html(report_html(k, None, "l4sim kernel"))


def result_html(result: RunResult) -> str:
    """`RunResult._repr_html_`: the report of the run that returned it."""
    if result.kernel is None:
        return f"<pre>{_e(result.explain())}</pre>"
    return inline_html(report_html(result.kernel, result, "l4sim run"))
