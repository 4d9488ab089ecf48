"""Bytecodes per round trip: the emulator's work on a ping-pong, counted rather than timed.

Wall-clock figures move with the machine's load (another process on a 2-core machine
can change them by a third); the number of bytecodes CPython executes for a round trip
does not. It is counted with `sys.settrace`'s opcode events over the same cases as
`l4sim bench pingpong`: a run of m round trips is subtracted from a run of 2m, so that
building the system and starting the threads do not count. The same code gives the same
count, so it shows what a change to the IPC path did at once, even on a busy machine.
A bytecode is not a unit of time (a call costs more than a load), so compare counts of
the same case, and confirm a gain with the timed benchmark.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from .pingpong import CASES, Case, Progress, run_case

ROUND_TRIPS = 200  # per counted run (a string case runs `Case.runs` times fewer)

TraceFunction = Callable[[FrameType, str, Any], Any]


def count_bytecodes(case: Case, round_trips: int) -> Counter[str]:
    """Bytecodes executed by one run of `case` with `round_trips` round trips, by
    function (`file:function`)."""
    counts: Counter[str] = Counter()

    def local(frame: FrameType, event: str, _arg: Any) -> TraceFunction:
        if event == "opcode":
            code = frame.f_code
            counts[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
        return local

    def on_call(frame: FrameType, _event: str, _arg: Any) -> TraceFunction:
        frame.f_trace_opcodes = True
        return local

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        run_case(case, round_trips)
    finally:
        sys.settrace(previous)
    return counts


def bytecodes_per_round_trip(case: Case, round_trips: int = ROUND_TRIPS) -> dict[str, Any]:
    """{case, bytecodes_per_rt, by_function}: the bytecodes of one round trip of `case`,
    in all and by function (largest first), from runs of m and 2m round trips."""
    m = max(1, round_trips // case.runs)
    run_case(case, m)  # (imports and first-time set-up outside the counted runs)
    one = count_bytecodes(case, m)
    two = count_bytecodes(case, 2 * m)
    per = {name: (two[name] - one[name]) / m for name in two}
    by_function = {name: n for name, n in sorted(per.items(), key=lambda kv: -kv[1]) if n}
    return {"case": case.name, "bytecodes_per_rt": sum(by_function.values()),
            "by_function": by_function}


def run_bytecodes(names: Sequence[str] = (), round_trips: int = ROUND_TRIPS,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Count every ping-pong case (or those named): {"rows": [...], "round_trips",
    "python"}."""
    unknown = set(names) - {c.name for c in CASES}
    if unknown:
        raise ValueError(f"no such case: {', '.join(sorted(unknown))} "
                         f"(the cases: {', '.join(c.name for c in CASES)})")
    say = progress or (lambda _msg: None)
    rows = []
    for case in CASES:
        if names and case.name not in names:
            continue
        say(case.name)
        rows.append(bytecodes_per_round_trip(case, round_trips))
    return {"rows": rows, "round_trips": round_trips, "python": sys.version.split()[0]}
