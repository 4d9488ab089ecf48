"""Running small POSIX-library systems in tests: checked kernels, one or two CPUs."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from l4sim import Kernel, RunResult, Thread
from l4sim.lib.boot import ALL_SERVERS, System
from l4sim.lib.framework import PosixError

Body = Callable[..., Coroutine[Any, Any, Any]]


def kernel(cpus: int = 1, **kw: Any) -> Kernel:
    """A checked kernel; with cpus > 1 the test is skipped while that raises."""
    kw.setdefault("check", True)
    try:
        return Kernel(cpus=cpus, **kw) if cpus != 1 else Kernel(**kw)
    except ValueError as exc:
        pytest.skip(f"Kernel(cpus={cpus}) is not available yet: {exc}")


def run(procs: Sequence[tuple[str, Body, tuple[Any, ...]]], servers: Sequence[str] = ALL_SERVERS,
        cpus: int = 1, pool: int = 16, priority: int = 150,
        **kw: Any) -> tuple[Kernel, RunResult, dict[str, Thread], System]:
    """One process per entry (name, body, args), each with one thread running
    body(t, env, *args); thread i runs on CPU i % cpus."""
    k = kernel(cpus, **kw)
    system = System(k, servers, pool=pool, priority=priority,
                    cpus=list(range(cpus)) if cpus > 1 else None)
    threads = {}
    for i, (name, body, args) in enumerate(procs):
        threads[name] = system.process(name).thread(body, *args, name=name, cpu=i % cpus)
    result = k.run()
    return k, result, threads, system


async def errno_of(op: Coroutine[Any, Any, Any]) -> int:
    """The errno the operation fails with (0 when it succeeds)."""
    try:
        await op
    except PosixError as exc:
        return exc.errno or -1
    return 0


CPUS = pytest.mark.parametrize("cpus", [1, 2])
