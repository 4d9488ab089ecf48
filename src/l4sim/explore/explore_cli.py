"""The `l4sim explore` command: run a scenario under many schedules, report what was
found, and print the shortest failing schedule with the command that replays it."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..kernel import Schedule
from ..runner import parse_time
from .explorer import Failure, Progress, Report, Runner, bounded, pct, serial_runner, shrink
from .pool import process_runner, ray_runner
from .scenario import Scenario, load


def _table(report: Report, sc: Scenario) -> Table:
    t = Table(title=f"l4sim explore {sc.path}", show_header=False, title_style="bold")
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("strategy", report.strategy)
    rate = report.schedules / report.seconds if report.seconds else 0.0
    t.add_row("schedules", f"{report.schedules} in {report.seconds:.2f} s ({rate:.0f}/s)")
    if report.by_cost and not report.strategy.startswith("pct"):
        t.add_row("by cost", "  ".join(f"{c}: {n}" for c, n in sorted(report.by_cost.items())))
        t.add_row("reduction", f"{report.pruned} alternatives not run (sleep sets)"
                  if "no reduction" not in report.strategy else "off")
    t.add_row("end states", str(len(report.states)))
    t.add_row("choice points", f"up to {report.choice_points} in one run")
    t.add_row("complete", "yes: every schedule within the bound ran" if report.complete
              else f"no ({report.stopped})" if report.stopped else "no")
    t.add_row("failures", str(len(report.failures)))
    return t


def replay_command(sc: Scenario, failure: Failure) -> str:
    """The command that replays a failing schedule with a trace and a diagram."""
    words = ["l4sim", "run", sc.path]
    if sc.cpus != 1:
        words += ["--cpus", str(sc.cpus)]
    if sc.until is not None:
        words += ["--until", str(sc.until)]
    if sc.max_steps is not None:
        words += ["--max-steps", str(sc.max_steps)]
    if sc.kernel_check:
        words.append("--check")
    words += ["--schedule", failure.schedule, "--trace", "out.json", "--mermaid", "out.md"]
    return " ".join(shlex.quote(w) for w in words)


@contextlib.contextmanager
def _runner(sc: Scenario, jobs: int, ray: bool, ray_address: str | None) -> Iterator[Runner]:
    if ray:
        with ray_runner(sc, ray_address, jobs) as run:
            yield run
    else:
        with process_runner(sc, jobs) as run:
            yield run


def explore_scenario(sc: Scenario, strategy: str, bound: int, runs: int, seed: int,
                     jobs: int = 1, ray: bool = False, ray_address: str | None = None,
                     reduce: bool = True, time_limit: float | None = None,
                     keep_going: bool = False, do_shrink: bool = True,
                     progress: Progress | None = None) -> tuple[Report, Failure | None]:
    """Explore with a strategy ("bound", "delay" or "pct"); the shortest failure, shrunk."""
    with _runner(sc, jobs, ray, ray_address) as run:
        if strategy == "pct":
            report = pct(sc, run, bound, runs, seed, time_limit, progress, keep_going)
        else:
            report = bounded(sc, run, bound, strategy == "delay", reduce, time_limit,
                             progress, keep_going)
    if not report.failures:
        return report, None
    first = min(report.failures, key=lambda f: (f.cost, len(Schedule.parse(f.schedule)), f.found_after))
    if do_shrink:
        first = shrink(sc, first, serial_runner(sc))
    return report, first


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--cpus", type=click.IntRange(min=1), default=None,
              help="Emulated CPUs (default: the file's CPUS, else 1).")
@click.option("--bound", type=click.IntRange(min=0), default=None,
              help="Every schedule with at most K preemptions, fewest first (the default "
                   "strategy; default K: the file's BOUND, else 2).")
@click.option("--delay-bound", type=click.IntRange(min=0), default=None,
              help="Every schedule with at most K delays: deviations from the kernel's "
                   "policy, the i-th alternative counting i.")
@click.option("--pct", "pct_depth", type=click.IntRange(min=1), default=None,
              help="Randomized PCT schedules for bugs of depth D.")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="PCT runs (default: the file's RUNS, else 1000).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the PCT runs.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes (or Ray actors with --ray).")
@click.option("--ray", "use_ray", is_flag=True,
              help="Run the schedules on a Ray cluster (pip install 'l4sim[ray]').")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="The Ray cluster to join (default: start a local Ray instance).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop exploring after this much wall time.")
@click.option("--until", default=None, metavar="TIME",
              help="End each run at this simulated time (e.g. 2ms).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="End each run after this many kernel entries (default: the file's "
                   "MAX_STEPS, else 200000).")
@click.option("--reduce/--no-reduce", default=True, show_default=True,
              help="Skip schedules that only reorder independent steps (sleep sets).")
@click.option("--keep-going", is_flag=True,
              help="Explore to the bound even after a failure.")
@click.option("--shrink/--no-shrink", "do_shrink", default=True, show_default=True,
              help="Shrink the shortest failing schedule (delta debugging).")
@click.option("--check/--no-check", "kernel_check", default=True, show_default=True,
              help="Verify the kernel invariants after every operation of every run.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def explore(file: Path, cpus: int | None, bound: int | None, delay_bound: int | None,
            pct_depth: int | None, runs: int | None, seed: int, jobs: int, use_ray: bool,
            ray_address: str | None, time_limit: float | None, until: str | None,
            max_steps: int | None, reduce: bool, keep_going: bool, do_shrink: bool,
            kernel_check: bool, as_json: bool) -> None:
    """Explore FILE.py under many schedules: every interleaving up to a bound, or random
    PCT schedules; report failures with the shortest failing schedule.

    FILE.py defines build(k) and optionally check(k, result) (assertions on the end
    state) and options (CPUS, BOUND, DELAY_BOUND, PCT_DEPTH, RUNS, UNTIL, MAX_STEPS,
    DEADLOCK_OK, DEATHS_OK). A failure is an assertion (in check or in a thread), a
    kernel invariant violated, a deadlock or a thread that dies. Exit status: 1 when a
    failure was found, 0 when none."""
    if sum(x is not None for x in (bound, delay_bound, pct_depth)) > 1:
        raise click.UsageError("give one strategy: --bound, --delay-bound or --pct")
    if until is not None:
        try:
            parse_time(until, 1)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from None
    try:
        sc = load(file)
    except (ValueError, SyntaxError, ImportError) as exc:
        raise click.UsageError(str(exc)) from None
    if cpus is not None:
        sc.cpus = cpus
    if until is not None:
        sc.until = until
    if max_steps is not None:
        sc.max_steps = max_steps
    if runs is not None:
        sc.runs = runs
    sc.kernel_check = kernel_check
    if pct_depth is not None:
        strategy, k_bound = "pct", pct_depth
    elif delay_bound is not None:
        strategy, k_bound = "delay", delay_bound
    elif bound is not None:
        strategy, k_bound = "bound", bound
    elif sc.delay_bound is not None:
        strategy, k_bound = "delay", int(sc.delay_bound)
    else:
        strategy, k_bound = "bound", int(sc.bound)
    console = Console(highlight=False, stderr=as_json)
    live = console.is_terminal and not as_json
    with _live(console, live) as show:
        report, failure = explore_scenario(
            sc, strategy, k_bound, sc.runs, seed, jobs, use_ray, ray_address, reduce,
            time_limit, keep_going, do_shrink, show)
    if as_json:
        out: dict[str, Any] = report.as_dict()
        out["file"] = sc.path
        out["cpus"] = sc.cpus
        if failure is not None:
            out["shortest"] = failure.as_dict()
            out["replay"] = replay_command(sc, failure)
        click.echo(json.dumps(out, indent=2))
    else:
        console.print(_table(report, sc))
        if failure is not None:
            console.print(f"\n[bold red]failure[/] ({failure.kind}): {failure.message}")
            console.print(f"shortest failing schedule{' (after shrinking)' if failure.shrunk else ''}, "
                          f"{failure.cost} deviation(s) from the policy:", markup=False)
            console.print(f"  {failure.schedule}", markup=False, soft_wrap=True)
            console.print("replay it with a trace and a sequence diagram:", markup=False)
            console.print(f"  {replay_command(sc, failure)}", markup=False, soft_wrap=True)
    if report.failures:
        sys.exit(1)


@contextlib.contextmanager
def _live(console: Console, live: bool) -> Iterator[Progress | None]:
    """Progress on a terminal: schedules run, per second, distinct end states, failures."""
    if not live:
        yield None
        return
    with Live(console=console, transient=True, refresh_per_second=8) as view:
        def show(r: Report) -> None:
            rate = r.schedules / r.seconds if r.seconds else 0.0
            view.update(f"explore: {r.schedules} schedules ({rate:.0f}/s), "
                        f"{len(r.states)} end states, {len(r.failures)} failures")
        yield show
