"""The `l4sim` command line (S21): demo, run, states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from l4sim.cli import main
from l4sim.demo import run_demo
from l4sim.kernel import states
from l4sim.trace.states_view import to_dot_slide


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


# --- demo --------------------------------------------------------------------------------


def test_demo_exits_zero_and_narrates() -> None:
    code, out = invoke("demo")
    assert code == 0, out
    for scene in range(1, 12):
        assert f"Scene {scene}" in out
    for word in ("RETIMEOUT", "SETIMEOUT", "RECANCELED", "SECANCELED", "ENOT_EXISTENT",
                 "reply_and_wait", "receive(cli)", "ex_regs", "delete(mbox)", "0x51",
                 "page-fault IPC", "(-2, 0x10002)", "b'hi'", "UTCB IPC",
                 "string_bytes): (OK, (8192,))", "b'hello'"):
        assert word in out, word
    assert re.search(r"all \d+ outcomes as L4 prescribes", out)
    assert "run ended: done" in out


def test_demo_checked_and_deterministic() -> None:
    texts = []
    for _ in range(2):
        console = Console(record=True, width=160, force_terminal=False)
        assert run_demo(console, check=True) == 0
        texts.append(console.export_text())
    assert texts[0] == texts[1]
    # The narration carries simulated times: the 3 µs send timeout of scene 4 ends
    # 3 µs after it began (in cycles of the 2663 MHz clock).
    lines = texts[0].splitlines()
    begin = next(ln for ln in lines if "send(srv, timeout 3 µs)" in ln)
    end = next(ln for ln in lines if "3 µs passed without a receiver" in ln)
    cycles = [int(ln.split("│")[2]) for ln in (begin, end)]
    assert cycles[1] - cycles[0] >= 3 * 2663
    assert cycles[1] - cycles[0] < 3 * 2663 + 1000


def test_demo_counts_and_reports_a_wrong_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_demo returns 1 when an outcome differs from what the SPEC says."""
    import l4sim.demo as demo

    orig = demo.Narrator.expect

    def wrong(self: demo.Narrator, t: object, what: str, got: object, want: object) -> None:
        if what == "ex_regs":
            want = "something else"
        orig(self, t, what, got, want)  # type: ignore[arg-type]

    monkeypatch.setattr(demo.Narrator, "expect", wrong)
    console = Console(record=True, width=160)
    assert run_demo(console) == 1
    assert "outcomes differ from what L4 prescribes" in console.export_text()


# --- states ------------------------------------------------------------------------------


def test_states_prints_the_declared_machine() -> None:
    code, out = invoke("states")
    assert code == 0, out
    assert out.strip() == states.to_text().strip()
    assert f"{len(states.STATES)} states, {len(states.TRANSITIONS)} transitions" in out
    for name in states.STATES:
        assert name in out


def test_states_dot_writes_a_valid_digraph(tmp_path: Path) -> None:
    dot = tmp_path / "ipc.dot"
    code, out = invoke("states", "--dot", str(dot))
    assert code == 0, out
    text = dot.read_text()
    assert text == to_dot_slide()
    assert text.startswith("digraph ")
    assert text.rstrip().endswith("}")
    assert text.count("{") == text.count("}") == 2  # the graph and the long-IPC cluster
    edges = re.findall(r"^\s+(\w+) -> (\w+) \[label=\"([^\"]*)\", tooltip=\"([^\"]*)\"", text, re.M)
    assert len(edges) == len(states.TRANSITIONS)
    assert {(states.state_name(t.old), states.state_name(t.new)) for t in states.TRANSITIONS} \
        == {(a, b) for a, b, _, _ in edges}
    # fits a slide: a few words per edge, the lecture's sentence kept as the tooltip
    assert all(0 < len(label) <= 20 for _, _, label, _ in edges)
    assert {why for _, _, _, why in edges} == {t.why.replace('"', "'") for t in states.TRANSITIONS}
    nodes = set(re.findall(r"^\s+(\w+) \[tooltip=", text, re.M))
    assert nodes == set(states.STATES)
    cluster = text[text.index("subgraph cluster_long_ipc"):]
    cluster = cluster[:cluster.index("}")]
    assert all(n in cluster for n in ("receive_in_progress", "ipc_transfer", "transfer_dying"))
    # every quoted string is closed on its line
    for line in text.splitlines():
        assert line.count('"') % 2 == 0, line


# --- run ---------------------------------------------------------------------------------

