"""The explorer's corpus (examples/explore/): every planted bug is found within the
bound its file states and its failing schedule replays to the same failure; every
correct twin is explored to the same bound without a failure, in exactly the number of
schedules written here (the exploration is deterministic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from l4sim import Kernel
from l4sim.explore import explorer, scenario
from l4sim.explore.runs import judge, run_once
from l4sim.kernel import Schedule

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "explore"

# stem: (the bug's schedules up to the batch that found it, the twin's schedules at
# the bound). Every bug needs one preemption.
PAIRS = {
    "mutex": (6, 16),
    "semaphore": (6, 7),
    "cancel": (6, 21),
    "timeout": (4, 10),
    "delete": (33, 61),
    "inversion": (13, 50),
}


def load(stem: str, kind: str) -> scenario.Scenario:
    return scenario.load(CORPUS / f"{stem}_{kind}.py")


@pytest.mark.parametrize("stem", sorted(PAIRS))
def test_the_pair_states_its_bound_and_expectation(stem: str) -> None:
    bug, ok = load(stem, "bug"), load(stem, "ok")
    assert (bug.expect, ok.expect) == ("bug", "clean")
    assert bug.bound == ok.bound and bug.cpus == ok.cpus


@pytest.mark.parametrize("stem", sorted(PAIRS))
def test_the_planted_bug_is_found_and_replays(stem: str) -> None:
    sc = load(stem, "bug")
    clean = run_once(sc)  # the kernel's policy alone misses it: that is why we explore
    assert clean.failure is None, clean.failure
    report = explorer.bounded(sc, explorer.serial_runner(sc), sc.bound)
    assert report.failures, f"{stem}: no failure within bound {sc.bound}"
    assert report.schedules == PAIRS[stem][0]
    first = report.failures[0]
    assert first.cost == 1
    # The schedule as printed replays through the kernel's own replay chooser.
    k = Kernel(cpus=sc.cpus, check=True, schedule=first.schedule, trace=True)
    sc.build(k)
    until, steps = sc.bounds(k)
    result = k.run(until=until, max_steps=steps)
    assert judge(sc, k, result) == (first.message, first.kind)
    assert len(k.events) > 0
    # And as the explorer's prefix, choice for choice.
    again = run_once(sc, [option for _, option in Schedule.parse(first.schedule)])
    assert (again.failure, again.schedule) == (first.message, first.schedule)


@pytest.mark.parametrize("stem", sorted(PAIRS))
def test_the_twin_is_clean_at_the_bound(stem: str) -> None:
    sc = load(stem, "ok")
    assert run_once(sc).failure is None
    report = explorer.bounded(sc, explorer.serial_runner(sc), sc.bound)
    assert report.failures == [], report.failures[0].message
    assert report.complete
    assert report.schedules == PAIRS[stem][1]
