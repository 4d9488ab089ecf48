"""`l4sim bench irq [--json]`: interrupt latency in simulated cycles (see `irq.py`).

The command is registered into the `bench` group of `cli.py`
(`bench.add_command(irq)`)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from ..kernel.costs import PROFILES
from .irq import SCENARIO, run_irq


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="core2-sysenter",
              show_default=True, help="Cost profile of the emulated CPU.")
@click.option("--frequency-mhz", type=click.IntRange(min=1), default=2663, show_default=True,
              help="Clock of the emulated CPU (for the ns column).")
@click.option("--check", is_flag=True,
              help="Verify the kernel invariants after every operation (same figures).")
def irq(as_json: bool, profile: str, frequency_mhz: int, check: bool) -> None:
    """Interrupt latency: simulated cycles from a device's raise of its line to the driver
    running after its receive — for a waiting driver, a busy driver of higher priority
    than a computing hog, and a busy driver of lower priority. Simulated, deterministic."""
    result = run_irq(profile, frequency_mhz, check)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    s = SCENARIO
    table = Table(title=f"l4sim interrupt latency ({profile}, {frequency_mhz} MHz)",
                  caption=f"one-shot timer raises at {s.raise_at:,}; hog (priority {s.mid}) "
                          f"sleeps until {s.hog_wakes:,}, computes {s.hog_work:,}; a busy "
                          f"driver computes {s.driver_work:,} before irq_receive")
    table.add_column("case", no_wrap=True)
    table.add_column("driver prio", justify="right")
    table.add_column("cycles", justify="right")
    table.add_column("ns", justify="right")
    table.add_column("consists of")
    for r in result["rows"]:
        table.add_row(r["case"], str(r["driver_priority"]), f"{r['latency_cycles']:,}",
                      f"{r['latency_ns']:,.1f}", r["consists_of"])
    Console(width=max(Console().width, 120)).print(table)
