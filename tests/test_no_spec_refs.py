"""No user-facing text names the internal specification's sections ("S13", "SPEC
S21"): not the package's sources (docstrings, messages, --help), the README, the pages
of docs/, the examples, the demo's output or a trace's metadata. Plain words instead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from l4sim import Kernel
from l4sim.cli import main
from l4sim.demo import run_demo
from l4sim.trace import to_chrome

ROOT = Path(__file__).resolve().parents[1]
PATTERN = re.compile(r"\bS([1-9]|1[0-9]|2[0-2])\b|\bSPEC\b")
VENDORED = {"echarts.l4sim.min.js"}  # third-party minified code: its identifiers are not text


def _hits(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if PATTERN.search(line)]


def _files() -> list[Path]:
    pkg = ROOT / "src" / "l4sim"
    files = [p for p in pkg.rglob("*") if p.suffix in (".py", ".js", ".css", ".md", ".txt")
             and p.name not in VENDORED and "LICENSE" not in p.name and "NOTICE" not in p.name]
    files += [ROOT / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    # The examples are read and run by users too (their docstrings say what each shows).
    files += sorted(p for p in (ROOT / "examples").rglob("*") if p.suffix in (".py", ".md"))
    return files


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_section_reference_in(path: Path) -> None:
    assert _hits(path.read_text(encoding="utf-8")) == []


def test_no_section_reference_in_help() -> None:
    runner = CliRunner()
    commands = [[], ["run"], ["demo"], ["states"], ["bench"]]
    bench = main.commands.get("bench")
    if bench is not None:
        commands += [["bench", name] for name in bench.commands]  # type: ignore[attr-defined]
    commands += [[name] for name in main.commands if [name] not in commands]
    for args in commands:
        out = runner.invoke(main, [*args, "--help"]).output
        assert _hits(out) == [], args


def test_no_section_reference_in_the_demo_and_trace_metadata() -> None:
    console = Console(record=True, width=200)
    assert run_demo(console) == 0
    text = console.export_text()
    assert _hits(text) == []
    assert "as L4 prescribes" in text.splitlines()[-1]
    k = Kernel(trace=True)
    k.run()
    assert _hits(json.dumps(to_chrome(k)["otherData"])) == []
