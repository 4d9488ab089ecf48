"""A timer server: a user-level driver owning the platform timer's interrupt offers
`sleep(n ticks)` to clients by IPC (drivers as user-level servers).

The server programs the timer (a device of `l4sim.platform`) through its registers — the
register page is "mapped" into the server's task: the device object is passed to it — in
periodic mode, one tick every `TICK` cycles. The tick number is the timer's EXPIRIES
register (every expiry counts, even if two of them coalesce into one interrupt). The timer
runs only while somebody sleeps: the server starts it for the first sleeper and stops it
when the last one is woken.

Protocol. A thread holds only one reply capability (that of its last caller), so the
server cannot keep several callers waiting for replies. Instead a client
    1. sends [n] to the server (a plain send: the server does not owe it a reply), then
    2. waits in a closed receive on the server thread;
the server remembers (wake tick, client) and, at that tick, sends the client
[tick of the request, wake tick, tick now] directly — it holds a thread capability to
every client — with a zero send timeout: a client that is not (yet) waiting is not
waited for; it stays pending and is tried again at the next tick (the example asserts
that this never happens), and one that is gone is dropped. n = 0 is taken as 1: the
wake-up always comes at a later tick, when the client is long in its receive.

The server waits with `irq_wait` (unmask + open wait): requests and ticks both reach it.

    python examples/timer_server.py      # or: l4sim run examples/timer_server.py
"""

from __future__ import annotations

import heapq
from typing import Any

from l4sim import IpcError, Kernel, RunResult, Timeout
from l4sim.platform import Platform, Timer

TICK = 50_000            # cycles between timer interrupts (~19 us at 2663 MHz)
TIMER_LINE = 0
TICK_LABEL = 0x71C       # the label the server binds the timer interrupt with
SERVER_PRIORITY = 200

# (client name, priority, [(cycles of work before the request, ticks to sleep), ...])
CLIENTS = [
    ("alice", 110, [(1_000, 3), (20_000, 1), (5_000, 2)]),
    ("bob", 100, [(2_000, 1), (2_000, 1), (2_000, 1), (2_000, 1)]),
    ("carol", 90, [(3_000, 5), (70_000, 2)]),
    ("dave", 120, [(500, 2), (120_000, 4), (1_000, 1)]),
]


async def timer_server(t: Any, irq: int, timer: Timer, clients: dict[int, int],
                       log: list[tuple[Any, ...]]) -> None:
    """Serve sleep requests. `clients`: a client's tid -> our capability to its thread.
    `log`: (time, "request"|"wake"|"late"|"dropped"|"start"|"stop", ...) for the report."""
    await t.irq_bind(irq, TICK_LABEL)
    sleepers: list[tuple[int, int, int, int]] = []   # heap: (wake tick, seq, tid, request tick)
    seq = 0
    while True:
        r = await t.irq_wait(irq)                     # unmask the tick, wait for anything
        if not r.ok:
            continue
        tick = timer.read(Timer.EXPIRIES)
        if r.tag.label == -1 and r.label == TICK_LABEL:
            retry = []
            while sleepers and sleepers[0][0] <= tick:
                wake, s, tid, asked = heapq.heappop(sleepers)
                w = await t.send(clients[tid], words=[asked, wake, tick],
                                 send_timeout=Timeout.zero())
                if w.ok:
                    log.append((t.now, "wake", tid, wake, tick))
                elif w.error == IpcError.SETIMEOUT:   # not waiting yet: next tick
                    log.append((t.now, "late", tid, wake, tick))
                    retry.append((wake, s, tid, asked))
                else:                                 # the client is gone
                    log.append((t.now, "dropped", tid, wake, tick))
            for item in retry:
                heapq.heappush(sleepers, item)
            if not sleepers and timer.read(Timer.CONTROL):
                timer.write(Timer.CONTROL, Timer.STOP)
                log.append((t.now, "stop", tick))
        elif r.label in clients and len(r.words) == 1:
            n = max(1, r.words[0])
            seq += 1
            heapq.heappush(sleepers, (tick + n, seq, r.label, tick))
            log.append((t.now, "request", r.label, n, tick))
            if not timer.read(Timer.CONTROL):
                timer.write(Timer.MODE, Timer.PERIODIC)
                timer.write(Timer.INTERVAL, TICK)
                timer.write(Timer.CONTROL, Timer.START)
                log.append((t.now, "start", tick))
        # Anything else (a stranger, a malformed request) is ignored.


async def client(t: Any, srv: int, plan: list[tuple[int, int]]) -> list[dict[str, int]]:
    """Work, sleep n ticks, again; return what each sleep looked like."""
    out = []
    for work, n in plan:
        await t.compute(work)
        asked_at = t.now
        r = await t.send(srv, words=[n])
        if not r.ok:
            raise RuntimeError(f"sleep request failed: {r.error.name}")
        r = await t.receive(srv)                      # closed: only the server wakes us
        if not r.ok:
            raise RuntimeError(f"wake-up failed: {r.error.name}")
        request_tick, wake_tick, tick = r.words
        out.append({"n": n, "asked_at": asked_at, "woke_at": t.now,
                    "request_tick": request_tick, "wake_tick": wake_tick, "tick": tick})
    return out


