"""`l4sim bench …`: the cost model against the lecture and the emulator's own speed
, interrupt latency, and memory (map, unmap, page faults). Results print as
tables, or as JSON with --json; progress goes to stderr."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .bytecodes import ROUND_TRIPS, run_bytecodes
from .check import run_check_bench
from .irq_cli import irq
from .memory import FULL, QUICK, run_memory
from .model import LECTURE_MHZ, MATPLOTLIB_MISSING, plot
from .pingpong import CASES, Progress, run_pingpong
from .posix import run_posix
from .scale import KINDS, run_scale

FULL_N = 200_000


def _progress() -> Progress:
    """A progress callback printing to stderr, with the seconds since the start."""
    err = Console(stderr=True, highlight=False)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        err.print(f"[dim]{time.perf_counter() - t0:6.1f}s[/dim]  {msg} …")

    return say


@click.group()
def bench() -> None:
    """Measure the emulator's own speed."""


@bench.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help=f"Round trips per timed run (default {FULL_N:,}; --quick: a tenth).")
@click.option("--quick", is_flag=True, help="10x fewer round trips.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed runs per case; the median is reported.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None,
              help="Draw simulated cycles per round trip against message size to this PNG "
                   "(needs matplotlib: pip install 'l4sim[plot]').")
def pingpong(as_json: bool, n: int | None, quick: bool, repeats: int,
             plot_file: str | None) -> None:
    """The cost model beside the lecture's pingpong figures, its predictions, and the
    emulator's own wall-clock ns per call/reply round trip beside the coroutine floor.

    Model: each of the lecture's six configurations (register-only IPC in one and in two
    address spaces by int30 and sysenter, UTCB IPC of 4 and 8 words in one space) runs as
    a ping-pong kernel with the core2-int30 or core2-sysenter profile; the simulated
    round trip is shown beside the lecture's figure. Then the predictions: UTCB IPC of
    4-63 words in one and two spaces with both entry methods.

    Speed cases: register words (2) in one and in two address spaces, UTCB words (8) in
    one space, UTCB words (63) in two spaces, and string IPC: 4 KiB by each copy
    strategy and 1 MiB through the window (with GB/s of wall-clock copy throughput).
    Timing covers Kernel.run() only (for strings, the round trips: not the paging-in
    before them); one warm-up run, then the median of the timed runs, all in this
    process. String cases run a tenth (4 KiB) or a thousandth (1 MiB) of n round trips.

    Each case is shown as a multiple of the floor (x floor, and x warm once CPython has
    specialized it) and of the floor entered as l4sim's system calls are, a method with
    l4sim's keywords and a result object per IPC but no kernel work (x shaped): what
    l4sim adds above the price of its API's shape."""
    if plot_file is not None and importlib.util.find_spec("matplotlib") is None:
        raise click.ClickException(MATPLOTLIB_MISSING)  # before the long measurement
    if n is None:
        n = FULL_N // 10 if quick else FULL_N
    result = run_pingpong(n, repeats, progress=_progress())
    if plot_file is not None:
        try:
            plot(result["model_rows"], plot_file)
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    console = Console(width=max(Console().width, 120))
    rows = result["model_rows"]
    lecture = Table(title=f"Cost model vs the lecture (Core 2, {LECTURE_MHZ} MHz): "
                          "simulated pingpong round trip, call + reply_and_wait",
                    caption="UTCB rows use int30, as the lecture's figures imply")
    for header in ("case", "profile", "cycles/rt", "ns/rt", "lecture cycles", "lecture ns",
                   "diff"):
        lecture.add_column(header, justify="left" if header in ("case", "profile") else "right",
                           no_wrap=True)
    for r in rows:
        if r["section"] == "lecture":
            lecture.add_row(r["case"], r["profile"], f"{r['sim_cycles_per_rt']:,.0f}",
                            f"{r['sim_ns_per_rt']:,.0f}", f"{r['lecture_cycles_per_rt']:,}",
                            f"{r['lecture_ns_per_rt']:,}", f"{r['rel_diff']:+.1%}")
    console.print(lecture)
    pred = Table(title="Model predictions the lecture does not list")
    for header in ("case", "profile", "words", "string bytes", "cycles/rt", "ns/rt"):
        pred.add_column(header, justify="left" if header in ("case", "profile") else "right",
                        no_wrap=True)
    for r in rows:
        if r["section"] == "prediction":
            pred.add_row(r["case"], r["profile"], str(r["words"]),
                         f"{r['string_bytes']:,}" if "string_bytes" in r else "",
                         f"{r['sim_cycles_per_rt']:,.0f}", f"{r['sim_ns_per_rt']:,.0f}")
    console.print(pred)
    table = Table(title=f"l4sim ping-pong: n={n:,}, median of {repeats}, Python {result['python']}",
                  caption=f"floor (coroutine trampoline, trivial rendezvous): "
                          f"{result['floor_ns_per_rt']:,.0f} ns per round trip as "
                          f"pingpong_peers.py measures it; {result['floor_warm_ns_per_rt']:,.0f} "
                          f"ns once CPython has specialized its loop (x warm); "
                          f"{result['shaped_floor_ns_per_rt']:,.0f} ns entered as l4sim's "
                          f"system calls are, with a result object per IPC and no kernel "
                          f"work (x shaped)")
    table.add_column("case", no_wrap=True)
    for header in ("ns/rt", "min..max", "rt/s", "x floor", "x warm", "x shaped", "cycles/rt",
                   "GB/s"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in result["speed_rows"]:
        table.add_row(r["case"], f"{r['ns_per_rt']:,.0f}", f"{r['ns_min']:,.0f}..{r['ns_max']:,.0f}",
                      f"{r['rt_per_s']:,.0f}", f"{r['ratio_to_floor']:.2f}",
                      f"{r['ratio_to_warm_floor']:.2f}", f"{r['ratio_to_shaped_floor']:.2f}",
                      f"{r['sim_cycles_per_rt']:,.0f}",
                      f"{r['gb_per_s']:.2f}" if "gb_per_s" in r else "")
    console.print(table)
    if plot_file is not None:
        console.print(f"plot written to {plot_file}")


@bench.command()
@click.option("--threads", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Threads blocked in IPC beside the ping-pong.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--n", "n", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Round trips per timed run.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed runs of each kernel; the median is reported.")
@click.option("--kind", type=click.Choice(KINDS), default="mixed", show_default=True,
              help="How the crowd blocks: calls queued at busy sinks (send), open waits "
                   "(wait), or half each (mixed).")
def scale(threads: int, as_json: bool, n: int, repeats: int, kind: str) -> None:
    """Round trip beside many threads blocked in IPC, and memory per blocked thread."""
    result = run_scale(threads, n, repeats, kind, progress=_progress())
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"l4sim scale: {threads:,} threads blocked in IPC ({kind}), "
                        f"register-same-space, n={n:,}, median of {repeats}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("ns/rt, Kernel.run() timed", f"{result['ns_per_rt']:,.0f}"),
        ("ns/rt, two threads only", f"{result['two_thread_ns_per_rt']:,.0f}"),
        ("ratio to two threads", f"{result['ratio_to_two_threads']:.3f}"),
        ("ns/rt, client loop timed", f"{result['loop_ns_per_rt']:,.0f}"),
        ("ns/rt, client loop, two threads only", f"{result['two_thread_loop_ns_per_rt']:,.0f}"),
        ("loop ratio to two threads", f"{result['loop_ratio_to_two_threads']:.3f}"),
        ("bytes per blocked thread", f"{result['bytes_per_blocked_thread']:,.0f}"),
        ("creating and blocking the crowd (traced), s", f"{result['crowd_setup_s']:.1f}"),
        ("peak resident memory of the process, MB", f"{result['max_rss_bytes'] / 1e6:,.0f}"),
        ("simulated cycles per round trip", f"{result['sim_cycles_per_rt']:,.0f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console(width=max(Console().width, 120)).print(table)


bench.add_command(irq)


@bench.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--quick", is_flag=True,
              help=f"Small sizes: {QUICK.maps:,} maps, a tree of "
                   f"{'x'.join(map(str, QUICK.tree))}, {QUICK.faults:,} faults.")
@click.option("--maps", type=click.IntRange(1, 1 << 18), default=None,
              help=f"map-4k: 4 KiB items mapped per run (default {FULL.maps:,}).")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help=f"map-4k: runs, the median is reported (default {FULL.repeats}).")
