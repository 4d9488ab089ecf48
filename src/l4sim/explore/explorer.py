"""The explorer's strategies: bounded systematic search with a sleep-set reduction,
randomized PCT schedules, and the shrinking of a failing schedule.

Coroutines cannot be copied, so every schedule is a run from the start: the explorer
keeps a *prefix* of options and replays it on a fresh kernel, then lets the run go on
under its policy (no deviation). From each run it learns the choice points the prefix
led to and generates the next schedules: the same prefix, the run's default choices
up to one point, and another option there.

- Bounded search (`--bound K`, `--delay-bound K`) takes schedules in order of their cost,
  so every schedule of cost 0 runs before any of cost 1, and so on (CHESS's iterative
  bounding: the simplest failing schedule is found first). Under the preemption bound a
  schedule's cost is its number of deviations from the kernel's policy: preemptions
  (the 'p' choices that end a timeslice), another CPU stepping first, another of
  simultaneous events firing first. Under the delay bound each deviation costs its
  option number: the i-th alternative (the i-th CPU in clock order, the i-th event) is
  i delays, as a delaying scheduler skips i candidates.
- The reduction (sleep sets, Godefroid) skips schedules that only reorder independent
  segments: at a point where the default continued thread A and the alternative runs B
  first, A's segment is put to sleep in B's subtree as long as what runs meanwhile does
  not touch what A's segment touched; an alternative that would run a sleeping thread
  next is not generated, and a run in which a sleeping thread's segment executes
  anyway stops generating alternatives (its continuations are covered elsewhere).
  Segments that enter the kernel conflict with everything; segments of user code
  conflict when one writes a memory word the other reads or writes.
- PCT (`--pct D --runs N --seed S`, Burckhardt et al. 2010): each run gives the threads
  random priorities and lowers the running thread's priority at D-1 random choice
  points; a bug of depth D is found by each run with probability at least
  1/(n k^(D-1)) for n threads and k choice points.

The work is split into batches of a fixed size, run serially or spread over processes
or a Ray cluster (`pool.py`); the results of a batch are taken in order, so any number
of workers gives the same report as a serial run.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..kernel import Schedule
from .runs import KERNEL, PctPolicy, RunRecord, Touch, dependent, run_once
from .scenario import Scenario

BATCH = 32  # schedules per batch: the unit of parallel work (fixed: results do not depend on it)


@dataclass(frozen=True)
class Task:
    """One schedule to run: a prefix to replay, then the policy (PCT's, if given)."""

    prefix: tuple[int, ...] = ()
    pct: tuple[int, int, int] | None = None  # (seed, depth, choice points expected)
    lenient: bool = False


def run_task(sc: Scenario, task: Task) -> RunRecord:
    pct = PctPolicy(*task.pct) if task.pct is not None else None
    return run_once(sc, task.prefix, pct, task.lenient)


class Runner(Protocol):
    """Runs a batch of tasks of one scenario; returns their records in order."""

    def __call__(self, tasks: list[Task]) -> list[RunRecord]: ...


def serial_runner(sc: Scenario) -> Runner:
    def run(tasks: list[Task]) -> list[RunRecord]:
        return [run_task(sc, t) for t in tasks]
    return run


@dataclass
class Failure:
    """A failing schedule: replayable exactly with `l4sim run FILE --schedule`."""

    schedule: str
    message: str
    kind: str
    cost: int
    found_after: int          # schedules run when it was found
    seconds: float            # wall time when it was found
    shrunk: bool = False      # delta debugging ran over it (it is as small as it found)

    def as_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "message": self.message, "kind": self.kind,
                "cost": self.cost, "found_after": self.found_after,
                "seconds": round(self.seconds, 3), "shrunk": self.shrunk}


@dataclass
class Report:
    """What an exploration did and found."""

    strategy: str
    schedules: int = 0
    failures: list[Failure] = field(default_factory=list)
    states: set[str] = field(default_factory=set)
    pruned: int = 0           # alternatives the reduction did not run
    seconds: float = 0.0
    complete: bool = False    # every schedule within the bound was run
    by_cost: dict[int, int] = field(default_factory=dict)
    choice_points: int = 0    # most choice points seen in one run
    stopped: str = ""         # why it ended early ("failure", "time limit", "runs")

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "schedules": self.schedules,
                "failures": [f.as_dict() for f in self.failures],
                "end_states": len(self.states), "pruned": self.pruned,
                "seconds": round(self.seconds, 3), "complete": self.complete,
                "by_cost": {str(c): n for c, n in sorted(self.by_cost.items())},
                "choice_points": self.choice_points, "stopped": self.stopped}


Progress = Callable[[Report], None]


def preemption_cost(point: str, option: int) -> int:
    """Preemption bounding: each deviation from the policy costs 1 (a preemption, another
    CPU stepping first, another of simultaneous events firing first)."""
    return 1 if option else 0


def delay_cost(point: str, option: int) -> int:
    """Delay bounding: the i-th alternative to the policy's choice is i delays."""
    return option


@dataclass(order=True)
class _Node:
    cost: int
    order: int
    prefix: tuple[int, ...] = field(compare=False)
    sleep: tuple[tuple[Hashable, Touch], ...] = field(compare=False, default=())


