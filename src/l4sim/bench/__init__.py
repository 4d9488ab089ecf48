"""Benchmarks of the emulator itself: `l4sim bench pingpong` and `l4sim bench scale`.

`floor` is the reference: a minimal coroutine trampoline doing the same rendezvous with
trivial kernel logic. `pingpong` measures call/reply round trips on l4sim against it;
`scale` measures a round trip beside many threads blocked in IPC, and the memory of a
blocked thread. `cli` holds the click group `bench`.
"""

from .floor import floor_ns_per_rt, run_floor
from .pingpong import CASES, run_pingpong
from .scale import run_scale

__all__ = ["CASES", "floor_ns_per_rt", "run_floor", "run_pingpong", "run_scale"]