@click.option("--faults", type=click.IntRange(min=1), default=None,
              help=f"page-faults: fresh pages touched (default {FULL.faults:,}).")
def memory(as_json: bool, quick: bool, maps: int | None, repeats: int | None,
           faults: int | None) -> None:
    """Memory: 4 KiB map items per second through IPC (and the receiver's unmaps of
    them), map + unmap of a 2^30-byte fpage (ms, peak Python heap), one recursive unmap
    of a tree of 100,000 mappings built by IPC across 101 tasks, and page faults served
    per second by the anonymous-memory pager. Wall-clock, on Kernel(check=False,
    trace=False): figures of this machine, not a pass or a fail."""
    sizes = QUICK if quick else FULL
    sizes = dataclasses.replace(sizes, maps=maps or sizes.maps,
                                repeats=repeats or sizes.repeats,
                                faults=faults or sizes.faults)
    result = run_memory(sizes, progress=_progress())
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"l4sim memory: Kernel(check=False, trace=False), "
                        f"Python {result['python']}",
                  caption="wall-clock figures of this machine and Python: they vary from one "
                          "machine to another (--json also gives reference figures)")
    table.add_column("case", no_wrap=True)
    table.add_column("size")
    table.add_column("figure", justify="right", no_wrap=True)
    for r in result["rows"]:
        size, figure = _memory_figures(r)
        table.add_row(r["case"], size, figure)
    Console(width=max(Console().width, 120)).print(table)