def bounded(sc: Scenario, runner: Runner, bound: int, delays: bool = False,
            reduce: bool = True, time_limit: float | None = None,
            progress: Progress | None = None, keep_going: bool = False) -> Report:
    """Every schedule of cost at most `bound`, cheapest first; stops after the batch
    where the first failure was found unless `keep_going`."""
    cost_of = delay_cost if delays else preemption_cost
    name = f"{'delay' if delays else 'preemption'} bound {bound}"
    report = Report(name + ("" if reduce else ", no reduction"))
    started = time.perf_counter()
    heap: list[_Node] = [_Node(0, 0, ())]
    order = 1
    while heap:
        batch = [heapq.heappop(heap) for _ in range(min(BATCH, len(heap)))]
        records = runner([Task(n.prefix) for n in batch])
        for node, rec in zip(batch, records, strict=True):
            _count(report, rec, node.cost, started)
            for child in _expand(node, rec, bound, cost_of, reduce, report):
                child.order = order
                order += 1
                heapq.heappush(heap, child)
        report.seconds = time.perf_counter() - started
        if progress is not None:
            progress(report)
        if report.failures and not keep_going and heap:
            report.stopped = "failure"
            break
        if time_limit is not None and report.seconds > time_limit and heap:
            report.stopped = "time limit"
            break
    report.complete = not heap
    report.seconds = time.perf_counter() - started
    return report


def _count(report: Report, rec: RunRecord, cost: int, started: float) -> None:
    report.schedules += 1
    report.by_cost[cost] = report.by_cost.get(cost, 0) + 1
    report.states.add(rec.state)
    report.choice_points = max(report.choice_points, len(rec.points))
    if rec.failure is not None and rec.kind is not None:
        report.failures.append(Failure(rec.schedule, rec.failure, rec.kind, cost,
                                       report.schedules, time.perf_counter() - started))


def _expand(node: _Node, rec: RunRecord, bound: int, cost_of: Callable[[str, int], int],
            reduce: bool, report: Report) -> list[_Node]:
    """The schedules a run leads to: at each of its choice points after the node's
    prefix, each alternative within the bound (and not asleep)."""
    start = len(node.prefix)
    points, segments = rec.points, rec.segments
    sleep: dict[Hashable, Touch] = dict(node.sleep)
    if start:  # the node's own deviation: its segment wakes what it conflicts with
        sleep = {a: f for a, f in sleep.items() if not dependent(f, segments[start - 1])}
    children: list[_Node] = []
    redundant = False
    for j in range(start, len(points)):
        p = points[j]
        actors = p.actors if reduce else None
        for alt in range(1, p.options):
            cost = node.cost + cost_of(p.letter, alt)
            if cost > bound:
                continue
            actor = actors[alt] if actors is not None else None
            if redundant or (actor is not None and actor in sleep):
                report.pruned += 1
                continue
            child_sleep = dict(sleep)
            if actors is not None and segments[j] is not KERNEL:
                child_sleep[actors[p.taken]] = segments[j]
            child_sleep.pop(actor, None)
            children.append(_Node(cost, 0, (*rec.choices[:j], alt),
                                  tuple(child_sleep.items())))
        if reduce:
            seg = segments[j]
            ran = actors[p.taken] if actors is not None else None
            if ran is not None and ran in sleep and seg is not KERNEL:
                redundant = True  # a sleeping segment ran: what follows is covered
            sleep = {a: f for a, f in sleep.items() if not dependent(f, seg)}
    return children


def pct(sc: Scenario, runner: Runner, depth: int, runs: int, seed: int,
        time_limit: float | None = None, progress: Progress | None = None,
        keep_going: bool = False) -> Report:
    """`runs` PCT schedules of bug depth `depth`, from `seed`."""
    report = Report(f"pct depth {depth}, {runs} runs, seed {seed}")
    started = time.perf_counter()
    first = runner([Task()])[0]  # the policy's run: how many choice points to expect
    points = max(len(first.points), 1)
    done = 0
    while done < runs:
        n = min(BATCH, runs - done)
        tasks = [Task(pct=(seed * 1_000_003 + done + i, depth, points)) for i in range(n)]
        for rec in runner(tasks):
            _count(report, rec, 0, started)
        done += n
        report.seconds = time.perf_counter() - started
        if progress is not None:
            progress(report)
        if report.failures and not keep_going and done < runs:
            report.stopped = "failure"
            break
        if time_limit is not None and report.seconds > time_limit and done < runs:
            report.stopped = "time limit"
            break
    report.complete = done >= runs
    report.seconds = time.perf_counter() - started
    return report


def shrink(sc: Scenario, failure: Failure, runner: Runner, max_runs: int = 300) -> Failure:
    """Delta debugging over a failing schedule's deviations from the policy: the
    smallest set of them that still fails the same way; the schedule of that run."""
    made = Schedule.parse(failure.schedule)
    deviations = [(i, option) for i, (_, option) in enumerate(made) if option]
    best: RunRecord | None = None
    budget = [max_runs]

    def fails(subset: list[tuple[int, int]]) -> RunRecord | None:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        prefix = [0] * (max((i for i, _ in subset), default=-1) + 1)
        for i, option in subset:
            prefix[i] = option
        rec = runner([Task(tuple(prefix), lenient=True)])[0]
        return rec if rec.failure is not None and rec.kind == failure.kind else None

    current = deviations
    n = 2
    while len(current) >= 2 and budget[0] > 0:
        chunk = max(1, len(current) // n)
        parts = [current[i:i + chunk] for i in range(0, len(current), chunk)]
        for part in parts:  # try a complement: the deviations without one part
            rest = [d for d in current if d not in part]
            rec = fails(rest)
            if rec is not None:
                current, best = rest, rec
                n = max(n - 1, 2)
                break
        else:
            if n >= len(current):
                break
            n = min(len(current), n * 2)
    if len(current) == 1 or not current:
        rec = fails([])  # maybe no deviation at all is needed
        if rec is not None:
            current, best = [], rec
    if best is None:  # no smaller set of deviations fails the same way
        return dataclasses.replace(failure, shrunk=True)
    return Failure(best.schedule, best.failure or failure.message, failure.kind, len(current),
                   failure.found_after, failure.seconds, shrunk=True)
