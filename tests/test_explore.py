"""The explorer: bounded search with its reduction, delay bounding, PCT, shrinking,
replay of the schedules it prints, workers, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from l4sim import Kernel, ScheduleError
from l4sim.cli import main
from l4sim.explore import explorer, scenario
from l4sim.explore.explore_cli import explore_scenario, replay_command
from l4sim.explore.pool import process_runner
from l4sim.explore.runs import judge, run_once

HERE = Path(__file__).parent / "scenarios"
LOST = HERE / "lost_update.py"


def lost(cpus: int = 1) -> scenario.Scenario:
    sc = scenario.load(LOST)
    sc.cpus = cpus
    return sc


def replay(sc: scenario.Scenario, schedule: str) -> tuple[str | None, Kernel]:
    """Run the scenario on a plain kernel that replays `schedule` (as `l4sim run
    --schedule` does); the failure judged as the explorer judges it."""
    k = Kernel(cpus=sc.cpus, check=True, trace=True, schedule=schedule)
    sc.build(k)
    result = k.run(max_steps=sc.max_steps)
    return judge(sc, k, result)[0], k


def test_two_threads_of_a_task_faulting_on_one_page_at_once_share_its_frame() -> None:
    """Both workers fault on the counter's page at the same moment on two CPUs: the
    default pager serves the task, so the second fault finds the first one's frame (it
    once mapped a second frame over the first, and the first worker's updates were
    lost: the explorer found that)."""
    k = Kernel(cpus=2, check=True)
    lost(2).build(k)
    assert k.run().reason == "done"
    assert lost(2).check is not None
    lost(2).check(k, k._result("done"))
    frames = {th.task.space.lookup(0x10000).phys for th in k.threads.values()
              if th.name in ("w0", "w1")}
    assert len(frames) == 1


def test_the_policy_run_has_no_lost_update_and_asks_at_shared_accesses() -> None:
    rec = run_once(lost())
    assert rec.failure is None
    assert rec.choices == [0] * len(rec.points)
    # Each load and store of the counter while the other worker is ready is a choice.
    assert [p.letter for p in rec.points] == ["p"] * 5
    assert all(p.actors == (1, 2) for p in rec.points)  # w0 runs, w1 could


def test_iterative_bounding_finds_the_lost_update_with_one_preemption() -> None:
    sc = lost()
    report = explorer.bounded(sc, explorer.serial_runner(sc), bound=2)
    assert report.stopped == "failure"
    assert report.by_cost == {0: 1, 1: 5}  # every cost-0 schedule ran before cost 1
    first = report.failures[0]
    assert (first.kind, first.cost, first.found_after) == ("check", 1, 4)
    assert first.message == "check failed: counter is 2, expected 4"
    assert first.schedule == "x p0 p0 p1 p0*4"


def test_the_failing_schedule_replays_to_the_same_failure_with_a_trace() -> None:
    sc = lost()
    report = explorer.bounded(sc, explorer.serial_runner(sc), bound=1)
    failure = report.failures[0]
    message, k = replay(sc, failure.schedule)
    assert message == failure.message
    assert str(k.schedule) == failure.schedule
    shared = [(e.thread, e.event, e.detail.split(",")[0]) for e in k.events
              if e.event in ("load", "store", "preempted")]
    # w0 read 0 and was preempted before its store; w1 did both its increments; w0 wrote
    # back 1, losing them, and went on from there.
    assert shared == [("w0", "load", "0x10000 -> 0"),
                      ("w0", "preempted", "before a shared memory access"),
                      ("w1", "load", "0x10000 -> 0"), ("w1", "store", "0x10000 <- 1"),
                      ("w1", "load", "0x10000 -> 1"), ("w1", "store", "0x10000 <- 2"),
                      ("w0", "store", "0x10000 <- 1"), ("w0", "load", "0x10000 -> 1"),
                      ("w0", "store", "0x10000 <- 2")]


def test_a_schedule_that_does_not_fit_the_program_is_rejected() -> None:
    sc = lost()
    with pytest.raises(ScheduleError, match="the program makes more"):
        replay(sc, "x p0 p1")
    with pytest.raises(ScheduleError, match="choice 1 of the schedule is c0, but the program "
                                            "asks a preemption choice"):
        replay(sc, "x c0 p0*8")
    with pytest.raises(ScheduleError, match="ended after 5 of the schedule's 12 choices"):
        replay(sc, "x p0*12")
    with pytest.raises(ScheduleError, match="is not a choice"):
        replay(sc, "x p0*z")


def test_the_reduction_runs_fewer_schedules_with_the_same_end_states() -> None:
    sc = lost()
    run = explorer.serial_runner(sc)
    plain = explorer.bounded(sc, run, bound=6, reduce=False, keep_going=True)
    reduced = explorer.bounded(sc, run, bound=6, reduce=True, keep_going=True)
    assert plain.complete and reduced.complete  # the whole tree: no bound cut it
    assert (plain.schedules, reduced.schedules) == (226, 35)
    assert reduced.pruned > 0 and plain.pruned == 0
    assert reduced.states == plain.states and len(plain.states) == 3
    # ... also on two CPUs, where any CPU within a quantum of the earliest may step.
    sc2 = lost(cpus=2)
    run2 = explorer.serial_runner(sc2)
    plain2 = explorer.bounded(sc2, run2, bound=3, reduce=False, keep_going=True)
    reduced2 = explorer.bounded(sc2, run2, bound=3, reduce=True, keep_going=True)
    assert reduced2.schedules < plain2.schedules
    assert reduced2.states == plain2.states


def test_delay_bounding_charges_each_alternative_its_option_number() -> None:
    assert [explorer.delay_cost("c", i) for i in range(4)] == [0, 1, 2, 3]
    assert [explorer.preemption_cost("c", i) for i in range(4)] == [0, 1, 1, 1]
    sc = lost()
    report = explorer.bounded(sc, explorer.serial_runner(sc), bound=1, delays=True)
    assert report.failures and report.failures[0].cost == 1


def test_pct_finds_the_depth_2_lost_update_with_a_fixed_seed() -> None:
    sc = lost()
    report = explorer.pct(sc, explorer.serial_runner(sc), depth=2, runs=50, seed=7)
    assert report.failures, "PCT with d=2 found no lost update in 50 runs"
    first = report.failures[0]
    again = explorer.pct(sc, explorer.serial_runner(sc), depth=2, runs=50, seed=7)
    assert [f.schedule for f in again.failures] == [f.schedule for f in report.failures]
    assert replay(sc, first.schedule)[0] == first.message


def test_shrinking_drops_the_deviations_the_failure_does_not_need() -> None:
    sc = lost()
    # The first failing schedule with three preemptions, where one is enough.
    report = explorer.bounded(sc, explorer.serial_runner(sc), bound=3, keep_going=True)
    worst = next(f for f in report.failures if f.cost == 3)
    assert worst.schedule == "x p0 p1 p0 p0 p1 p0 p0 p1 p0"
    small = explorer.shrink(sc, worst, explorer.serial_runner(sc))
    assert small.shrunk and small.cost == 1 and small.kind == "check"
    assert replay(sc, small.schedule)[0] == small.message


def test_workers_give_the_serial_report() -> None:
    sc = lost()
    serial = explorer.bounded(sc, explorer.serial_runner(sc), bound=3, keep_going=True)
    with process_runner(sc, 2) as run:
        parallel = explorer.bounded(sc, run, bound=3, keep_going=True)
    assert _timeless(parallel) == _timeless(serial)


def test_ray_gives_the_serial_report() -> None:
    pytest.importorskip("ray")
    sc = lost()
    serial, s_fail = explore_scenario(sc, "delay", 2, 0, 0, keep_going=True)
    ray_report, r_fail = explore_scenario(sc, "delay", 2, 0, 0, jobs=2, ray=True,
                                          keep_going=True)
    assert _timeless(ray_report) == _timeless(serial)
    assert s_fail is not None and r_fail is not None and s_fail.schedule == r_fail.schedule


def _timeless(report: explorer.Report) -> dict[str, object]:
    """A report without its wall times."""
    d = report.as_dict()
    d["seconds"] = 0
    d["failures"] = [f | {"seconds": 0} for f in d["failures"]]
    return d


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["explore", *args])
    return res.exit_code, res.output


def test_cli_exit_status_json_and_replay_command(tmp_path: Path) -> None:
    code, out = _cli(str(LOST), "--json")
    assert code == 1
    data = json.loads(out)
    assert data["schedules"] == 6 and data["strategy"] == "preemption bound 2"
    assert [f["schedule"] for f in data["failures"]] == ["x p0 p0 p1 p0*4", "x p0*4 p1 p0*4"]
    assert data["shortest"]["schedule"] == "x p0 p0 p1 p0*4"
    assert "--schedule 'x p0 p0 p1 p0*4' --trace out.json --mermaid out.md" in data["replay"]
    # The printed command replays the failure: l4sim run exits 1 with the check's message.
    words = data["replay"].split()
    assert words[:3] == ["l4sim", "run", str(LOST)]
    mermaid = tmp_path / "out.md"
    proc = subprocess.run([sys.executable, "-m", "l4sim", "run", str(LOST), "--check",
                           "--schedule", data["shortest"]["schedule"],
                           "--mermaid", str(mermaid)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "check failed: counter is 2, expected 4" in proc.stdout
    assert "Note over w0: preempted" in mermaid.read_text()
    # No failure: 0. A usage error: 2.
    code, out = _cli(str(LOST), "--bound", "0", "--json")
    assert code == 0 and json.loads(out)["failures"] == []
    code, out = _cli(str(LOST), "--bound", "1", "--pct", "2")
    assert code == 2 and "give one strategy" in out


def test_cli_table_names_the_shortest_schedule_and_its_replay() -> None:
    code, out = _cli(str(LOST), "--delay-bound", "2")
    assert code == 1
    assert "delay bound 2" in out and "failures" in out
    assert "x p0 p0 p1 p0*4" in out
    sc = lost()
    failure = explorer.Failure("x p0 p0 p1 p0*4", "m", "check", 1, 1, 0.0)
    assert replay_command(sc, failure) in out.replace("\n", "")


def test_scenario_options_come_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    f = tmp_path / "opts.py"
    f.write_text(LOST.read_text().replace("BOUND = 2", "BOUND = 0\nCPUS = 2"))
    sc = scenario.load(f)
    assert (sc.bound, sc.cpus, sc.expect) == (0, 2, "bug")
    code, out = _cli(str(f), "--json", "--no-shrink")
    data = json.loads(out)
    assert code == 0 and data["cpus"] == 2 and data["strategy"] == "preemption bound 0"
    bad = tmp_path / "bad.py"
    bad.write_text("X = 1\n")
    code, out = _cli(str(bad))
    assert code == 2 and "a scenario defines build(k)" in out