def _memory_figures(r: dict[str, Any]) -> tuple[str, str]:
    """(size, figures) text of one `bench memory` row."""
    case = r["case"]
    if case == "map-4k":
        return (f"{r['maps']:,} items, {r['items_per_ipc']} per IPC",
                f"{r['maps_per_s']:,.0f} maps/s\n{r['unmaps_per_s']:,.0f} unmaps/s")
    if case == "map-unmap-1g-fpage":
        return (f"2^30 bytes, median of {r['cycles']}",
                f"{r['ms']:.3f} ms\n{r['peak_bytes']:,} bytes peak")
    if case == "unmap-100k-tree":
        return (f"{r['mappings']:,} mappings, {r['tasks']} tasks",
                f"{r['ms']:,.1f} ms")
    return f"{r['faults']:,} pages", f"{r['faults_per_s']:,.0f} faults/s"


@bench.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--n", "n", type=click.IntRange(min=1), default=5_000, show_default=True,
              help="Operation pairs per timed loop.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed loops per side; the median is reported.")
def posix(as_json: bool, n: int, repeats: int) -> None:
    """l4sim's POSIX servers beside the host's real primitives: semaphore post + wait,
    message-queue send + receive (64 B), pipe write + read (4 KiB, with MB/s); wall-clock
    per pair, measured in this process, and the ratio l4sim / host."""
    result = run_posix(n, repeats, progress=_progress())
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"l4sim POSIX servers vs the host: n={n:,} pairs, median of {repeats}, "
                        f"Python {result['python']}")
    for header in ("case", "pair", "l4sim us", "host us", "ratio", "cycles/pair", "MB/s l4sim",
                   "MB/s host"):
        table.add_column(header, justify="left" if header in ("case", "pair") else "right",
                         no_wrap=True)
    for r in result["rows"]:
        def fmt(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)
        table.add_row(r["case"], r["pair"], fmt(r["l4sim_us_per_op"], ",.2f"),
                      fmt(r["host_us_per_op"], ",.2f"), fmt(r["ratio"], ",.1f"),
                      fmt(r["sim_cycles_per_op"], ",.0f"), fmt(r.get("l4sim_mb_per_s"), ",.1f"),
                      fmt(r.get("host_mb_per_s"), ",.1f"))
    Console(width=max(Console().width, 120)).print(table)


