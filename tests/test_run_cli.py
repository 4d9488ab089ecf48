"""`l4sim run` as a new user meets it: any script, its sibling modules, runs that end
under --until (with units) or the file's own bound, tracebacks and forgotten awaits in
the report, the HTML report, progress only on a terminal."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import load_example
from l4sim import Kernel
from l4sim.cli import main
from l4sim.runner import parse_time, run_kernel

SPIN = """
async def spin(t):
    while True:                       # never ends, never blocks
        await t.compute(10_000)
"""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_parse_time_units() -> None:
    assert parse_time("2ms", 1000) == 2_000_000
    assert parse_time("500us", 2663) == 500 * 2663
    assert parse_time("500µs", 2663) == 500 * 2663
    assert parse_time("1000000cycles", 2663) == 1_000_000
    assert parse_time("1000000", 2663) == 1_000_000
    assert parse_time("1.5 ms", 1000) == 1_500_000
    with pytest.raises(ValueError, match="2ms, 500us, 1000000cycles"):
        parse_time("soon", 1000)


@pytest.mark.parametrize("until, cycles", [("2ms", 2000 * 2663), ("500us", 500 * 2663),
                                           ("1000000cycles", 1_000_000)])
def test_a_never_ending_system_ends_under_until(tmp_path: Path, until: str, cycles: int) -> None:
    path = write(tmp_path, "spin.py", SPIN + """
def build(k):
    k.new_task("a").new_thread(spin, name="spin")
""")
    code, out = invoke("run", str(path), "--until", until)
    assert code == 0, out
    assert re.search(r"reason\s*│\s*until", out)
    assert f"now            │ {cycles} cycles" in out


def test_the_files_own_bound_holds_and_the_earlier_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "spin.py", SPIN + """
UNTIL = "300us"

def build(k):
    k.new_task("a").new_thread(spin, name="spin")
""")
    code, out = invoke("run", str(path))
    assert code == 0 and f"│ {300 * 2663} cycles" in out, out
    code, out = invoke("run", str(path), "--until", "100us")  # the command line's is earlier
    assert code == 0 and f"│ {100 * 2663} cycles" in out, out
    code, out = invoke("run", str(path), "--until", "1ms")    # the file's is earlier
    assert code == 0 and f"│ {300 * 2663} cycles" in out, out


def test_a_never_ending_system_ends_under_max_steps(tmp_path: Path) -> None:
    path = write(tmp_path, "spin.py", SPIN + """
def build(k):
    k.new_task("a").new_thread(spin, name="spin")
""")
    code, out = invoke("run", str(path), "--max-steps", "100")
    assert code == 0, out
    assert re.search(r"reason\s*│\s*steps", out) and re.search(r"kernel entries\s*│\s*100\b", out)


def test_a_plain_script_runs_and_each_of_its_runs_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "script.py", """
    from l4sim import Kernel

    async def hello(t):
        return 42

    for n in range(2):
        k = Kernel(check=True)
        th = k.new_task("a").new_thread(hello, name=f"hello{n}")
        print("RESULT", k.run().reason, th.result)
    """)
    code, out = invoke("run", str(path))
    assert code == 0, out
    assert out.count("RESULT done 42") == 2
    assert "kernel run 1 of 2" in out and "kernel run 2 of 2" in out


def test_a_plain_script_that_loops_forever_ends_under_until(tmp_path: Path) -> None:
    path = write(tmp_path, "script.py", SPIN + """
