"""The `l4sim fuzz` command: a campaign of seeded fuzz runs, a report, and a shrunk
standalone reproduction for each distinct anomaly."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .fuzz import Summary, campaign, distinct, program_of
from .fuzz import shrink as shrink_program
from .fuzz_gen import render


def _shape_text(hist: dict[int, int]) -> str:
    return "  ".join(f"{v}:{n}" for v, n in sorted(hist.items()))


def _table(s: Summary) -> Table:
    t = Table(title="l4sim fuzz", show_header=False, title_style="bold")
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("seeds", f"{s.seeds} ({s.first_seed}..{s.last_seed})")
    t.add_row("runs", f"{s.runs} (checked, traced re-run, fast path)")
    t.add_row("system calls", f"{s.system_calls} in the checked runs "
              f"({s.entries_all} in all runs; {s.ops} operations issued)")
    rate = s.system_calls / s.seconds if s.seconds else 0.0
    t.add_row("wall time", f"{s.seconds:.1f} s on {s.jobs} job(s): {rate:.0f} system calls/s")
    t.add_row("other PYTHONHASHSEED", f"{s.hashseed_checked} seeds re-run in a subprocess")
    t.add_row("anomalies", str(len(s.anomalies)))
    for key in ("tasks", "threads", "ops", "calls", "caps", "gates", "irqs", "events"):
        if key in s.shapes:
            label = "calls (power-of-2 bins)" if key == "calls" else key
            t.add_row(f"shape: {label}", _shape_text(s.shapes[key]))
    return t


@click.command()
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Fuzz this many seeds (default 200 when --minutes is not given).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Fuzz as many seeds as fit in this many minutes.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (each takes chunks of seeds).")
@click.option("--seed-start", type=click.IntRange(min=0), default=0, show_default=True,
              help="The first seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--shrink/--no-shrink", "do_shrink", default=True, show_default=True,
              help="Shrink a program of each distinct anomaly and print it.")
@click.option("--shrink-seconds", type=float, default=60.0, show_default=True,
              help="Time to spend shrinking each distinct anomaly.")
@click.option("--repro-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write each shrunk reproduction to DIR/fuzz_seed_<seed>.py.")
def fuzz(seeds: int | None, minutes: float | None, jobs: int, seed_start: int, as_json: bool,
         do_shrink: bool, shrink_seconds: float, repro_dir: Path | None) -> None:
    """Fuzz the kernel: random systems making random system calls, valid and malformed,
    checked by the kernel's invariants and by oracles for escaped exceptions, system calls
    of dead threads, determinism, the fast path, hangs and escalation."""
    if seeds is not None and minutes is not None:
        raise click.UsageError("give --seeds or --minutes, not both")
    if seeds is None and minutes is None:
        seeds = 200
    console = Console(highlight=False)
    live = sys.stdout.isatty() and not as_json
    if live:
        with Progress(TextColumn("[bold]fuzz"), BarColumn(),
                      TextColumn("{task.fields[what]}"), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            total = seeds if seeds is not None else None
            task = bar.add_task("fuzz", total=total, what="")

            def progress(s: Summary) -> None:
                bar.update(task, completed=s.seeds if seeds is not None else None,
                           what=f"{s.seeds} seeds, {s.system_calls} calls, "
                                f"{len(s.anomalies)} anomalies")

            summary = campaign(seed_start, seeds, minutes, jobs, progress=progress)
    else:
        summary = campaign(seed_start, seeds, minutes, jobs)
    repros: list[dict[str, Any]] = []
    for signature, group in distinct(summary.anomalies).items():
        first = group[0]
        entry: dict[str, Any] = {"signature": signature, "count": len(group),
                                 "seeds": sorted({a.seed for a in group if a.seed is not None})[:20],
                                 "detail": first.detail}
        if do_shrink and first.seed is not None and first.kind != "hash-nondeterminism":
            prog = program_of(first.seed)
            small = shrink_program(prog, signature, shrink_seconds)
            entry["shrunk"] = small.shape()
            entry["program"] = render(small)
            if repro_dir is not None:
                repro_dir.mkdir(parents=True, exist_ok=True)
                path = repro_dir / f"fuzz_seed_{first.seed}.py"
                path.write_text(entry["program"])
                entry["path"] = str(path)
        repros.append(entry)
    if as_json:
        out = summary.as_dict()
        out["distinct"] = repros
        click.echo(json.dumps(out, indent=2))
    else:
        console.print(_table(summary))
        for entry in repros:
            console.print(f"\n[bold red]anomaly[/] {entry['signature']} "
                          f"({entry['count']}x, seeds {entry['seeds']})", markup=True)
            console.print(entry["detail"], markup=False)
            if "program" in entry:
                console.print(f"shrunk to {entry['shrunk']}; standalone program:", markup=False)
                console.print(entry["program"], markup=False, soft_wrap=True)
    if summary.anomalies:
        sys.exit(1)

