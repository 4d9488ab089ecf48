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

import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

import click
from rich.console import Console
from rich.table import Table

from .kernel import Kernel, RunResult
from .kernel import states as _states
from .trace import write_chrome, write_mermaid
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
    """Import FILE.py as a module (its `if __name__ == "__main__"` block does not run)."""
    name = "l4sim_system_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"cannot import {path}", param_hint="FILE")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    if not callable(getattr(module, "build", None)):
        raise click.BadParameter(f"{path} defines no build(k) function", param_hint="FILE")
    return module


def result_table(result: RunResult) -> Table:
    """The outcome of a run as a table: reason, time, blocked and died threads."""
    table = Table(title="run result", show_header=False, title_style="bold")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("reason", result.reason)
    table.add_row("now", f"{result.now} cycles")
    table.add_row("kernel entries", str(result.steps))
    blocked = "\n".join(f"{t.name} (tid {t.tid}, {t.state_name})" for t in result.blocked)
    table.add_row("blocked", blocked or "none")
    died = "\n".join(f"{t.name} (tid {t.tid}): {why}" for t, why in result.died)
    table.add_row("died", died or "none")
    return table


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run.")
@click.option("--cpus", type=int, default=1, show_default=True, help="Emulated CPUs.")
@click.option("--trace-log", is_flag=True, help="Record every kernel event and print the log.")
@click.option("--trace", "trace_json", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="FILE.json",
              help="Record every kernel event; write a Chrome trace (open in ui.perfetto.dev).")
@click.option("--mermaid", "mermaid_md", type=click.Path(dir_okay=False, path_type=Path),
              default=None, metavar="FILE.md",
              help="Record every kernel event; write a Mermaid sequence diagram.")
@click.option("--check/--no-check", default=False, show_default=True,
              help="Verify the kernel invariants after every kernel operation.")
@click.option("--max-steps", type=int, default=None, help="Bound the number of kernel entries.")
def run(file: Path, seed: int, cpus: int, trace_log: bool, trace_json: Path | None,
        mermaid_md: Path | None, check: bool, max_steps: int | None) -> None:
    """Build the system FILE.py defines, run it, and report.

    FILE.py defines build(k) and optionally report(k, result)."""
    console = _console()
    module = load_system(file)
    try:
        k = Kernel(cpus=cpus, seed=seed, check=check,
                   trace=trace_log or trace_json is not None or mermaid_md is not None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    module.build(k)
    result = k.run(max_steps=max_steps)
    if trace_log:
        for ev in k.events:
            console.print(format_event(ev), markup=False)
    console.print(result_table(result))
    if trace_json is not None:
        write_chrome(k, trace_json)
        console.print(f"wrote {trace_json} ({len(k.events)} events): open it in "
                      "https://ui.perfetto.dev", markup=False)
    if mermaid_md is not None:
        write_mermaid(k, mermaid_md)
        console.print(f"wrote {mermaid_md} (Mermaid sequence diagram)", markup=False)
    report = getattr(module, "report", None)
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
              default=None, help="Write the state machine as Graphviz DOT to this file.")
def states(dot: Path | None) -> None:
    """Print the declared IPC state machine; optionally write it as DOT."""
    click.echo(_states.to_text())
    if dot is not None:
        dot.write_text(_states.to_dot())
        click.echo(f"\nwrote {dot}")


try:
    from .bench.cli import bench

    main.add_command(bench)
except ImportError:  # the benchmark command group lands separately
    pass

from .explore.fuzz_cli import fuzz  # noqa: E402

main.add_command(fuzz)


if __name__ == "__main__":
    main()
