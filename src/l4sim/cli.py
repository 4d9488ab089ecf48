"""The `l4sim` command line.

    l4sim demo                         a built-in system showing every IPC type, narrated
    l4sim run FILE.py [--seed S] [--trace-log] [--trace out.json] [--mermaid out.md]
                                       build the system FILE.py defines, run it, report
                                       (and write its trace: Chrome JSON, Mermaid)
    l4sim states [--dot FILE]          the declared IPC state machine (and its DOT drawing)
    l4sim bench ...                    benchmarks (from l4sim.bench.cli)

A FILE.py for `run` defines `build(k: Kernel) -> None`, which creates its tasks, threads,
gates and capabilities on the kernel it is given, and optionally
`report(k: Kernel, result: RunResult) -> None`, which prints what happened and raises
(AssertionError, or SystemExit with a non-zero code) when the expected outcome did not
happen; `run` then exits non-zero.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import click
from rich.console import Console
from rich.table import Table

from .kernel import Kernel, RunResult, Schedule
from .kernel import states as _states
from .kernel.diagnose import user_traceback
from .runner import Options, load_module, on_sys_path, parse_time, run_file
from .trace import write_chrome, write_mermaid
from .trace.html import write_html
from .trace.mermaid import DEFAULT_LIMIT as MERMAID_LIMIT
from .trace.text import format_event


def _console() -> Console:
    return Console(highlight=False)


@click.group()
@click.version_option(package_name="l4sim", prog_name="l4sim")
def main() -> None:
    """l4sim: an executable L4-style microkernel (Fiasco's synchronous IPC) in Python."""


@main.command()
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the demo's trace as Chrome trace-event JSON.")
@click.option("--mermaid", "mermaid_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the demo as a Mermaid sequence diagram.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the run report: one HTML page, no network needed.")
def demo(trace_path: Path | None, mermaid_path: Path | None, html_path: Path | None) -> None:
    """Run a small built-in system that shows every IPC primitive, with a narrated log."""
    from .demo import run_demo

    code = run_demo(_console(), trace_path=trace_path, mermaid_path=mermaid_path,
                    html_path=html_path)
    if code:
        sys.exit(code)


def load_system(path: Path) -> ModuleType:
    """Import FILE.py as a module (its `if __name__ == "__main__"` block does not run),
    with its folder on sys.path."""
    with on_sys_path(path.parent):
        try:
            module = load_module(path)
        except ImportError as exc:
            raise click.BadParameter(str(exc), param_hint="FILE") from None
    if not callable(getattr(module, "build", None)):
        raise click.BadParameter(f"{path} defines no build(k) function", param_hint="FILE")
    return module


def result_table(result: RunResult) -> Table:
    """The outcome of a run as a table: reason, time, blocked threads and how each waits,
    wait-for chains, died threads and why, warnings."""
    table = Table(title="run result", show_header=False, title_style="bold")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("reason", result.reason)
    mhz = result.kernel.mhz if result.kernel is not None else 0
    table.add_row("now", f"{result.now} cycles" + (f" ({result.now / mhz:,.3f} µs)" if mhz else ""))
    table.add_row("kernel entries", str(result.steps))
    blocked = "\n".join(f"{t.name} (tid {t.tid}): {result.waits.get(t, t.state_name)}"
                        for t in result.blocked)
    table.add_row("blocked", blocked or "none")
    if result.chains:
        table.add_row("wait-for", "\n".join(result.chains))
    died = "\n".join(f"{t.name} (tid {t.tid}): {why}" for t, why in result.died)
    table.add_row("died", died or "none")
    if result.warnings:
        table.add_row("warnings", f"{len(result.warnings)} (below)")
    return table


def print_tracebacks(console: Console, result: RunResult) -> None:
    """The traceback (the user's frames) of every thread that died of an exception, and
    the warnings (an IPC operation never awaited)."""
    for t, why in result.died:
        tb = getattr(why, "traceback", None)
        if tb:
            console.print(f"[bold red]{t.name}[/] died: {why}")
            console.print(tb.rstrip(), markup=False, highlight=False, soft_wrap=True)
    for w in result.warnings:
        console.print(f"warning: {w}", markup=False, highlight=False, soft_wrap=True)


def _progress(console: Console) -> tuple[Callable[[Kernel], None] | None, Callable[[], None]]:
    """A live line on a terminal (simulated time, kernel entries, events recorded);
    nothing when the output is not a terminal."""
    if not console.is_terminal:
        return None, lambda: None
    status = console.status("running", spinner="dots")
    status.start()

    def show(k: Kernel) -> None:
        status.update(f"simulated {k.now / k.mhz:,.1f} µs · {k.entries:,} kernel entries · "
                      f"{len(k.events):,} events recorded")

    return show, status.stop


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run.")
@click.option("--cpus", type=click.IntRange(min=1), default=None,
              help="Emulated CPUs (default: the file's CPUS, else 1).")
@click.option("--schedule", default=None, metavar="S",
              help="Replay a recorded schedule: the choices of a run as the report prints "
                   "them (e.g. 'c1 e0 p1'); an error says where it does not fit the program.")
@click.option("--until", "until", default=None, metavar="TIME",
              help="End the run at this simulated time: 2ms, 500us, 1000000cycles (a bare "
                   "number is cycles). A bound the file gives itself also holds: the earlier ends.")
@click.option("--max-steps", type=int, default=None,
              help="Bound the number of kernel entries (system calls and timer interrupts; "
                   "with several CPUs also the step boundaries of computing CPUs).")
@click.option("--trace-log", is_flag=True, help="Record every kernel event and print the log.")
@click.option("--trace", "trace_json", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="FILE.json",
              help="Record every kernel event; write a Chrome trace (open in ui.perfetto.dev).")
@click.option("--mermaid", "mermaid_md", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="FILE.md",
              help="Record every kernel event; write a Mermaid sequence diagram.")
@click.option("--mermaid-limit", type=int, default=MERMAID_LIMIT, show_default=True,
              help="Messages drawn in the Mermaid diagram (0: as many as Mermaid's size "
                   "limit allows); a note says what was cut.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="FILE.html",
              help="Record every kernel event; write the run report (one page, no network).")
@click.option("--check/--no-check", default=False, show_default=True,
              help="Verify the kernel invariants after every kernel operation.")
def run(file: Path, seed: int, cpus: int | None, schedule: str | None, until: str | None,
        max_steps: int | None,
        trace_log: bool, trace_json: Path | None, mermaid_md: Path | None, mermaid_limit: int,
        html_path: Path | None, check: bool) -> None:
    """Run FILE.py and report: why the run ended, who is blocked, who died and where.

    FILE.py either defines build(k) (and optionally report(k, result), UNTIL, MAX_STEPS
    and LABELS), which l4sim calls on a kernel it makes, or is any script that makes and
    runs kernels itself, as with `python FILE.py`. Its folder is on sys.path."""
    console = _console()
    if until is not None:
        try:
            parse_time(until, 1)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from None
    tracing = trace_log or trace_json is not None or mermaid_md is not None or html_path is not None
    show, stop = _progress(console)
    if schedule is not None:
        try:
            Schedule.parse(schedule)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--schedule") from None
    opts = Options(seed=seed, cpus=cpus, schedule=schedule, check=check, trace=tracing,
                   until=until, max_steps=max_steps, progress=show)
    try:
        outcome = run_file(file, opts)
    except ValueError as exc:  # the kernel's options, or the file's own UNTIL
        stop()
        raise click.UsageError(str(exc)) from None
    except Exception as exc:  # the script itself failed (not one of its threads)
        stop()
        console.print(user_traceback(exc).rstrip(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"[bold red]{file} failed:[/] {type(exc).__name__}: {exc}")
        sys.exit(1)
    stop()
    if not outcome.runs:
        console.print(f"{file} ran no kernel (a system file defines build(k); a script "
                      "makes a Kernel and calls k.run())", markup=False, soft_wrap=True)
        sys.exit(1)
    for n, (k, result) in enumerate(outcome.runs, 1):
        if len(outcome.runs) > 1:
            console.print(f"[bold]kernel run {n} of {len(outcome.runs)}[/]")
        if trace_log:
            for ev in k.events:
                console.print(format_event(ev), markup=False)
        console.print(result_table(result))
        print_tracebacks(console, result)
        if k.schedule:
            console.print(f"schedule: {k.schedule}  (replay it with --schedule "
                          f"'{k.schedule}')", markup=False, soft_wrap=True)
    k, result = outcome.runs[-1]
    labels = getattr(outcome.module, "LABELS", None)
    if trace_json is not None:
        write_chrome(k, trace_json)
        console.print(f"wrote {trace_json} ({len(k.events)} events): open it in "
                      "https://ui.perfetto.dev", markup=False)
    if mermaid_md is not None:
        write_mermaid(k, mermaid_md, limit=mermaid_limit or None, labels=labels)
        console.print(f"wrote {mermaid_md} (Mermaid sequence diagram)", markup=False)
    if html_path is not None:
        page = write_html(k, html_path, result, title=f"l4sim run {file.name}")
        console.print(f"wrote {html_path} ({page.stat().st_size:,} bytes): open it in a browser",
                      markup=False)
    module = outcome.module
    if module is not None and callable(getattr(module, "check", None)):
        # An explorer scenario: judged as `l4sim explore` judges each of its runs.
        from .explore.runs import judge
        from .explore.scenario import from_module

        failure, _ = judge(from_module(module, str(file)), k, result)
        if failure is not None:
            console.print(f"[bold red]failure:[/] {failure}", soft_wrap=True)
            sys.exit(1)
        console.print("scenario passed: its check holds, no deadlock, no thread died",
                      markup=False)
    report = getattr(outcome.module, "report", None)
    if report is None:
        return
    try:
        report(k, result)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            console.print(f"[bold red]report: exit {exc.code}[/]")
            sys.exit(exc.code if isinstance(exc.code, int) else 1)
    except Exception as exc:  # the example's own check failed
        console.print(traceback.format_exc(), markup=False)
        console.print(f"[bold red]report failed:[/] {type(exc).__name__}: {exc}")
        sys.exit(1)


@main.command()
@click.option("--dot", "dot", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Write the state machine as Graphviz DOT to this file: a "
                                 "diagram that fits a slide (the sentences become tooltips).")
def states(dot: Path | None) -> None:
    """Print the declared IPC state machine; optionally write it as DOT."""
    from .trace.states_view import to_dot_slide

    click.echo(_states.to_text())
    if dot is not None:
        dot.write_text(to_dot_slide())
        click.echo(f"\nwrote {dot} (render it: dot -Tsvg {dot} -o ipc.svg)")


try:
    from .bench.cli import bench

    main.add_command(bench)
except ImportError:  # the benchmark command group lands separately
    pass

from .explore.explore_cli import explore  # noqa: E402
from .explore.fuzz_cli import fuzz  # noqa: E402

main.add_command(explore)
main.add_command(fuzz)


if __name__ == "__main__":
    main()
