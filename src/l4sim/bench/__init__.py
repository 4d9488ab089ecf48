"""Benchmarks of the emulator itself: the commands of `l4sim bench`.

`floor` is the reference: a minimal coroutine trampoline doing the same rendezvous with
trivial kernel logic, and the same entered with l4sim's system-call shape (the price of
the API itself). `pingpong` measures call/reply round trips on l4sim against it;
`bytecodes` counts the bytecodes of the same round trips (a measure that does not move
with the machine's load); `scale` measures a round trip beside many threads blocked in
IPC, and the memory of a blocked thread; `memory`, `check`, `irq`, `posix` and
`explore` measure mapping and page faults, invariant checking, interrupt latency, the
POSIX servers and the explorer. `cli` holds the click group `bench`.
"""

from .floor import floor_ns_per_rt, run_floor
from .pingpong import CASES, run_pingpong
from .scale import run_scale

__all__ = ["CASES", "floor_ns_per_rt", "run_floor", "run_pingpong", "run_scale"]