from l4sim import Kernel
k = Kernel()
k.new_task("a").new_thread(spin, name="spin")
print("ENDED", k.run().reason)
""")
    code, out = invoke("run", str(path), "--until", "1ms")
    assert code == 0, out
    assert "ENDED until" in out


def test_a_file_importing_a_sibling_module(tmp_path: Path) -> None:
    write(tmp_path, "proto.py", """
    ADD = 7

    async def server(t):
        r = await t.wait()
        while True:
            r = await t.reply_and_wait(words=[r.words[0] + ADD])
    """)
    path = write(tmp_path, "system.py", """
    from proto import server

    async def client(t, srv):
        r = await t.call(srv, words=[1])
        return r.words[0]

    def build(k):
        s = k.new_task("s").new_thread(server, name="srv")
        c = k.new_task("c")
        c.new_thread(client, c.add_cap(s), name="cli")

    def report(k, result):
        print("CLIENT", [t.result for t in k.threads.values() if t.name == "cli"][0])
    """)
    code, out = invoke("run", str(path))
    assert code == 0, out
    assert "CLIENT 8" in out


def test_run_shows_the_traceback_and_the_forgotten_await(tmp_path: Path) -> None:
    path = write(tmp_path, "oops.py", """
    async def bad(t):
        await t.compute(5)
        return {}["missing"]

    async def forgetful(t):
        t.sleep(Timeout.us(1))
        return 1

    from l4sim import Timeout

    def build(k):
        k.new_task("a").new_thread(bad, name="bad")
        k.new_task("b").new_thread(forgetful, name="forgetful")
    """)
    code, out = invoke("run", str(path))
    assert code == 0, out
    assert f'File "{path}", line 4, in bad' in out and 'return {}["missing"]' in out
    assert "KeyError: 'missing'" in out
    assert f"warning: {path}:7: t.sleep(...) was never awaited in thread forgetful" in out
    assert "did you forget `await`?" in out


def test_a_script_that_fails_itself_shows_where(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", """
    from l4sim import Kernel
    k = Kernel()
    k.no_such_thing()
    """)
    code, out = invoke("run", str(path))
    assert code == 1
    assert f'File "{path}", line 4' in out and "AttributeError" in out


def test_bad_until_is_a_usage_error(tmp_path: Path) -> None:
    code, out = invoke("run", str(write(tmp_path, "x.py", "def build(k): pass\n")), "--until", "soon")
    assert code == 2 and "2ms, 500us, 1000000cycles" in out and "Traceback" not in out


def test_run_html_and_mermaid_limit(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "pingpong.py"
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    code, out = invoke("run", str(example), "--html", str(html), "--mermaid", str(md),
                       "--mermaid-limit", "10")
    assert code == 0, out
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "window.L4SIM" in page
    fetches = re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=", page)
    assert fetches is None  # nothing is loaded from elsewhere
    text = md.read_text()
    assert text.count("->>") == 10 and "1990 more messages" in text


def test_progress_slices_change_nothing_and_are_reported() -> None:
    """On a terminal the run goes in slices of simulated time with a progress line
    between them; the outcome is the same as in one piece."""
    plain = Kernel()
    load_example("pingpong").build(plain, rounds=300)
    want = plain.run()
    sliced = Kernel()
    load_example("pingpong").build(sliced, rounds=300)
    seen: list[int] = []
    got = run_kernel(sliced, Kernel.run, None, None, lambda k: seen.append(k.now))
    assert (got.reason, got.now, got.steps) == (want.reason, want.now, want.steps)
    assert len(seen) > 1 and seen == sorted(seen)
    assert [t.result for t in sliced.threads.values()] == [t.result for t in plain.threads.values()]


def test_no_progress_when_not_a_terminal(tmp_path: Path) -> None:
    path = write(tmp_path, "spin.py", SPIN + """
def build(k):
    k.new_task("a").new_thread(spin, name="spin")
""")
    code, out = invoke("run", str(path), "--until", "1ms")
    assert code == 0 and "simulated" not in out and "kernel entries ·" not in out


README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", README.read_text()))))
def test_every_readme_snippet_runs_under_l4sim_run(tmp_path: Path, index: int) -> None:
    """The README's snippets are plain scripts: `l4sim run` runs each as `python` would."""
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[index]
    path = tmp_path / f"snippet{index}.py"
    path.write_text(code)
    exit_code, out = invoke("run", str(path), "--until", "100ms")
    assert exit_code == 0, out
    assert "run result" in out and "defines no build" not in out


def test_progress_line_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    import l4sim.cli as cli

    buf = io.StringIO()
    monkeypatch.setattr(cli, "_console", lambda: Console(file=buf, force_terminal=True, width=120))
    path = write(tmp_path, "spin.py", SPIN + """
def build(k):
    k.new_task("a").new_thread(spin, name="spin")
""")
    code, _ = invoke("run", str(path), "--until", "5ms")
    assert code == 0
    assert "simulated 5,000.0 µs" in buf.getvalue() and "events recorded" in buf.getvalue()


def test_demo_html(tmp_path: Path) -> None:
    page = tmp_path / "demo.html"
    code, out = invoke("demo", "--html", str(page))
    assert code == 0, out
    assert "run report:" in out and page.stat().st_size > 100_000
    assert "l4sim demo" in page.read_text()[:2000]