SYSTEM = '''
async def echo(t):
    r = await t.wait()
    while True:
        await t.reply(words=[r.words[0] * 3])
        r = await t.wait()

async def client(t, dest):
    r = await t.call(dest, words=[14])
    return r.words[0]

def build(k):
    s = k.new_task("s")
    e = s.new_thread(echo, name="echo")
    c = k.new_task("c")
    c.new_thread(client, c.add_cap(e), name="client")

def report(k, result):
    client = next(t for t in k.threads.values() if t.name == "client")
    print("CLIENT GOT", client.result)
    assert client.result == EXPECT
'''


def write_system(tmp_path: Path, expect: int, extra: str = "") -> Path:
    path = tmp_path / "system.py"
    path.write_text(SYSTEM + f"\nEXPECT = {expect}\n" + extra)
    return path


def test_run_builds_runs_and_reports(tmp_path: Path) -> None:
    code, out = invoke("run", str(write_system(tmp_path, 42)), "--check")
    assert code == 0, out
    assert "CLIENT GOT 42" in out
    assert re.search(r"reason\s*│\s*done", out)
    assert re.search(r"blocked\s*│\s*echo \(tid 1\): idle: waits for a message from anyone", out)
    assert re.search(r"died\s*│\s*none", out)


def test_run_fails_when_report_fails(tmp_path: Path) -> None:
    code, out = invoke("run", str(write_system(tmp_path, 41)))
    assert code != 0
    assert "CLIENT GOT 42" in out
    assert "report failed" in out and "AssertionError" in out


def test_run_fails_when_report_exits_nonzero(tmp_path: Path) -> None:
    extra = "\ndef report(k, result):\n    raise SystemExit(3)\n"
    code, _ = invoke("run", str(write_system(tmp_path, 42, extra)))
    assert code == 3


def test_run_without_report_and_with_trace_log(tmp_path: Path) -> None:
    path = tmp_path / "noreport.py"
    path.write_text(SYSTEM.split("def report")[0])
    code, out = invoke("run", str(path), "--trace-log", "--seed", "7")
    assert code == 0, out
    assert "transfer" in out and "client" in out and "echo" in out
    assert "receive_wait" in out


def test_run_shows_deadlock_and_died(tmp_path: Path) -> None:
    path = tmp_path / "dead.py"
    path.write_text('''
from l4sim import Timeout

async def a(t, b):
    await t.call(b, words=[1])        # deaf never receives: a deadlocks in its send phase

async def deaf(t):
    await t.sleep(Timeout.never())

async def b(t):
    raise RuntimeError("boom")

def build(k):
    ta = k.new_task("ta")
    tb = k.new_task("tb")
    d = tb.new_thread(deaf, name="deaf")
    tb.new_thread(b, name="b")
    ta.new_thread(a, ta.add_cap(d), name="a")
''')
    code, out = invoke("run", str(path), "--check")
    assert code == 0, out                  # no report: the run itself is the outcome
    assert re.search(r"reason\s*│\s*deadlock", out)
    assert re.search(r"blocked\s*│\s*deaf \(tid 1\): sleeps with no end", out)
    assert re.search(r"a \(tid 3\): waits to send to deaf", out)
    assert re.search(r"wait-for\s*│\s*a → deaf \(deaf sleeps with no end", out)
    assert re.search(r"died\s*│\s*b \(tid 2\): RuntimeError: boom", out)


def test_run_rejects_a_file_without_build(tmp_path: Path) -> None:
    path = tmp_path / "nobuild.py"
    path.write_text("x = 1\n")
    code, out = invoke("run", str(path))
    assert code != 0  # a plain script, but one that runs no kernel: surely a mistake
    assert "ran no kernel" in out and "build(k)" in out


def test_run_rejects_bad_kernel_options(tmp_path: Path) -> None:
    code, out = invoke("run", str(write_system(tmp_path, 42)), "--cpus", "0")
    assert code == 2                      # a usage error, not a traceback
    assert "Error:" in out and "Traceback" not in out


def test_run_missing_file(tmp_path: Path) -> None:
    code, _ = invoke("run", str(tmp_path / "absent.py"))
    assert code == 2


def test_help_lists_commands() -> None:
    code, out = invoke("--help")
    assert code == 0
    for cmd in ("demo", "run", "states"):
        assert cmd in out


def test_demo_writes_its_trace_and_sequence_diagram(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    out_json, out_md = tmp_path / "demo.json", tmp_path / "demo.md"
    result = CliRunner().invoke(main, ["demo", "--trace", str(out_json), "--mermaid", str(out_md)])
    assert result.exit_code == 0, result.output
    events = json.loads(out_json.read_text())["traceEvents"]
    assert {e["ph"] for e in events} >= {"B", "E", "s", "f", "M"}
    thread_names = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert {"srv", "cli", "drv", "handler", "emu"} <= thread_names
    diagram = out_md.read_text()
    assert "sequenceDiagram" in diagram and "drv" in diagram
