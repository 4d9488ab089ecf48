"""The README's tutorial is a program; it must run and print what the README says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_tutorial_runs_and_prints_what_the_readme_says() -> None:
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None, "the README has a python tutorial block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), "README.md", "exec"), {})
    assert out.getvalue() == "done 6 10\n"
    assert "# done 6 10" in code.group(1)


def run_block(marker: str) -> tuple[str, list[str]]:
    """The README's python block that contains `marker`, and what it prints."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if marker in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return code, out.getvalue().splitlines()


def test_memory_example_runs_and_prints_what_the_readme_says() -> None:
    code, printed = run_block("MapItem")
    dump_lines = [line[2:] for line in code.splitlines() if line.startswith("# ")]
    assert printed == ["b'hello'", *dump_lines]
    assert "# b'hello'" in code and len(dump_lines) == 4


def test_long_ipc_example_runs_and_prints_what_the_readme_says() -> None:
    code, printed = run_block("StringItem")
    promised = [line[2:] for line in code.splitlines() if line.startswith("# ")]
    assert printed == promised and len(promised) == 4


def test_multiprocessor_example_runs_and_prints_what_the_readme_says() -> None:
    code, printed = run_block("t.migrate")
    promised = [line.split("# ", 1)[1].split(":")[0] for line in code.splitlines()
                if line.startswith("print(race")]
    assert printed == promised and len(promised) == 3
    assert printed[0] != printed[1]   # the seed decides the race; the replay follows it


def test_quick_start_test_command_is_what_ci_runs() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python3 -m pytest -q" in README.read_text()
    assert "python3 -m pytest -q" in ci


def test_explore_section_shows_what_the_explorer_prints() -> None:
    """The README's exploration of mutex_bug.py: the schedule, the replay command and
    the diagram's lines are what l4sim prints today."""
    import json
    import tempfile

    from click.testing import CliRunner

    from l4sim.cli import main

    text = README.read_text()
    section = text[text.index("## Finding a bug"):text.index("## Robustness")]
    root = README.parent
    runner = CliRunner()
    with contextlib.chdir(root):
        res = runner.invoke(main, ["explore", "examples/explore/mutex_bug.py", "--json"])
        assert res.exit_code == 1, res.output
        data = json.loads(res.output[res.output.index("{"):])
        assert data["shortest"]["schedule"] == "x p0 p0 p1 p0*6"
        assert f"  {data['replay']}\n" in section
        assert data["shortest"]["message"] in section
        with tempfile.TemporaryDirectory() as tmp:
            diagram = Path(tmp) / "out.md"
            res = runner.invoke(main, ["run", "examples/explore/mutex_bug.py", "--check",
                                       "--schedule", "x p0 p0 p1 p0*6",
                                       "--mermaid", str(diagram)])
            assert res.exit_code == 1 and "both in the critical section" in res.output
            drawn = diagram.read_text().splitlines()
    shown = re.search(r"```mermaid\n(.*?)```", section, re.S)
    assert shown is not None
    notes = [line for line in shown.group(1).splitlines() if "Note over" in line]
    at = drawn.index(notes[0])
    assert drawn[at:at + len(notes)] == notes
