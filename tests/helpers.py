"""Shared helpers for the kernel-core tests: checked kernels, trace filters, snapshots.

Every kernel a test builds runs with `check=True` (the S19 invariants after every kernel
operation). Times are simulated cycles only, never wall-clock.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from l4sim import Kernel, Thread

# Fiasco's IPC operation flags (FIASCO_FACTS.md): the raw ABI `t.ipc(dest, tag, flags, ...)`.
SEND, RECEIVE, OPEN_WAIT, REPLY = 1, 2, 4, 8
CALL, WAIT, SEND_AND_WAIT, REPLY_AND_WAIT = 3, 6, 7, 15


def make_kernel(**kw: Any) -> Kernel:
    """A kernel as every test uses it: invariants checked, events traced."""
    kw.setdefault("check", True)
    kw.setdefault("trace", True)
    return Kernel(**kw)


def ipc_cost(k: Kernel, words: int = 0) -> int:
    """Cycles one IPC kernel entry charges (entry/exit and the IPC path)."""
    return k.costs.ipc_cost(words)


def switch_cost(k: Kernel, same_space: bool) -> int:
    """Cycles of a thread switch, plus the address-space switch between tasks."""
    c = k.costs
    return c.thread_switch if same_space else c.thread_switch + c.space_switch


def trace(k: Kernel, *kinds: str, threads: tuple[str, ...] | None = None) -> list[tuple[int, str, str, str]]:
    """(time, thread, event, detail) of the recorded events of the given kinds."""
    return [(e.time, e.thread, e.event, e.detail) for e in k.events
            if (not kinds or e.event in kinds) and (threads is None or e.thread in threads)]


def states(k: Kernel, *names: str) -> list[tuple[str, str]]:
    """(thread, state) for every state change of the named threads (all if none), in order."""
    return [(e.thread, e.detail) for e in k.events
            if e.event == "state" and (not names or e.thread in names)]


def timed_states(k: Kernel, name: str) -> list[tuple[int, str]]:
    """(time, state) of every state change of one thread."""
    return [(e.time, e.detail) for e in k.events if e.event == "state" and e.thread == name]


def when(k: Kernel, name: str, event: str, detail: str | None = None, nth: int = 0) -> int:
    """Simulated time of the nth event `event` (with `detail`, if given) of thread `name`."""
    hits = [e.time for e in k.events
            if e.thread == name and e.event == event and (detail is None or e.detail == detail)]
    assert len(hits) > nth, f"no {event} {detail or ''} #{nth} of {name} in {k.events}"
    return hits[nth]


def timeouts(k: Kernel) -> list[tuple[int, str]]:
    """(time, thread) of every timeout that fired."""
    return [(e.time, e.thread) for e in k.events if e.event == "timeout"]


def snapshot(k: Kernel) -> dict[str, Any]:
    """The kernel state an operation must leave unchanged if it fails before doing anything:
    every thread's state word, partner, sender queue, reply capability, priority and timer,
    the gates' bindings and every task's capability table."""
    def name(t: Thread | None) -> str | None:
        return None if t is None else t.name

    threads = {}
    for th in k.threads.values():
        threads[th.name] = (
            th.state,
            name(th.partner),
            [s.name for s in th.sendq] if th.sendq else [],
            name(th.reply_caller),
            th.prio,
            None if th.timer is None else th.timer[0],
        )
    tasks = {task.name: [None if c is None else (id(c.obj), int(c.rights)) for c in task.caps]
             for task in k.tasks}
    gates = [(g.name, name(g.thread)) for g in k.gates]
    return {"threads": threads, "tasks": tasks, "gates": gates}


def caps_naming(k: Kernel, obj: object) -> list[tuple[str, int]]:
    """Every (task, selector) whose capability names `obj`."""
    return [(task.name, sel) for task in k.tasks for sel, cap in enumerate(task.caps)
            if cap is not None and cap.obj is obj]


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import examples/NAME.py as a module (its `__main__` block does not run)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"l4sim_example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def thread_named(k: Kernel, name: str) -> Thread:
    return next(th for th in k.threads.values() if th.name == name)


def run_until_the_copy(k: Kernel, slice_cycles: int = 20_000) -> int:
    """Run `k` in slices of simulated time until a long IPC's copy has begun (it must be
    traced); the copy's start time."""
    for _ in range(10_000):
        k.run(until=k.now + slice_cycles)
        starts = [e.time for e in k.events if e.event == "transfer" and "long IPC" in e.detail]
        if starts:
            return starts[0]
    raise AssertionError("the copy never began")
