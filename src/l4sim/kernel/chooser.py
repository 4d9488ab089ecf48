"""One chooser behind every point where a real kernel's behaviour depends on timing.

A real kernel's run depends on timing at a few kinds of points; here each is a *choice
point* where the kernel asks `k.chooser`:

- `e` -- several timer or host events fall due at the same simulated time: which fires
  first (the policy: in the order they were armed);
- `p` -- a preemption point of a thread that another ready thread of its priority could
  replace (its timeslice could end here): go on (0, the policy) or yield to it (1).
  Asked only by a chooser that explores preemption (`preempts`), as CHESS does;
- `i` -- an interrupt (a timer or a host event: a device) is pending at a preemption
  point of kernel code (the kernel exit, a page boundary of a long copy): take it here
  (0, the policy) or hold it back to the next preemption point (1), where it is taken
  -- it arrived just after this point rather than just before. Asked only by a chooser
  that explores (`preempts`) and holds interrupts back (`holds_interrupts`; a replay of
  a schedule with an `i` in it does), at most once per pending interrupt;
- `c` -- several CPUs could take the next step: which (the policy: the seeded order).
  CPUs due at the same time could; under a chooser that preempts, so could every CPU
  whose clock is within a quantum of the earliest (option 0: the earliest).

Options are listed in the policy's order, so the deterministic policy mostly takes 0;
where it has no natural order (CPUs ready at the same time) the seed of `Kernel(seed=)`
decides, through this chooser's own generator. A point with one option is no choice.

Every choice made is recorded, and the list is the run's *schedule*: `k.schedule`,
printed as `c1 e0 p1` (point letter, option). A run whose chooser preempts (the
explorer's) also stops at every load or store of memory another thread can reach, and
with several CPUs lets another CPU step in there; its schedule is printed with a
leading `x` (`x p0 p1 c1`), which a replay takes as "run in that mode".
`Kernel(schedule=...)` replays a schedule exactly; one that does not fit the program --
another point asked, an option that does not exist, choices left over or missing --
raises `ScheduleError`, which says where.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

POINTS = {"e": "simultaneous events", "p": "preemption", "i": "pending interrupt",
          "c": "CPU"}
# The points asked only by a chooser that explores (`Chooser.preempts`).
EXPLORING_POINTS = ("p", "i")


class ScheduleError(ValueError):
    """A schedule given to replay does not fit the program."""


class Schedule(list[tuple[str, int]]):
    """The choices of a run: (point letter, option) pairs; `str()` is the printable form
    that `Kernel(schedule=...)` and `l4sim run --schedule` take back. `preempting`: made
    by a chooser that preempts (printed as a leading `x`)."""

    preempting = False

    def __str__(self) -> str:
        if not self.preempting:
            return " ".join(f"{point}{option}" for point, option in self)
        # The explorer's schedules ask at every preemption point: a run of one choice
        # prints as `p0*12`.
        words = ["x"]
        i = 0
        while i < len(self):
            j = i
            while j < len(self) and self[j] == self[i]:
                j += 1
            point, option = self[i]
            words.append(f"{point}{option}*{j - i}" if j - i > 2 else
                         " ".join([f"{point}{option}"] * (j - i)))
            i = j
        return " ".join(words)

    @classmethod
    def parse(cls, text: str | Iterable[tuple[str, int]]) -> Schedule:
        """A schedule from its printed form (or from a list of pairs)."""
        if not isinstance(text, str):
            out = cls()
            for point, option in text:
                out.append(cls._checked(str(point), option))
            return out
        out = cls()
        words = text.replace(",", " ").split()
        if words and words[0] == "x":
            out.preempting = True
            words = words[1:]
        for word in words:
            point, digits = word[:1], word[1:]
            digits, _, times = digits.partition("*")
            if not digits.isdigit() or (times and not times.isdigit()):
                raise ScheduleError(f"{word!r} is not a choice: a point letter "
                                    f"({', '.join(POINTS)}) and an option number, as in "
                                    "'e1' (or 'p0*12': twelve of them)")
            out.extend([cls._checked(point, int(digits))] * (int(times) if times else 1))
        return out

    @staticmethod
    def _checked(point: str, option: object) -> tuple[str, int]:
        if point not in POINTS:
            raise ScheduleError(f"unknown choice point {point!r}: the points are "
                                + ", ".join(f"{p} ({what})" for p, what in POINTS.items()))
        if type(option) is not int or option < 0:
            raise ScheduleError(f"the option of a choice is a non-negative int, got {option!r}")
        return point, option


class Chooser:
    """The default chooser: the kernel's deterministic policy, seeded; or, given a
    schedule, the replay of it. Subclass and override `decide` to explore."""

    # Asked at preemption points ('p', and 'i' with `holds_interrupts`)? The policy never
    # preempts there and takes every interrupt when it is due. An exploring chooser
    # turns `holds_interrupts` on to explore when interrupts arrive, too.
    preempts = False
    accessed = False  # a shared load or store since the last choice (kept by the explorer)
    holds_interrupts = False

    def __init__(self, seed: int = 0, schedule: str | Iterable[tuple[str, int]] | None = None
                 ) -> None:
        self.random = random.Random(seed)
        self.replay: Schedule | None = None if schedule is None else Schedule.parse(schedule)
        if self.replay is not None and (self.replay.preempting
                                        or any(p in EXPLORING_POINTS for p, _ in self.replay)):
            self.preempts = True
        if self.replay is not None and any(p == "i" for p, _ in self.replay):
            self.holds_interrupts = True
        self.made = Schedule()
        self.made.preempting = self.preempts

    def choose(self, point: str, options: int, actors: Sequence[object] | None = None) -> int:
        """Which of `options` (> 1) is taken at a choice point; recorded. `actors` says
        who acts next under each option where the kernel knows it (at 'p': the running
        thread, then the one that would replace it; at 'c': the CPUs), for a chooser
        that reasons about who does what (the explorer)."""
        self.accessed = False
        replay = self.replay
        if replay is not None:
            at = len(self.made)
            if at >= len(replay):
                raise ScheduleError(
                    f"the schedule has {len(replay)} choices, but the program makes more: "
                    f"choice {at + 1} is a {POINTS[point]} choice of {options} options")
            want, option = replay[at]
            if want != point or option >= options:
                raise ScheduleError(
                    f"choice {at + 1} of the schedule is {want}{option}, but the program "
                    f"asks a {POINTS[point]} choice ({point}) of {options} options there")
        else:
            option = self.decide(point, options)
        self.made.append((point, option))
        return option

    def decide(self, point: str, options: int) -> int:
        """The policy: events in arming order, no extra preemption, interrupts taken when
        due, CPUs in a seeded order."""
        if point == "c":
            return self.random.randrange(options)
        return 0

    def access(self, th: object, pieces: list[tuple[int, int]], write: bool) -> None:
        """A load or store of memory other threads can reach, by `th`, of these physical
        (address, length) pieces; told only to a chooser that `preempts`."""
        self.accessed = True

    def finish(self) -> None:
        """At the end of a run that could not go on: a replay must have been used up."""
        if self.replay is not None and len(self.made) < len(self.replay):
            raise ScheduleError(
                f"the program ended after {len(self.made)} of the schedule's "
                f"{len(self.replay)} choices: the schedule does not fit it")
