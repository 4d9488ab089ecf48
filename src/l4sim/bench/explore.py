"""`l4sim bench explore`: how fast the explorer runs schedules, and what its reduction
saves.

The scenario (`explore_scenario.py`): ten threads, about a hundred IPCs per run. The
explorer runs every schedule with at most one preemption (each is a whole run from the
start: coroutines cannot be copied), serially and over worker processes, with the
kernel's invariant checking off and on. The reduction's saving is measured on a smaller
instance of the same scenario at a bound where sleep sets apply (two preemptions and
more): the schedules run with and without it, and the end states both reach.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from ..explore import explorer
from ..explore.pool import process_runner
from ..explore.scenario import Scenario, from_module
from . import explore_scenario

Say = Callable[[str], None]


def _scenario(check: bool) -> Scenario:
    sc = from_module(explore_scenario, explore_scenario.__file__ or "explore_scenario.py")
    sc.kernel_check = check
    return sc


def _rate(sc: Scenario, jobs: int, bound: int) -> dict[str, Any]:
    with process_runner(sc, jobs) as run:
        run([explorer.Task()])  # warm the workers (imports, the first kernel)
        started = time.perf_counter()
        report = explorer.bounded(sc, run, bound, keep_going=True)
        seconds = time.perf_counter() - started
    return {"schedules": report.schedules, "seconds": round(seconds, 3),
            "schedules_per_s": round(report.schedules / seconds, 1),
            "choice_points": report.choice_points, "failures": len(report.failures)}


def run_explore(jobs: int = 2, bound: int = 1, small: tuple[int, int] = (3, 2),
                small_bound: int = 3, say: Say | None = None) -> dict[str, Any]:
    """The figures of `l4sim bench explore --json`."""
    out: dict[str, Any] = {"scenario": {"threads": explore_scenario.CLIENTS + 1,
                                        "calls_per_client": explore_scenario.CALLS,
                                        "bound": bound}}
    for check in (False, True):
        label = "checked" if check else "unchecked"
        for j in (1, jobs):
            if say is not None:
                say(f"{label}, {j} job(s)")
            out[f"{label}_jobs{j}"] = _rate(_scenario(check), j, bound)
    unchecked = out["unchecked_jobs1"]["schedules_per_s"]
    out["checked_cost"] = round(unchecked / out["checked_jobs1"]["schedules_per_s"], 2)
    out[f"speedup_jobs{jobs}"] = round(out[f"unchecked_jobs{jobs}"]["schedules_per_s"]
                                       / unchecked, 2)
    if say is not None:
        say("the reduction")
    clients, calls = small
    sc = _scenario(False)
    sc.build = functools.partial(explore_scenario.build, clients=clients, calls=calls)
    sc.check = functools.partial(explore_scenario.check, clients=clients)
    run = explorer.serial_runner(sc)
    plain = explorer.bounded(sc, run, small_bound, reduce=False, keep_going=True)
    reduced = explorer.bounded(sc, run, small_bound, reduce=True, keep_going=True)
    out["reduction"] = {
        "threads": clients + 1, "calls_per_client": calls, "bound": small_bound,
        "schedules_plain": plain.schedules, "schedules_reduced": reduced.schedules,
        "saved": plain.schedules - reduced.schedules,
        "saved_fraction": round(1 - reduced.schedules / plain.schedules, 3),
        "end_states_plain": len(plain.states), "end_states_reduced": len(reduced.states),
        "same_end_states": plain.states == reduced.states}
    return out
