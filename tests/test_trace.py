"""Tracing (S18): the Chrome trace-event export is well formed (required keys, matched
begin/end, one start and one finish per flow id, time order per track), the Mermaid
sequence diagram of a 3-round ping-pong is the golden one, the text log has a line per
event, and `l4sim run --trace out.json --mermaid out.md` writes both files."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from helpers import load_example, make_kernel, thread_named
from l4sim import Kernel, Timeout
from l4sim.cli import main
from l4sim.trace import (
    messages,
    parse_transfer,
    to_chrome,
    to_mermaid,
    to_text,
    write_chrome,
    write_mermaid,
    write_text,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"

# Required keys per phase (the trace-event format; "M" metadata names a process/thread).
REQUIRED = {
    "B": {"name", "ph", "ts", "pid", "tid"},
    "E": {"ph", "ts", "pid", "tid"},
    "X": {"name", "ph", "ts", "dur", "pid", "tid"},
    "i": {"name", "ph", "ts", "pid", "tid", "s"},
    "s": {"name", "cat", "ph", "ts", "pid", "tid", "id"},
    "f": {"name", "cat", "ph", "ts", "pid", "tid", "id", "bp"},
    "M": {"name", "ph", "pid", "args"},
}


def validate_chrome(doc: dict[str, Any]) -> dict[tuple[int, int], list[tuple[str, float, float]]]:
    """Check a trace against the trace-event format; return the slices per (pid, tid)."""
    assert set(doc) >= {"traceEvents", "displayTimeUnit"}
    assert doc["displayTimeUnit"] in ("ms", "ns")
    json.loads(json.dumps(doc))  # plain JSON values only
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    named_threads: set[tuple[int, int]] = set()
    named_procs: set[int] = set()
    stacks: dict[tuple[int, int], list[tuple[str, float]]] = defaultdict(list)
    slices: dict[tuple[int, int], list[tuple[str, float, float]]] = defaultdict(list)
    last_ts: dict[tuple[int, int], float] = {}
    flows: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        ph = ev.get("ph")
        assert ph in REQUIRED, ev
        missing = REQUIRED[ph] - set(ev)
        assert not missing, (missing, ev)
        assert isinstance(ev["pid"], int)
        if ph == "M":
            assert ev["name"] in ("process_name", "thread_name", "process_sort_index",
                                  "thread_sort_index"), ev
            if ev["name"] == "process_name":
                assert isinstance(ev["args"]["name"], str)
                named_procs.add(ev["pid"])
            elif ev["name"] == "thread_name":
                assert isinstance(ev["args"]["name"], str) and isinstance(ev["tid"], int)
                named_threads.add((ev["pid"], ev["tid"]))
            continue
        key = (ev["pid"], ev["tid"])
        ts = ev["ts"]
        assert isinstance(ts, (int, float)) and ts >= 0, ev
        assert ts >= last_ts.get(key, 0.0), f"time goes back on {key}: {ev}"
        last_ts[key] = ts
        if ph == "B":
            stacks[key].append((ev["name"], ts))
        elif ph == "E":
            assert stacks[key], f"E without B on {key}: {ev}"
            name, start = stacks[key].pop()
            assert ev.get("name", name) == name, (name, ev)
            assert ts >= start
            slices[key].append((name, start, ts))
        elif ph == "X":
            assert ev["dur"] >= 0
            slices[key].append((ev["name"], ts, ts + ev["dur"]))
        elif ph == "i":
            assert ev["s"] in ("g", "p", "t")
        else:  # s, f
            assert isinstance(ev["id"], (int, str))
            flows[ev["id"]].append(ev)
    assert not any(stacks.values()), f"B without E: {dict(stacks)}"
    for fid, pair in flows.items():
        phases = Counter(e["ph"] for e in pair)
        assert phases == Counter({"s": 1, "f": 1}), (fid, pair)
        start = next(e for e in pair if e["ph"] == "s")
        end = next(e for e in pair if e["ph"] == "f")
        assert end["bp"] == "e" and start["cat"] == end["cat"] and start["name"] == end["name"]
        assert end["ts"] >= start["ts"]
    used = {(e["pid"], e["tid"]) for e in events if e["ph"] != "M"}
    assert used <= named_threads, used - named_threads
    assert {pid for pid, _ in named_threads} <= named_procs
    return slices


def _enclosing(slices: list[tuple[str, float, float]], ts: float) -> str | None:
    """The slice strictly around `ts` (where a flow event binds), if any."""
    for name, start, end in slices:
        if start < ts < end:
            return name
    return None


def pingpong_kernel(rounds: int = 3) -> Kernel:
    k = make_kernel()
    load_example("pingpong").build(k, rounds)
    result = k.run()
    assert result.reason == "done"
    return k


# --- Chrome trace-event JSON ------------------------------------------------------------


def test_chrome_pingpong_is_valid_and_shows_the_rendezvous() -> None:
    k = pingpong_kernel(3)
    doc = to_chrome(k)
    slices = validate_chrome(doc)
    events = doc["traceEvents"]
    pong, ping = thread_named(k, "pong"), thread_named(k, "ping")
    # a process per task, a thread track per thread, named
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {(pong.task.id, pong.tid): "pong", (ping.task.id, ping.tid): "ping"}
    procs = {e["pid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {pong.task.id: "pong", ping.task.id: "ping"}
    # slices named by state; one CPU: running slices never overlap
    assert {n for sl in slices.values() for n, _, _ in sl} == {"running", "ready", "receive_wait"}
    running = sorted((s, e) for sl in slices.values() for n, s, e in sl if n == "running")
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(running))
    assert len(running) == 7  # pong's first run, then a run per message
    # a flow per message, sender to receiver, alternately call and reply
    starts = [e for e in events if e["ph"] == "s"]
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert [e["name"] for e in starts] == ["call", "reply"] * 3
    assert len({e["id"] for e in starts}) == 6
    for s in starts:
        f = ends[s["id"]]
        sender = (ping if s["name"] == "call" else pong)
        receiver = pong if sender is ping else ping
        assert (s["pid"], s["tid"]) == (sender.task.id, sender.tid)
        assert (f["pid"], f["tid"]) == (receiver.task.id, receiver.tid)
        # each end binds to a slice: the sender's running one, the receiver's next one
        assert _enclosing(slices[(s["pid"], s["tid"])], s["ts"]) == "running"
        assert _enclosing(slices[(f["pid"], f["tid"])], f["ts"]) == "ready"
        assert s["args"].items() >= {"kind": s["name"], "words": 1, "from": sender.name,
                                     "to": receiver.name, "label": 0}.items()
        assert len(s["args"]["values"]) == 1
    # timestamps are microseconds: cycles / MHz
    first = k.events[next(i for i, e in enumerate(k.events) if e.event == "transfer")]
    assert starts[0]["ts"] == pytest.approx(first.time / k.mhz, abs=0.002)
    end = [e for e in events if e["ph"] == "i" and e["cat"] == "kernel"]
    assert [(e["name"], e["args"]["detail"]) for e in end] == [("end", "returned")]
    # the message itself, on both tracks, named by its kind and words
    said = [e["name"] for e in events if e["ph"] == "i" and e["cat"] == "message"]
    assert said[:4] == ["call(0) → pong", "call(0) ← ping", "reply(1) → ping", "reply(1) ← pong"]


def busy_server(k: Kernel) -> dict[str, Any]:
    """A system with a sender timing out, a sender queued, and a canceled receiver."""
    seen: dict[str, Any] = {}

    async def server(t: Any) -> None:
        await t.sleep(Timeout.us(10))      # the clients queue meanwhile
        r = await t.wait()
        seen["got"] = r.words
        await t.wait(receive_timeout=Timeout.us(1))

    async def impatient(t: Any, srv: int) -> None:
        r = await t.send(srv, words=[1], send_timeout=Timeout.us(1))
        seen["impatient"] = r.error.name

    async def patient(t: Any, srv: int) -> None:
        r = await t.send(srv, words=[7, 8])
        seen["patient"] = r.error.name

    async def listener(t: Any) -> None:
        r = await t.wait()
        seen["listener"] = r.error.name

    stask, ctask = k.new_task("srv"), k.new_task("clients")
    srv = stask.new_thread(server, name="server")
    ctask.new_thread(impatient, ctask.add_cap(srv), name="impatient")
    ctask.new_thread(patient, ctask.add_cap(srv), name="patient")
    lis = ctask.new_thread(listener, name="listener")
    k.at(10_000, lambda: k.cancel(lis))
    return seen


def test_chrome_covers_send_wait_timeouts_and_cancels() -> None:
    k = make_kernel()
    seen = busy_server(k)
    k.run()
    assert seen == {"impatient": "SETIMEOUT", "patient": "OK", "got": (7, 8),
                    "listener": "RECANCELED"}
    doc = to_chrome(k)
    slices = validate_chrome(doc)
    names = {n for sl in slices.values() for n, _, _ in sl}
    assert names == {"running", "ready", "send_wait", "receive_wait", "timed_out", "canceled"}
    instants = Counter(e["name"] for e in doc["traceEvents"]
                       if e["ph"] == "i" and e["cat"] == "kernel")
    assert instants == {"timeout": 3, "end": 4, "error": 4}  # each side's error: 3 timeouts, 1 cancel
    flows = [e for e in doc["traceEvents"] if e["ph"] == "s"]
    assert [(e["args"]["from"], e["args"]["to"], e["name"], e["args"]["words"])
            for e in flows] == [("patient", "server", "send", 2)]
    # the queued sender's arrow leaves its send_wait slice and lands in the server's run
    f = next(e for e in doc["traceEvents"] if e["ph"] == "f")
    assert _enclosing(slices[(flows[0]["pid"], flows[0]["tid"])], flows[0]["ts"]) == "send_wait"
    assert _enclosing(slices[(f["pid"], f["tid"])], f["ts"]) == "running"


def test_write_chrome_writes_json(tmp_path: Path) -> None:
    k = pingpong_kernel(2)
    path = write_chrome(k, tmp_path / "t.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(to_chrome(k)))


def test_tracing_off_records_nothing_and_keeps_the_fast_path() -> None:
    k = Kernel()
    load_example("pingpong").build(k, 3)
    k.run()
    assert k.events == [] and k.fastpath
    assert not make_kernel().fastpath  # traced runs take the general path


# --- messages ---------------------------------------------------------------------------


def test_messages_parsed_from_transfers() -> None:
    assert parse_transfer("to pong: 1 words") == ("pong", 1, False)
    assert parse_transfer("to a: b: 3 words, items cut") == ("a: b", 3, True)
    assert parse_transfer("from x") is None
    k = pingpong_kernel(2)
    msgs = messages(k.events)
    assert [(m.sender, m.receiver, m.kind, m.words) for m in msgs] == [
        ("ping", "pong", "call", 1), ("pong", "ping", "reply", 1)] * 2
    assert all(k.events[m.at].event == "transfer" for m in msgs)


# --- Mermaid -------------------------------------------------------------------------------


def test_mermaid_pingpong_is_golden() -> None:
    text = to_mermaid(pingpong_kernel(3))
    assert text == (GOLDEN / "pingpong.mmd").read_text()


def test_mermaid_notes_and_markdown_file(tmp_path: Path) -> None:
    k = make_kernel()
    busy_server(k)
    k.run()
    text = to_mermaid(k)
    lines = text.splitlines()
    assert lines[:5] == ["sequenceDiagram", "    participant server", "    participant impatient",
                         "    participant patient", "    participant listener"]
    assert "    patient->>server: send(7, 8)" in lines
    assert "    Note over impatient: timeout" in lines
    assert "    Note over listener: canceled" in lines
    md = write_mermaid(k, tmp_path / "seq.md").read_text()
    assert md == f"```mermaid\n{text}```\n"
    assert write_mermaid(k, tmp_path / "seq.mmd").read_text() == text


def test_mermaid_aliases_names_that_are_not_identifiers() -> None:
    k = make_kernel()

    async def idle(t: Any) -> None:
        return None

    k.new_task("t").new_thread(idle, name="my thread; #1")
    k.run()
    lines = to_mermaid(k).splitlines()
    assert lines[1] == "    participant p1 as my thread   1"
    assert lines[2] == "    Note over p1: ends (returned)"


# --- text log ----------------------------------------------------------------------------


def test_text_log_has_a_line_per_event(tmp_path: Path) -> None:
    k = pingpong_kernel(3)
    text = to_text(k)
    lines = text.splitlines()
    assert len(lines) == len(k.events)
    for line, ev in zip(lines, k.events, strict=True):
        m = re.match(r"^\s*(\d+)  cpu(\d+)  (\S+)\s+(\S+)\s*(.*)$", line)
        assert m is not None, line
        # The text log names threads; the tid is not in it.
        assert (int(m[1]), int(m[2]), m[3], m[4], m[5]) == tuple(ev)[:5]
    assert "transfer   to pong: 1 words" in text
    assert write_text(k, tmp_path / "log.txt").read_text() == text


# --- command line ------------------------------------------------------------------------


def test_cli_run_writes_trace_and_mermaid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    example = str(ROOT / "examples" / "pingpong.py")
    result = CliRunner().invoke(main, ["run", example, "--trace", "out.json",
                                       "--mermaid", "out.md"])
    assert result.exit_code == 0, result.output
    assert "ui.perfetto.dev" in result.output
    doc = json.loads((tmp_path / "out.json").read_text())
    validate_chrome(doc)
    assert sum(e["ph"] == "s" for e in doc["traceEvents"]) == 2000  # 1000 round trips
    md = (tmp_path / "out.md").read_text()
    assert md.startswith("```mermaid\nsequenceDiagram\n    participant pong\n")
    # 2000 messages are too many for Mermaid: the default limit draws 300 and says so
    assert md.count("ping->>pong: call(") == 150 and md.count("pong-->>ping: reply(") == 150
    assert "Note over pong,ping: 1700 more messages and 1 notes cut by the limit of 300" in md


def test_cli_trace_log_still_prints_the_log(tmp_path: Path) -> None:
    system = tmp_path / "tiny.py"
    system.write_text((ROOT / "examples" / "pingpong.py").read_text().replace(
        "ROUNDS = 1000", "ROUNDS = 2"))
    result = CliRunner().invoke(main, ["run", str(system), "--trace-log"])
    assert result.exit_code == 0, result.output
    assert re.search(r"\d+  cpu0  ping\s+transfer\s+to pong: 1 words", result.output)


def test_readme_shows_the_pingpong_diagram_and_how_to_open_the_trace() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```mermaid\n(.*?)```", readme, re.S)
              if "participant pong" in b]
    assert len(blocks) == 1
    assert blocks[0] == to_mermaid(pingpong_kernel(2))
    assert "l4sim run examples/pingpong.py --trace out.json --mermaid out.md" in readme
    assert "https://ui.perfetto.dev" in readme


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "examples").glob("*.py")))
def test_every_example_exports_a_valid_trace(name: str) -> None:
    """Every example system (interrupts, exceptions, preemption, inheritance, ...) gives a
    well-formed Chrome trace and a Mermaid diagram with an arrow per message."""
    k = make_kernel()
    load_example(name).build(k)
    k.run()
    doc = to_chrome(k)
    slices = validate_chrome(doc)
    msgs = messages(k.events)
    assert sum(e["ph"] == "s" for e in doc["traceEvents"]) == len(msgs)
    # one CPU: one thread runs at a time
    running = sorted((s, e) for sl in slices.values() for n, s, e in sl if n == "running")
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(running))
    # every arrow binds: it leaves the sender running (or dequeued from its send_wait, or
    # passive while the receiver copied its long message) and lands on the receiver,
    # woken (ready) or dequeuing the sender (running)
    for e in doc["traceEvents"]:
        if e["ph"] in ("s", "f"):
            bound = _enclosing(slices[(e["pid"], e["tid"])], e["ts"])
            assert bound in ({"running", "send_wait", "ipc_transfer"} if e["ph"] == "s"
                             else {"running", "ready"}), (e, bound)
    diagram = to_mermaid(k, limit=None)
    assert diagram.startswith("sequenceDiagram\n")
    arrows = sum("->>" in line for line in diagram.splitlines())
    assert arrows == len(msgs) or (len(diagram) <= 45_000 and "cut by Mermaid's size limit" in diagram)
    assert len(to_mermaid(k)) <= 45_000
    assert len(to_text(k).splitlines()) == len(k.events)


def test_events_carry_the_thread_tid_as_names_need_not_be_unique() -> None:
    k = Kernel(check=True, trace=True)
    task = k.new_task("t")

    async def body(t: Any) -> None:
        await t.sleep(Timeout.cycles(100))

    a = task.new_thread(body, name="twin")
    b = task.new_thread(body, name="twin")
    k.run()
    tids = {e.tid for e in k.events if e.thread == "twin"}
    assert tids == {a.tid, b.tid}


def test_messages_with_items_and_failed_items_are_parsed() -> None:
    assert parse_transfer("to pager: 0 words, 1 items") == ("pager", 0, False)
    assert parse_transfer("to b: 2 words, items failed: SEMAPFAILED") == ("b", 2, True)
