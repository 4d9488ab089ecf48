"""Measure the SCTBench ports as the README's results table shows them.

    python examples/explore/sctbench/_measure.py

For each program: whether the kernel's own policy already fails, then preemption
bounding, delay bounding (each at the file's bound) and PCT (depth 3, the file's RUNS,
seed 1): schedules run when the first failure was found, and seconds; the most choice
points in one run. One process; kernel checking on, as in every explorer run.
"""

from __future__ import annotations

import time
from pathlib import Path

from l4sim.explore import explorer, scenario
from l4sim.explore.runs import run_once

HERE = Path(__file__).resolve().parent


def first(report: explorer.Report) -> tuple[int | str, str]:
    if not report.failures:
        return "not found", "-"
    f = report.failures[0]
    return f.found_after, f"{f.seconds:.2f}"


def main() -> None:
    for path in sorted(HERE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        sc = scenario.load(path)
        run = explorer.serial_runner(sc)
        plain = run_once(sc).failure is not None
        started = time.perf_counter()
        pb = explorer.bounded(sc, run, int(sc.bound))
        db = explorer.bounded(sc, run, int(sc.delay_bound if sc.delay_bound is not None
                                            else sc.bound), delays=True)
        pct = explorer.pct(sc, run, int(sc.pct_depth), int(sc.runs), 1)
        points = max(pb.choice_points, db.choice_points, pct.choice_points)
        cells = [path.stem, "**yes**" if plain else "no", str(sc.bound), *map(str, first(pb)),
                 *map(str, first(db)), *map(str, first(pct)), str(points)]
        print("| " + " | ".join(cells) + f" |   ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
