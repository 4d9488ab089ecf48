"""The POSIX example systems (examples/posix/*.py): each built on a checked kernel, run,
and its own report's assertions checked; and each run through `l4sim run`."""

from __future__ import annotations

import importlib.util
import io
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from l4sim import Kernel
from l4sim.cli import main

POSIX = Path(__file__).resolve().parents[1] / "examples" / "posix"
NAMES = sorted(p.stem for p in POSIX.glob("*.py"))


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"posix_example_{name}", POSIX / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_primitive_has_an_example() -> None:
    assert NAMES == ["mqueue", "mutex", "pipe", "semaphore", "shm", "signals"]


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_checked_and_passes_its_report(name: str) -> None:
    module = load(name)
    k = Kernel(check=True)
    module.build(k)
    result = k.run()
    out = io.StringIO()
    with redirect_stdout(out):
        module.report(k, result)       # raises if the outcome is not the expected one
    assert out.getvalue().strip()


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_through_the_cli(name: str) -> None:
    result = CliRunner().invoke(main, ["run", str(POSIX / f"{name}.py"), "--check"])
    assert result.exit_code == 0, result.output
    assert "done" in result.output


def test_examples_are_deterministic() -> None:
    module = load("pipe")
    times = []
    for _ in range(2):
        k = Kernel(check=True)
        module.build(k)
        times.append((k.run().now, dict(k.example)))  # type: ignore[attr-defined]
    assert times[0] == times[1]
