"""Interrupt latency: simulated cycles from a device's raise of its line to the
driver thread running its own code after the receive that delivered it.

One scenario, three cases. A one-shot platform timer (`l4sim.platform.Timer`) raises its
line at RAISE_AT. The driver thread binds the line's `Irq` and receives it with
`t.irq_receive`; a hog thread, in another task, sleeps until HOG_WAKES and then computes
HOG_WORK cycles (so the line is raised while the hog computes). The cases:

- `waiting-driver`: the driver (priority HIGH) is already blocked in `irq_receive` when
  the line is raised; the hog (MID) is preempted at once. Latency: the thread switch and
  address-space switch to the driver (the model charges the delivery itself nothing).
- `busy-higher-priority-driver`: the driver (HIGH) computes DRIVER_WORK cycles before it
  calls `irq_receive`; the interrupt queues in its sender queue meanwhile and is
  taken at once by the receive. Latency: the rest of its computation, plus the entry of
  `irq_receive`. The hog (MID) does not run before the driver blocks.
- `busy-lower-priority-driver`: the same driver at priority LOW < MID: the hog preempts
  it at HOG_WAKES and computes to its end; then the driver finishes its computation and
  receives. Latency: the rest of the hog's computation, the switch back, the rest of the
  driver's computation, and the receive's entry.

Everything is simulated time: deterministic, the same on every run and every host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..kernel import Kernel, Timeout
from ..platform import Platform, Timer
from ..user import UserContext

LINE = 3
LABEL = 0x1A7


@dataclass(frozen=True)
class Scenario:
    raise_at: int = 60_000       # the timer's one-shot expiry: the line is raised then
    driver_work: int = 100_000   # cycles the busy driver computes before irq_receive
    hog_wakes: int = 40_000      # the hog sleeps until then (absolute time) ...
    hog_work: int = 50_000       # ... and computes this much
    high: int = 200
    mid: int = 100               # the hog's priority
    low: int = 50


SCENARIO = Scenario()


@dataclass(frozen=True)
class Case:
    name: str
    driver_priority_of: str      # "high" or "low"
    busy: bool                   # the driver computes before it receives
    what: str                    # what the latency consists of


CASES = (
    Case("waiting-driver", "high", False,
         "thread + address-space switch to the driver"),
    Case("busy-higher-priority-driver", "high", True,
         "rest of the driver's computation + irq_receive entry"),
    Case("busy-lower-priority-driver", "low", True,
         "rest of the hog's computation + switch + rest of the driver's computation "
         "+ irq_receive entry"),
)


async def driver(t: UserContext, irq: int, work: int, out: list[tuple[int, Any]]) -> None:
    """Bind the line, compute `work` cycles, receive the interrupt; log when it ran."""
    await t.irq_bind(irq, LABEL)
    if work:
        await t.compute(work)
    r = await t.irq_receive(irq)
    out.append((t.now, r))


async def hog(t: UserContext, wakes: int, work: int) -> None:
    await t.sleep(Timeout.at(wakes))
    await t.compute(work)


def build_case(k: Kernel, case: Case, scenario: Scenario = SCENARIO) -> list[tuple[int, Any]]:
    """Put the case's system on `k`; returns the list the driver logs (time, result) to."""
    platform = Platform(k)
    timer = platform.add_timer(LINE, name="timer")
    timer.write(Timer.MODE, Timer.ONE_SHOT)
    timer.write(Timer.INTERVAL, scenario.raise_at - k.now)
    timer.write(Timer.CONTROL, Timer.START)
    out: list[tuple[int, Any]] = []
    dtask = k.new_task("driver")
    irq_sel = dtask.add_cap(platform.irq(LINE))
    prio = scenario.high if case.driver_priority_of == "high" else scenario.low
    dtask.new_thread(driver, irq_sel, scenario.driver_work if case.busy else 0, out,
                     name="driver", priority=prio)
    k.new_task("hog").new_thread(hog, scenario.hog_wakes, scenario.hog_work, name="hog",
                                 priority=scenario.mid)
    return out


def run_case(case: Case, profile: str = "core2-sysenter", frequency_mhz: int = 2663,
             check: bool = False, scenario: Scenario = SCENARIO) -> dict[str, Any]:
    """Run one case; its row: case, latency_cycles, latency_ns, and the details."""
    k = Kernel(profile=profile, frequency_mhz=frequency_mhz, check=check)
    out = build_case(k, case, scenario)
    res = k.run()
    raises = Platform.of(k).controller.raises(LINE)
    if res.reason != "done" or res.died or len(out) != 1 or len(raises) != 1:
        raise RuntimeError(f"{case.name}: the scenario did not complete: {res!r}, "
                           f"driver log {out!r}, raises {raises!r}")
    ran, r = out[0]
    if not r.ok or r.tag.label != -1 or r.label != LABEL:
        raise RuntimeError(f"{case.name}: the driver received {r!r}, not its interrupt")
    cycles = ran - raises[0]
    return {
        "case": case.name,
        "latency_cycles": cycles,
        "latency_ns": cycles * 1000 / frequency_mhz,
        "raised_at": raises[0],
        "driver_ran_at": ran,
        "driver_priority": scenario.high if case.driver_priority_of == "high" else scenario.low,
        "hog_priority": scenario.mid,
        "consists_of": case.what,
    }


def run_irq(profile: str = "core2-sysenter", frequency_mhz: int = 2663, check: bool = False,
            scenario: Scenario = SCENARIO) -> dict[str, Any]:
    """Every case. Returns {"rows": [{case, latency_cycles, latency_ns, ...}],
    "frequency_mhz", "profile", "scenario"}."""
    rows = [run_case(c, profile, frequency_mhz, check, scenario) for c in CASES]
    return {"rows": rows, "frequency_mhz": frequency_mhz, "profile": profile,
            "scenario": asdict(scenario)}
