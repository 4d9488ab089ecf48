"""Priority inversion through IPC, and priority inheritance (lecture: "IPC and
Scheduling").

A low-priority server works on a request of a low-priority client. While it works, a
high-priority client calls it and must wait in the server's sender queue. Then a
medium-priority hog wakes up and computes for a long time.

- Without priority inheritance the server runs at its own low priority: the hog preempts
  it, and the high client waits for the hog's whole computation — the inversion: a
  medium-priority thread delays a high-priority one it has nothing to do with.
- With priority inheritance the blocked high client lends its priority to the server it
  waits for; the server keeps the CPU against the hog, finishes the current request,
  serves the high client, and the high client's latency is bounded by the server's work.

    python examples/priority_inversion.py    # runs both, or: l4sim run examples/priority_inversion.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

LOW, MEDIUM, HIGH, SERVER = 10, 50, 200, 10
SERVER_WORK = 50_000          # cycles per request
HOG_WORK = 5_000_000          # cycles the hog computes (about 1.9 ms at 2663 MHz)
HIGH_ARRIVES = 20_000         # cycles: the high client calls while the server works
HOG_ARRIVES = 30_000          # cycles: the hog wakes up while the server still works


async def server(t: Any) -> None:
    r = await t.wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        await t.compute(SERVER_WORK)
        # Reply, then wait openly: the wait takes the caller that queued meanwhile.
        r = await t.reply_and_wait(words=[r.words[0] * 2])


async def client(t: Any, srv: int, arrive: int, value: int) -> dict[str, int]:
    if arrive:
        await t.sleep(Timeout.at(arrive))
    start = t.now
    r = await t.call(srv, words=[value])
    if not r.ok:
        raise RuntimeError(f"call failed: {r.error.name}")
    return {"start": start, "end": t.now, "latency": t.now - start, "answer": r.words[0]}


async def hog(t: Any, arrive: int) -> dict[str, int]:
    await t.sleep(Timeout.at(arrive))
    start = t.now
    await t.compute(HOG_WORK)
    return {"start": start, "end": t.now}


def build(k: Kernel, priority_inheritance: bool | None = None) -> None:
    """The scenario. Inheritance is the kernel's (`Kernel(priority_inheritance=...)`);
    the keyword, if given, must agree with it."""
    if priority_inheritance is not None and priority_inheritance != k.priority_inheritance:
        raise ValueError("build(priority_inheritance=...) must match the kernel's setting: "
                         f"create Kernel(priority_inheritance={priority_inheritance})")
    stask = k.new_task("server")
    srv = stask.new_thread(server, name="server", priority=SERVER)
    lo = k.new_task("low")
    lo.new_thread(client, lo.add_cap(srv), 0, 1, name="low", priority=LOW)
    hi = k.new_task("high")
    hi.new_thread(client, hi.add_cap(srv), HIGH_ARRIVES, 21, name="high", priority=HIGH)
    hg = k.new_task("hog")
    hg.new_thread(hog, HOG_ARRIVES, name="hog", priority=MEDIUM)


def results(k: Kernel) -> dict[str, dict[str, int]]:
    return {th.name: th.result for th in k.threads.values() if th.name in ("low", "high", "hog")}


def run(priority_inheritance: bool, check: bool = False) -> tuple[Kernel, RunResult]:
    k = Kernel(priority_inheritance=priority_inheritance, check=check)
    build(k)
    return k, k.run()


def latency(priority_inheritance: bool) -> int:
    """The high client's call latency in cycles, with or without priority inheritance."""
    k, _ = run(priority_inheritance)
    return int(results(k)["high"]["latency"])


def report(k: Kernel, result: RunResult) -> None:
    res = results(k)
    for name in ("low", "high", "hog"):
        if res.get(name) is None:
            raise AssertionError(f"{name} did not finish: {result!r}")
    hi = res["high"]
    on = "on" if k.priority_inheritance else "off"
    ns = hi["latency"] * 1000 // k.mhz
    print(f"priority inheritance {on}: high client called at {hi['start']}, answered at "
          f"{hi['end']}: latency {hi['latency']} cycles ({ns} ns); "
          f"hog computed {res['hog']['start']}..{res['hog']['end']}")
    if hi["answer"] != 42 or res["low"]["answer"] != 2:
        raise AssertionError(f"wrong answers: {res}")
    # The high client waits at most for the rest of the low request and its own request.
    bound = 2 * SERVER_WORK + 10_000
    if k.priority_inheritance:
        if hi["latency"] > bound:
            raise AssertionError(f"latency {hi['latency']} exceeds {bound} with inheritance")
        if not hi["end"] <= res["hog"]["end"] - HOG_WORK + 10_000:
            raise AssertionError("the high client was answered only after the hog ran")
    elif hi["latency"] < HOG_WORK:
        raise AssertionError(f"no inversion without inheritance: latency {hi['latency']}")
    other = latency(not k.priority_inheritance)
    print(f"  (the same system with inheritance {'off' if k.priority_inheritance else 'on'}: "
          f"latency {other} cycles)")


if __name__ == "__main__":
    for pi in (True, False):
        kernel = Kernel(priority_inheritance=pi)
        build(kernel)
        report(kernel, kernel.run())
    on, off = latency(True), latency(False)
    print(f"high client's latency: {on} cycles with inheritance, {off} without "
          f"({off / on:.0f}x)")
