"""One run of a scenario under the explorer's chooser, and what it tells the explorer.

The explorer's chooser (`ExploreChooser`) preempts: it is asked at every preemption
point where another thread of the running one's priority is ready, and before every
load or store of memory another thread can reach. It follows a given list of options
(the *prefix*, replayed exactly) and then a policy: the kernel's own (option 0
everywhere: no preemption, events in arming order, the lowest CPU first) or PCT's
randomized priorities. While it runs it records, for each choice point, how many options
there were and who would act under each, and for each *segment* (the execution between
two choice points) what it touched: the memory words it read and wrote, or "the kernel"
when it entered the kernel, fired an event or switched threads (the explorer treats
such a segment as dependent on everything).
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..kernel import Chooser, Kernel, KernelInvariantError, RunResult, ScheduleError
from ..kernel.objects import Thread
from ..kernel.sched import Cpu
from ..kernel.states import state_name
from .scenario import Scenario

KERNEL = None  # the footprint of a segment that touched the kernel: dependent on all


class Footprint(NamedTuple):
    """What a segment of one thread touched in memory (physical 8-byte words)."""

    reads: frozenset[int]
    writes: frozenset[int]


Touch = Footprint | None  # None: KERNEL
NOTHING = Footprint(frozenset(), frozenset())  # a segment of user code that touched no shared memory


def dependent(a: Touch, b: Touch) -> bool:
    """Do two segments not commute? A kernel segment commutes with nothing; memory
    segments conflict when one writes a word the other reads or writes."""
    if a is None or b is None:
        return True
    return bool(a.writes & (b.reads | b.writes) or b.writes & a.reads)


class Point(NamedTuple):
    """One choice point of a run: its letter, how many options, the one taken, and who
    acts next under each option (None where the kernel does not say). (Tuples: records
    travel between processes.)"""

    letter: str
    options: int
    taken: int
    actors: tuple[Hashable, ...] | None


class PctPolicy:
    """PCT (Burckhardt et al.): threads get random distinct priorities; at d-1 random
    choice points the running thread's priority drops below every other; at each point
    the actor of highest priority goes on."""

    def __init__(self, seed: int, depth: int, points: int) -> None:
        self.random = random.Random(seed)
        self.prio: dict[Hashable, float] = {}
        n = max(points, 1)
        # Change point i (in a random order, as the points are drawn) drops the running
        # thread to priority i, below every initial priority.
        self.changes = {c: i for i, c in enumerate(self.random.sample(range(n),
                                                                      min(depth - 1, n)))}

    def priority(self, actor: Hashable) -> float:
        p = self.prio.get(actor)
        if p is None:
            p = self.prio[actor] = 1000.0 + self.random.random()
        return p

    def decide(self, index: int, point: str, options: int,
               actors: tuple[Hashable, ...] | None) -> int:
        if actors is None or len(actors) != options:
            return self.random.randrange(options)
        low = self.changes.get(index)
        if low is not None:  # a change point: the running actor drops low
            self.prio[actors[0]] = float(low)
        best = max(range(options), key=lambda i: (self.priority(actors[i]), -i))
        return best


class ExploreChooser(Chooser):
    """Replays a prefix of options, then follows the policy (0, or PCT); records the
    choice points and each segment's footprint. `lenient`: an option of the prefix that
    does not exist at its point is taken as 0 (for shrinking) instead of an error."""

    preempts = True

    def __init__(self, prefix: Sequence[int] = (), pct: PctPolicy | None = None,
                 lenient: bool = False) -> None:
        super().__init__(0)
        self.prefix = list(prefix)
        self.pct = pct
        self.lenient = lenient
        self.points: list[Point] = []
        self.segments: list[Touch] = []   # segments[j]: the execution after point j
        self._cpus: list[Cpu] = []
        self._reads: set[int] = set()
        self._writes: set[int] = set()
        self._mark: tuple[int, ...] = ()
        self.stored: set[int] = set()      # every word stored to during the run

    def attach(self, k: Kernel) -> None:
        self._cpus = list(k.cpus)
        self._mark = self._snapshot()

    def _snapshot(self) -> tuple[int, ...]:
        """What changes when kernel code ran: entries, pending events, IPIs in flight."""
        cpus = self._cpus
        if len(cpus) == 1:
            c = cpus[0]
            return (c.entries, len(c.timers), len(c.incoming))
        return tuple(x for c in cpus for x in (c.entries, len(c.timers), len(c.incoming)))

    def _close_segment(self) -> None:
        mark = self._snapshot()
        touch: Touch
        if mark != self._mark:
            touch = KERNEL
        elif self._reads or self._writes:
            touch = Footprint(frozenset(self._reads), frozenset(self._writes))
        else:
            touch = NOTHING
        if self.points:  # (what ran before the first point is no alternative's concern)
            self.segments.append(touch)
        self._reads.clear()
        self._writes.clear()
        self._mark = mark

    def access(self, th: object, pieces: list[tuple[int, int]], write: bool) -> None:
        self.accessed = True
        words = self._writes if write else self._reads
        for p, n in pieces:
            words.update(range(p >> 3, (p + n + 7) >> 3))
        if write:
            for p, n in pieces:
                self.stored.update(range(p >> 3, (p + n + 7) >> 3))

    def choose(self, point: str, options: int, actors: Sequence[object] | None = None) -> int:
        self.accessed = False
        self._close_segment()
        who = _actors(point, actors)
        at = len(self.points)
        if at < len(self.prefix):
            option = self.prefix[at]
            if option >= options:
                if not self.lenient:
                    raise ExploreError(f"choice {at + 1} of the prefix is option {option}, "
                                       f"but the run offers {options} there")
                option = 0
        elif self.pct is not None:
            option = self.pct.decide(at, point, options, who)
        else:
            option = 0
        self.points.append(Point(point, options, option, who))
        self.made.append((point, option))
        return option

    def end(self) -> None:
        """The run is over: close the last segment."""
        self._close_segment()
        if len(self.segments) < len(self.points):
            self.segments.append(KERNEL)


class ExploreError(ScheduleError):
    """The explorer's own replay went wrong: a bug in l4sim or a nondeterministic
    scenario (one that reads the wall clock or unseeded randomness)."""


def _actors(point: str, actors: Sequence[object] | None) -> tuple[Hashable, ...] | None:
    """Who acts under each option: threads by tid; a CPU by the thread it runs next."""
    if actors is None:
        return None
    out: list[Hashable] = []
    for a in actors:
        if isinstance(a, Thread):
            out.append(a.tid)
        elif isinstance(a, Cpu):
            th = a.action or a.current
            if th is None and a.bitmap:
                th = a.queues[a.top_prio()][0]
            out.append(th.tid if th is not None else ("cpu", a.index))
        else:
            return None
    return tuple(out)


@dataclass
class RunRecord:
    """What one run found: its full schedule, points and segments, and its outcome."""

    schedule: str
    choices: list[int]
    points: list[Point]
    segments: list[Touch]
    failure: str | None
    kind: str | None
    state: str
    steps: int

    def __reduce__(self) -> tuple[Any, ...]:
        # Records travel between processes: as plain tuples, which pickle several
        # times faster than named ones.
        return (_record, (self.schedule, self.choices, [tuple(p) for p in self.points],
                          [None if f is None else tuple(f) for f in self.segments],
                          self.failure, self.kind, self.state, self.steps))


def _record(schedule: str, choices: list[int], points: list[tuple[Any, ...]],
            segments: list[tuple[Any, ...] | None], *rest: Any) -> RunRecord:
    return RunRecord(schedule, choices, [Point(*p) for p in points],
                     [None if f is None else Footprint(*f) for f in segments], *rest)


def run_once(sc: Scenario, prefix: Sequence[int] = (), pct: PctPolicy | None = None,
             lenient: bool = False) -> RunRecord:
    """Build the scenario on a fresh kernel, run it under an explorer's chooser that
    replays `prefix` and then follows its policy, and judge the outcome."""
    chooser = ExploreChooser(prefix, pct, lenient)
    k = Kernel(cpus=sc.cpus, check=sc.kernel_check, chooser=chooser)
    chooser.attach(k)
    failure: str | None = None
    kind: str | None = None
    result: RunResult | None = None
    try:
        sc.build(k)
        until, steps = sc.bounds(k)
        result = k.run(until=until, max_steps=steps)
    except KernelInvariantError as exc:
        failure, kind = f"kernel invariant violated: {exc}", "invariant"
    chooser.end()
    if failure is None and result is not None:
        failure, kind = judge(sc, k, result)
    choices = [p.taken for p in chooser.points]
    return RunRecord(str(chooser.made), choices, chooser.points, chooser.segments,
                     failure, kind, end_state(k, result, chooser.stored),
                     k.entries)


def judge(sc: Scenario, k: Kernel, result: RunResult) -> tuple[str | None, str | None]:
    """A run's failure, if any: a thread that died, a deadlock, the scenario's check."""
    if result.died and not sc.deaths_ok:
        th, why = result.died[0]
        return f"thread {th.name} died: {why}", "died"
    if result.reason == "deadlock" and not sc.deadlock_ok:
        chains = "; ".join(result.chains) or ", ".join(
            f"{t.name} {result.waits[t]}" for t in result.blocked)
        return f"deadlock: {chains}", "deadlock"
    if sc.check is not None:
        try:
            sc.check(k, result)
        except AssertionError as exc:
            return f"check failed: {exc or 'assertion'}", "check"
        except Exception as exc:  # the scenario's check itself broke: still a failure
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return f"check raised {last}", "check"
    return None, None


def end_state(k: Kernel, result: RunResult | None, stored: set[int]) -> str:
    """A printable digest of how a run ended, without time: how it ended, each thread's
    state and return value, and the final value of every word stored to."""
    parts = [result.reason if result is not None else "error"]
    for tid in sorted(k.threads):
        th = k.threads[tid]
        value = _plain(th.result) if th.returned else ""
        parts.append(f"{th.name}:{state_name(th.state)}:{value}")
    if stored:
        view = k.phys.view
        parts.append(",".join(f"{w}={bytes(view[w * 8:w * 8 + 8]).hex()}"
                              for w in sorted(stored)))
    return "|".join(parts)


def _plain(value: object) -> str:
    """A repr that is the same in every process: plain data as itself, anything else
    by its type (a default repr holds an address)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_plain(a)}:{_plain(b)}" for a, b in value.items()) + "}"
    return f"<{type(value).__name__}>"
