"""What checking costs: the register-same-space ping-pong (as in `pingpong.py`) on a
`Kernel(check=True)` beside the same ping-pong unchecked (`check=False`, which takes the
fast path), in one process. `checked_ns_per_rt / unchecked_ns_per_rt` is the ratio.
The full check (`check="full"`: every invariant over the whole kernel after every
operation) is measured too, on fewer round trips."""

from __future__ import annotations

import statistics
import sys
from time import perf_counter
from typing import Any, Literal

from ..kernel import Kernel
from .floor import measure
from .pingpong import Progress, add_pair, check_pair

FULL_N_DIVISOR = 10  # the full check runs a tenth of the round trips: it is much slower


def run_checked(n: int, check: bool | Literal["full"]) -> float:
    """Wall-clock seconds of `k.run()` for `n` round trips on a `Kernel(check=check)`."""
    k = Kernel(check=check, trace=False)
    client, log = add_pair(k, n, 2, True)
    t0 = perf_counter()
    res = k.run()
    dt = perf_counter() - t0
    check_pair(f"check={check!r}", client, log, res.died)
    return dt


def run_check_bench(n: int = 5_000, repeats: int = 5,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Median ns per round trip checked (incremental), fully checked, and unchecked."""
    if n < 1 or repeats < 1:
        raise ValueError("n and repeats must be positive")
    say = progress or (lambda _msg: None)
    say(f"unchecked (n={n})")
    unchecked = statistics.median(measure(lambda m: run_checked(m, False), n, repeats))
    say(f"check=True (n={n})")
    checked = statistics.median(measure(lambda m: run_checked(m, True), n, repeats))
    full_n = max(1, n // FULL_N_DIVISOR)
    say(f"check='full' (n={full_n})")
    full = statistics.median(measure(lambda m: run_checked(m, "full"), full_n, repeats))
    return {
        "n": n,
        "repeats": repeats,
        "checked_ns_per_rt": checked,
        "unchecked_ns_per_rt": unchecked,
        "ratio": checked / unchecked,
        "full_checked_ns_per_rt": full,
        "full_ratio": full / unchecked,
        "python": sys.version.split()[0],
    }
