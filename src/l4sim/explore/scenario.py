"""A scenario for `l4sim explore`: a system, what must hold at its end, and its options.

A scenario file defines
- `build(k)`: the system, as for `l4sim run` (tasks, threads, capabilities);
- `check(k, result)` (optional): assertions on the end state; an `AssertionError` (or
  any exception) is a failure;
- options at module level, each also on the command line, which wins: `CPUS` (1),
  `BOUND` (the preemption bound, 2), `DELAY_BOUND`, `PCT_DEPTH` (3), `RUNS` (PCT runs,
  1000), `UNTIL` and `MAX_STEPS` (where one run ends: a bound on a livelock), and what
  else counts as a failure: a deadlock (`DEADLOCK_OK = False`) and a thread that dies
  (`DEATHS_OK = False`: an assertion in a thread body kills the thread, which fails).
- `EXPECT` (optional, "bug" or "clean"): what its author expects the explorer to find;
  the examples' tests read it.

Every run of a scenario builds a fresh kernel with `check=True` (every kernel invariant
after every operation; a violation is a failure) and the explorer's chooser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..kernel import Kernel, RunResult
from ..runner import load_module, on_sys_path, parse_time


@dataclass
class Scenario:
    """A loaded scenario: its functions and its options."""

    path: str
    build: Callable[[Kernel], Any]
    check: Callable[[Kernel, RunResult], Any] | None = None
    cpus: int = 1
    bound: int = 2
    delay_bound: int | None = None
    pct_depth: int = 3
    runs: int = 1000
    until: str | int | None = None
    max_steps: int | None = 200_000
    deadlock_ok: bool = False
    deaths_ok: bool = False
    expect: str | None = None
    kernel_check: bool = True

    def bounds(self, k: Kernel) -> tuple[int | None, int | None]:
        """Where one run ends: (time in cycles, kernel entries)."""
        until = parse_time(self.until, k.mhz) if self.until is not None else None
        return until, self.max_steps


_OPTIONS = {"CPUS": "cpus", "BOUND": "bound", "DELAY_BOUND": "delay_bound",
            "PCT_DEPTH": "pct_depth", "RUNS": "runs", "UNTIL": "until",
            "MAX_STEPS": "max_steps", "DEADLOCK_OK": "deadlock_ok",
            "DEATHS_OK": "deaths_ok", "EXPECT": "expect"}


def from_module(module: ModuleType, path: str) -> Scenario:
    """The scenario a module defines."""
    build = getattr(module, "build", None)
    if not callable(build):
        raise ValueError(f"{path}: a scenario defines build(k)")
    check = getattr(module, "check", None)
    if check is not None and not callable(check):
        raise ValueError(f"{path}: check must be a function check(k, result)")
    sc = Scenario(path=path, build=build, check=check)
    for name, attr in _OPTIONS.items():
        if hasattr(module, name):
            setattr(sc, attr, getattr(module, name))
    if sc.expect not in (None, "bug", "clean"):
        raise ValueError(f"{path}: EXPECT is 'bug' or 'clean', got {sc.expect!r}")
    return sc


def load(path: str | Path) -> Scenario:
    """Load a scenario file (its folder is on sys.path while it loads, so a sibling
    module imports)."""
    p = Path(path)
    with on_sys_path(p.parent):
        module = load_module(p)
    return from_module(module, str(p))
