"""Where the explorer's runs happen: in this process, in local worker processes
(`--jobs N`), or on a Ray cluster (`--ray`, the optional extra `l4sim[ray]`).

Every worker loads the scenario once from its source text (so a Ray worker on another
machine needs no copy of the file) and runs the tasks it is given; a batch's records
come back in the batch's order, so the explorer's report does not depend on how many
workers ran it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

from .explorer import Runner, Task, run_task, serial_runner
from .runs import RunRecord
from .scenario import Scenario, from_module


@dataclass(frozen=True)
class Source:
    """A scenario as text, with the option values that override the file's."""

    path: str
    text: str
    overrides: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, sc: Scenario) -> Source:
        text = Path(sc.path).read_text(encoding="utf-8")
        keep = ("cpus", "bound", "delay_bound", "pct_depth", "runs", "until", "max_steps",
                "deadlock_ok", "deaths_ok", "kernel_check")
        return cls(sc.path, text, tuple((f.name, getattr(sc, f.name)) for f in fields(sc)
                                        if f.name in keep))

    def load(self) -> Scenario:
        """The scenario, in this process (the file's folder on sys.path if it exists
        here, so that its sibling modules import)."""
        name = "l4sim_scenario_" + "".join(c if c.isalnum() else "_" for c in Path(self.path).stem)
        module = ModuleType(name)
        module.__file__ = self.path
        sys.modules[name] = module
        folder = str(Path(self.path).resolve().parent)
        added = Path(folder).is_dir() and folder not in sys.path
        if added:
            sys.path.insert(0, folder)
        exec(compile(self.text, self.path, "exec"), module.__dict__)
        sc = from_module(module, self.path)
        for attr, value in self.overrides:
            setattr(sc, attr, value)
        return sc


_WORKER: Scenario | None = None


def _init_worker(source: Source) -> None:
    global _WORKER
    _WORKER = source.load()


def _run_chunk(tasks: list[Task]) -> list[RunRecord]:
    assert _WORKER is not None
    return [run_task(_WORKER, t) for t in tasks]


@contextlib.contextmanager
def process_runner(sc: Scenario, jobs: int) -> Iterator[Runner]:
    """A runner over `jobs` local processes (the batch in `jobs` interleaved chunks)."""
    if jobs <= 1:
        yield serial_runner(sc)
        return
    with ProcessPoolExecutor(jobs, initializer=_init_worker,
                             initargs=(Source.of(sc),)) as pool:
        def run(tasks: list[Task]) -> list[RunRecord]:
            futures = [pool.submit(_run_chunk, tasks[i::jobs]) for i in range(jobs)]
            return _interleave([f.result() for f in futures], jobs)
        yield run


def _interleave(chunks: list[list[RunRecord]], jobs: int) -> list[RunRecord]:
    """Put the records of interleaved chunks (`tasks[i::jobs]`) back in the batch's
    order."""
    out: list[RunRecord | None] = [None] * sum(map(len, chunks))
    for i, chunk in enumerate(chunks):
        out[i::jobs] = chunk
    return [r for r in out if r is not None]


@contextlib.contextmanager
def ray_runner(sc: Scenario, address: str | None, jobs: int) -> Iterator[Runner]:
    """A runner over Ray actors, each holding the loaded scenario (`address`: an existing
    cluster's, or None for a local Ray instance)."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--ray needs Ray: pip install 'l4sim[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        actor: Any = ray.remote(_RayWorker)
        n = max(jobs, 1)
        workers: list[Any] = [actor.remote(Source.of(sc)) for _ in range(n)]

        def run(tasks: list[Task]) -> list[RunRecord]:
            refs = [w.run.remote(tasks[i::n]) for i, w in enumerate(workers)]
            return _interleave(ray.get(refs), n)
        yield run
    finally:
        if started:
            ray.shutdown()


class _RayWorker:
    """One Ray actor: the scenario loaded once, then batches of tasks."""

    def __init__(self, source: Source) -> None:
        self.scenario = source.load()

    def run(self, tasks: list[Task]) -> list[RunRecord]:
        return [run_task(self.scenario, t) for t in tasks]
