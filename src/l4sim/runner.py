"""What `l4sim run FILE` does with a file: load it, run its kernels within bounds, show
progress on a terminal, and collect what to report.

A FILE may be
- a system: it defines `build(k)` (and optionally `report(k, result)`); `l4sim run`
  makes the kernel, builds and runs it. It may state its own bound with module-level
  `UNTIL` (a time: `"2ms"`, `"500us"`, `"1000000cycles"`, or an int of cycles) and
  `MAX_STEPS`, and name its message labels for the diagrams with `LABELS = {1: "PUT"}`;
- any script that makes and runs kernels itself (as with `python FILE`): it runs as
  `__main__`, and every `Kernel` it makes gets the command line's options (tracing,
  checks, the bounds); each `k.run()` it calls is reported.

Either way the file's folder is on `sys.path` (a sibling module imports), and a run
ends at the earlier of the file's bound and the command line's (`--until`,
`--max-steps`), so that a program whose threads loop forever ends.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .kernel import Kernel, RunResult, Timeout

_TIME = re.compile(r"^\s*(?P<n>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>cycles?|ns|us|µs|ms|s)?\s*$")
_US_PER = {"ns": 0.001, "us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_time(text: str | int, mhz: int) -> int:
    """A point in simulated time in cycles: `"2ms"`, `"500us"`, `"1000000cycles"`,
    `"1000000"` (cycles), or an int (cycles). Raises ValueError with the accepted forms."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a time must not be negative, got {text}")
        return text
    m = _TIME.match(str(text))
    if m is None:
        raise ValueError(f"{text!r} is not a time: write e.g. 2ms, 500us, 1000000cycles "
                         "(a bare number is cycles)")
    n, unit = float(m.group("n")), m.group("unit") or "cycles"
    if unit.startswith("cycle"):
        if n != int(n):
            raise ValueError(f"{text!r}: a number of cycles is whole")
        return int(n)
    return round(n * _US_PER[unit] * mhz)


def defines_build(path: Path) -> bool:
    """Does FILE define `build` at its top level (a system), or is it a plain script?"""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "build":
            return True
        if isinstance(node, (ast.Assign, ast.ImportFrom)):
            names = ([t.id for t in node.targets if isinstance(t, ast.Name)]
                     if isinstance(node, ast.Assign) else [a.asname or a.name for a in node.names])
            if "build" in names:
                return True
    return False


@contextlib.contextmanager
def on_sys_path(folder: Path) -> Iterator[None]:
    """The file's folder first on sys.path while it loads and runs, as `python FILE` does."""
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def load_module(path: Path) -> ModuleType:
    """Import FILE as a module (its `if __name__ == "__main__"` block does not run)."""
    name = "l4sim_system_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


@dataclass
class Options:
    """The command line's options for every kernel of a run."""

    seed: int = 0
    cpus: int | None = None               # None: the file's CPUS, else 1
    schedule: str | None = None           # a recorded schedule to replay
    check: bool = False
    trace: bool = False
    until: str | int | None = None       # a time (see parse_time)
    max_steps: int | None = None
    progress: Callable[[Kernel], None] | None = None  # called between slices of a run


@dataclass
class Outcome:
    """The kernels a file ran and what each run returned, in order."""

    runs: list[tuple[Kernel, RunResult]] = field(default_factory=list)
    module: ModuleType | None = None


def _earlier(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def run_kernel(k: Kernel, run: Callable[..., RunResult], until: int | None,
               max_steps: int | None, progress: Callable[[Kernel], None] | None) -> RunResult:
    """`k.run(until, max_steps)`; with `progress`, in slices of simulated time (each one
    `run(until=...)`, which goes on exactly where the last one stopped), calling
    `progress(k)` between them. The slices grow while they take little wall time."""
    if progress is None:
        return run(k, until=until, max_steps=max_steps)
    first_entry = k.entries
    chunk = k.us(100)
    while True:
        end = k.now + chunk if until is None else min(until, k.now + chunk)
        steps = None if max_steps is None else max_steps - (k.entries - first_entry)
        if steps is not None and steps <= 0:
            return k._result("steps")
        started = time.perf_counter()
        res = run(k, until=end, max_steps=steps)
        took = time.perf_counter() - started
        progress(k)
        if res.reason != "until" or (until is not None and k.now >= until):
            return res
        if took < 0.05:
            chunk *= 2
        elif took > 0.5 and chunk > 1000:
            chunk //= 2


def _bounds(k: Kernel, opts: Options, module: ModuleType | None,
            until: int | Timeout | None, max_steps: int | None) -> tuple[int | None, int | None]:
    """The earlier of the file's bound (its run() arguments or UNTIL/MAX_STEPS) and the
    command line's, as a time in cycles and a number of kernel entries from now."""
    own_until: int | None = None
    if isinstance(until, Timeout):
        own_until = until.deadline(k.now, k.mhz)
    elif until is not None:
        own_until = until
    if module is not None and getattr(module, "UNTIL", None) is not None and until is None:
        own_until = parse_time(module.UNTIL, k.mhz)
    own_steps = max_steps
    if module is not None and getattr(module, "MAX_STEPS", None) is not None and max_steps is None:
        own_steps = int(module.MAX_STEPS)
    cli_until = parse_time(opts.until, k.mhz) if opts.until is not None else None
    return _earlier(own_until, cli_until), _earlier(own_steps, opts.max_steps)


def run_system(module: ModuleType, opts: Options) -> Outcome:
    """A file with build(k): make the kernel with the options, build, run within bounds."""
    cpus = opts.cpus if opts.cpus is not None else int(getattr(module, "CPUS", 1))
    k = Kernel(cpus=cpus, seed=opts.seed, check=opts.check, trace=opts.trace,
               schedule=opts.schedule)
    module.build(k)
    until, steps = _bounds(k, opts, module, None, None)
    res = run_kernel(k, Kernel.run, until, steps, opts.progress)
    return Outcome([(k, res)], module)


def run_script(path: Path, opts: Options) -> Outcome:
    """A plain script: run it as `__main__`; every Kernel it makes takes the options, and
    every run it does is bounded and recorded."""
    import runpy

    out = Outcome()
    real_init, real_run = Kernel.__init__, Kernel.run

    def init(self: Kernel, *args: Any, **kw: Any) -> None:
        kw.setdefault("seed", opts.seed)
        kw.setdefault("cpus", opts.cpus if opts.cpus is not None else 1)
        if opts.schedule is not None:
            kw["schedule"] = opts.schedule
        if opts.trace:
            kw["trace"] = True
        if opts.check:
            kw["check"] = True
        real_init(self, *args, **kw)

    def run(self: Kernel, until: int | Timeout | None = None,
            max_steps: int | None = None) -> RunResult:
        u, s = _bounds(self, opts, None, until, max_steps)
        res = run_kernel(self, real_run, u, s, opts.progress)
        out.runs.append((self, res))
        return res

    Kernel.__init__ = init  # type: ignore[method-assign]
    Kernel.run = run  # type: ignore[method-assign]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        Kernel.__init__ = real_init  # type: ignore[method-assign]
        Kernel.run = real_run  # type: ignore[method-assign]
    return out


def run_file(path: Path, opts: Options) -> Outcome:
    """Load and run FILE (a system with build(k), or any script) with its folder on
    sys.path."""
    with on_sys_path(path.parent):
        if defines_build(path):
            module = load_module(path)
            if callable(getattr(module, "build", None)):
                return run_system(module, opts)
        return run_script(path, opts)