def build(k: Kernel) -> None:
    """The platform with its timer on line TIMER_LINE; the server task holds the timer's
    interrupt and a thread capability to every client; each client task holds one to
    the server thread (direct IPC: each sees the other's tid as the label)."""
    platform = Platform(k)
    timer = platform.add_timer(TIMER_LINE)
    stask = k.new_task("timer")
    irq_sel = stask.add_cap(platform.irq(TIMER_LINE))
    clients: dict[int, int] = {}                      # filled below, before the run
    log: list[tuple[Any, ...]] = []
    srv = stask.new_thread(timer_server, irq_sel, timer, clients, log, name="timer",
                           priority=SERVER_PRIORITY)
    for name, prio, plan in CLIENTS:
        ctask = k.new_task(name)
        th = ctask.new_thread(client, ctask.add_cap(srv), plan, name=name, priority=prio)
        clients[th.tid] = stask.add_cap(th)


def server_log(k: Kernel) -> list[tuple[Any, ...]]:
    srv = next(th for th in k.threads.values() if th.name == "timer")
    log: list[tuple[Any, ...]] = srv.args[3]
    return log


def wake_times(k: Kernel) -> dict[int, list[int]]:
    """From the server's log: for each client tid, the times the server woke it."""
    out: dict[int, list[int]] = {}
    for entry in server_log(k):
        if entry[1] == "wake":
            out.setdefault(entry[2], []).append(entry[0])
    return out


def check_sleep(s: dict[str, int], woken: int, raises: list[int]) -> str | None:
    """What is wrong with one sleep (None: nothing). `woken`: when the server sent the
    wake-up; `raises`: the times of the timer's raises (tick i was raised at raises[i-1]).

    Right: the wake tick is the tick count at the request plus n (n = 0 counts as 1); the
    server woke the client in that tick — after its interrupt, before the next one — and
    the client ran again at or after that (later if higher-priority threads were ready)."""
    n = max(1, s["n"])
    want = s["request_tick"] + n
    if s["wake_tick"] != want or s["tick"] != want:
        return f"woken at tick {s['tick']} (wake tick {s['wake_tick']}), expected {want}"
    if s["request_tick"] != sum(1 for r in raises if r <= s["asked_at"]):
        return f"request tick {s['request_tick']} is not the tick count at the request"
    if want > len(raises) or woken < raises[want - 1]:
        return f"woken at {woken}, before tick {want} was raised"
    if want < len(raises) and woken >= raises[want]:
        return f"woken at {woken}, after tick {want + 1} was raised at {raises[want]}"
    if s["woke_at"] < woken:
        return f"ran at {s['woke_at']}, before the server woke it at {woken}"
    if not s["woke_at"] - s["asked_at"] > (n - 1) * TICK:
        return f"slept {s['woke_at'] - s['asked_at']} cycles for {n} ticks of {TICK}"
    return None


def report(k: Kernel, result: RunResult) -> None:
    platform = Platform.of(k)
    timer = platform.device(TIMER_LINE)
    assert isinstance(timer, Timer)
    raises = platform.controller.raises(TIMER_LINE)
    by_name = {th.name: th for th in k.threads.values()}
    log = server_log(k)
    woken_at = wake_times(k)
    print(f"timer server (priority {SERVER_PRIORITY}), tick = {TICK} cycles; run ended "
          f"{result.reason!r} at {result.now} cycles; {len(raises)} ticks")
    print(f"  {'client':<6} {'prio':>4} {'n':>2} {'asked at':>9} {'at tick':>7} {'wake tick':>9} "
          f"{'tick raised':>11} {'woken at':>9} {'ran at':>9}")
    problems = []
    for name, prio, plan in CLIENTS:
        th = by_name[name]
        if not th.returned or len(th.result) != len(plan):
            problems.append(f"client {name} did not finish")
            continue
        wakes = woken_at.get(th.tid, [])
        if len(wakes) != len(plan):
            problems.append(f"{name}: woken {len(wakes)} times for {len(plan)} sleeps")
            continue
        for s, woken in zip(th.result, wakes, strict=True):
            raised = raises[s["wake_tick"] - 1] if 0 < s["wake_tick"] <= len(raises) else -1
            print(f"  {name:<6} {prio:>4} {s['n']:>2} {s['asked_at']:>9} {s['request_tick']:>7} "
                  f"{s['wake_tick']:>9} {raised:>11} {woken:>9} {s['woke_at']:>9}")
            why = check_sleep(s, woken, raises)
            if why:
                problems.append(f"{name}: {why}")
    late = [e for e in log if e[1] in ("late", "dropped")]
    if late:
        problems.append(f"wake-ups retried at a later tick or dropped: {late}")
    if timer.running or timer.expiries != len(raises):
        problems.append(f"the timer should be stopped with {len(raises)} expiries: "
                        f"running={timer.running}, expiries={timer.expiries}")
    if result.reason != "done" or result.died:
        problems.append(f"unexpected end of run: {result!r}")
    if problems:
        raise AssertionError("; ".join(problems))
    print("every client was woken at its tick, not before, and ran again after it")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