@bench.command("explore")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--jobs", type=click.IntRange(min=2), default=2, show_default=True,
              help="Worker processes of the parallel measurement.")
@click.option("--bound", type=click.IntRange(min=0), default=1, show_default=True,
              help="Preemption bound of the timed explorations.")
def explore_bench(as_json: bool, jobs: int, bound: int) -> None:
    """The explorer's speed: schedules per second for a ten-thread scenario of about a
    hundred IPCs, serially and over worker processes, with the kernel's checking off
    and on; and the schedules its reduction saves on a smaller instance."""
    from .explore import run_explore

    result = run_explore(jobs=jobs, bound=bound, say=_progress())
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"l4sim explore: {result['scenario']['threads']} threads, "
                        f"every schedule with at most {bound} preemption(s)")
    for header in ("run", "schedules", "seconds", "schedules/s"):
        table.add_column(header, justify="left" if header == "run" else "right")
    for key, value in result.items():
        if isinstance(value, dict) and "schedules_per_s" in value:
            table.add_row(key.replace("_", ", "), f"{value['schedules']:,}",
                          f"{value['seconds']:.2f}", f"{value['schedules_per_s']:,.1f}")
    Console().print(table)
    red = result["reduction"]
    Console().print(f"reduction ({red['threads']} threads, bound {red['bound']}): "
                    f"{red['schedules_reduced']:,} schedules instead of "
                    f"{red['schedules_plain']:,} ({red['saved_fraction']:.1%} saved), "
                    f"same end states: {red['same_end_states']}", markup=False)


@bench.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--n", "n", type=click.IntRange(min=1), default=5_000, show_default=True,
              help="Round trips per timed run (the full check runs a tenth of them).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed runs per side; the median is reported.")
def check(as_json: bool, n: int, repeats: int) -> None:
    """What checking the kernel invariants costs: the register ping-pong with
    check=True (incremental: what each operation touched) and check="full" (everything,
    after every operation) beside the same ping-pong unchecked, wall-clock per round trip."""
    result = run_check_bench(n, repeats, progress=_progress())
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"l4sim check: register ping-pong, n={n:,}, median of {repeats}, "
                        f"Python {result['python']}")
    table.add_column("run")
    table.add_column("ns/rt", justify="right")
    table.add_column("x unchecked", justify="right")
    table.add_row("check=False", f"{result['unchecked_ns_per_rt']:,.0f}", "1.00")
    table.add_row("check=True", f"{result['checked_ns_per_rt']:,.0f}", f"{result['ratio']:.2f}")
    table.add_row('check="full"', f"{result['full_checked_ns_per_rt']:,.0f}",
                  f"{result['full_ratio']:.2f}")
    Console(width=max(Console().width, 120)).print(table)


@bench.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--case", "cases", type=click.Choice([c.name for c in CASES]), multiple=True,
              help="Count this ping-pong case only (repeatable; default: every case).")
@click.option("--round-trips", type=click.IntRange(min=1), default=ROUND_TRIPS,
              show_default=True, help="Round trips per counted run.")
@click.option("--top", type=click.IntRange(min=0), default=6, show_default=True,
              help="Functions shown per case, by bytecodes (the JSON has them all).")
def bytecodes(as_json: bool, cases: tuple[str, ...], round_trips: int, top: int) -> None:
    """Bytecodes CPython executes per round trip of each ping-pong case, in all and by
    function: a measure of the emulator's work that does not move with the machine's
    load, unlike the timed benchmarks (compare counts of one case before and after a
    change; confirm a gain with `l4sim bench pingpong`)."""
    try:
        result = run_bytecodes(cases, round_trips, progress=_progress())
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"l4sim bytecodes per round trip (Python {result['python']})")
    table.add_column("case", no_wrap=True)
    table.add_column("bytecodes/rt", justify="right")
    table.add_column("largest shares")
    for r in result["rows"]:
        shares = ", ".join(f"{name} {n:,.0f}"
                           for name, n in list(r["by_function"].items())[:top])
        table.add_row(r["case"], f"{r['bytecodes_per_rt']:,.0f}", shares)
    Console(width=max(Console().width, 120)).print(table)
