"""The SCTBench ports in examples/explore/sctbench: the explorer finds each program's bug
at the bound its file states (and not below it: iterative bounding runs the cheaper
schedules first), PCT with a fixed seed finds it too, and the failing schedule replays
to the same failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from l4sim.explore import explorer, scenario
from l4sim.explore.runs import run_once
from l4sim.kernel import Schedule

FOLDER = Path(__file__).resolve().parent.parent / "examples" / "explore" / "sctbench"
PROGRAMS = ["account_bad", "arithmetic_prog_bad", "bluetooth_driver_bad",
            "circular_buffer_bad", "deadlock01_bad", "din_phil2_sat", "lazy01_bad",
            "queue_bad", "reorder_3_bad", "stack_bad", "twostage_bad", "wronglock_bad"]
TRIVIAL = {"arithmetic_prog_bad", "din_phil2_sat", "lazy01_bad"}  # fail with no preemption


def load(name: str) -> scenario.Scenario:
    return scenario.load(FOLDER / f"{name}.py")


def test_every_program_is_ported() -> None:
    ported = sorted(p.stem for p in FOLDER.glob("*.py") if not p.stem.startswith("_"))
    assert ported == sorted(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_found_at_the_stated_preemption_bound(name: str) -> None:
    sc = load(name)
    assert sc.expect == "bug"
    report = explorer.bounded(sc, explorer.serial_runner(sc), sc.bound)
    assert report.failures, f"{name}: no failure within preemption bound {sc.bound}"
    first = report.failures[0]
    # the cheapest failure comes first: none exists below the stated bound
    assert first.cost == sc.bound, (name, first.cost, first.schedule)
    assert (name in TRIVIAL) == (sc.bound == 0)
    # the failing schedule replays to the same failure
    choices = [option for _, option in Schedule.parse(first.schedule)]
    again = run_once(sc, choices)
    assert again.failure == first.message


@pytest.mark.parametrize("name", ["bluetooth_driver_bad", "deadlock01_bad", "twostage_bad"])
def test_found_at_the_stated_delay_bound(name: str) -> None:
    sc = load(name)
    assert sc.delay_bound is not None
    report = explorer.bounded(sc, explorer.serial_runner(sc), sc.delay_bound, delays=True)
    assert report.failures and report.failures[0].cost == sc.delay_bound


@pytest.mark.parametrize("name", PROGRAMS)
def test_found_by_pct(name: str) -> None:
    sc = load(name)
    report = explorer.pct(sc, explorer.serial_runner(sc), depth=sc.pct_depth, runs=sc.runs,
                          seed=1)
    assert report.failures, f"{name}: PCT depth {sc.pct_depth}, {sc.runs} runs, seed 1"
    assert report.failures[0].found_after <= sc.runs
