"""Mutual exclusion with IPC: the lecture's synchronization thread.

"Worker thread calls synchronization thread before entering; synchronization thread
replies if critical section can be entered; worker thread blocks if critical section not
available; worker thread calls synchronization thread after leaving; synchronization
thread sends reply to next waiting worker thread."

A server holds only one implicit reply capability (that of its last caller), so the
synchronization thread cannot collect the callers that find the section busy and reply
to them later. L4 keeps them waiting for free instead: while the section is held, the
synchronization thread receives *closed* from the holder only, so every other worker's
ENTER call stays blocked in its sender queue (priority-sorted, FIFO within a priority).
When the holder's LEAVE arrives, it acknowledges it and goes back to an open wait, which
takes the next queued ENTER at once:

    loop:
        r = wait()                       # open: the next ENTER (label = caller's tid)
        reply()                          # grant: the caller enters the critical section
        r = receive(holder)              # closed: only the holder's LEAVE is accepted
        reply()                          # acknowledge LEAVE; back to the open wait

The workers share a counter that they increment non-atomically (read, work, write back)
inside the critical section, sleeping in the middle so that the others run and try to
enter; no update is lost, and the recorded enter/leave times never overlap.

    python examples/mutex.py             # or: l4sim run examples/mutex.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

ENTER = 1
LEAVE = 2

WORKERS = [("w1", 100), ("w2", 100), ("w3", 110), ("w4", 90)]
ROUNDS = 3                 # critical sections per worker
INSIDE_CYCLES = 2_000      # computation inside the critical section
INSIDE_SLEEP_US = 2        # and a pause inside it, so that the others try to enter
OUTSIDE_CYCLES = 700       # computation outside


async def sync_thread(t: Any, holder_sel: dict[int, int], log: list[tuple[int, str, int]]) -> None:
    """The synchronization thread. `holder_sel` maps a worker's tid (the label of its
    direct IPC) to this task's capability for that worker (needed for a closed receive)."""
    r = await t.wait()
    while True:
        if not r.ok or r.tag.label != ENTER:
            # Not a request to enter (a stray LEAVE): refuse it, wait for the next one.
            await t.reply(words=[1])
            r = await t.wait()
            continue
        holder = r.label
        log.append((t.now, "grant", holder))
        if not (await t.reply(words=[0])).ok:     # the caller vanished: section still free
            r = await t.wait()
            continue
        while True:                               # closed receive: the holder only
            r = await t.receive(holder_sel[holder])
            if not r.ok:                          # the holder is gone: free the section
                break
            if r.tag.label == LEAVE:
                log.append((t.now, "release", holder))
                await t.reply(words=[0])          # acknowledge the LEAVE
                break
            await t.reply(words=[1])              # the holder asked something else
        r = await t.wait()                        # open again: the next queued ENTER


async def worker(t: Any, sync: int, shared: dict[str, int],
                 sections: list[tuple[str, int, int, int]]) -> int:
    """ROUNDS critical sections. `sync` = 0: no synchronization (to show what goes wrong)."""
    for _ in range(ROUNDS):
        await t.compute(OUTSIDE_CYCLES)
        asked = t.now
        if sync:
            r = await t.call(sync, label=ENTER)
            if not r.ok or r.words[0] != 0:
                raise RuntimeError(f"ENTER failed: {r.error.name} {r.words}")
        entered = t.now
        value = shared["counter"]                 # read ...
        await t.compute(INSIDE_CYCLES)
        await t.sleep(Timeout.us(INSIDE_SLEEP_US))
        shared["counter"] = value + 1             # ... write back: a lost update without mutex
        left = t.now
        sections.append((t.name, asked, entered, left))
        if sync:
            r = await t.call(sync, label=LEAVE)
            if not r.ok or r.words[0] != 0:
                raise RuntimeError(f"LEAVE failed: {r.error.name} {r.words}")
    return ROUNDS


def build(k: Kernel, mutex: bool = True) -> None:
    """The system; `mutex=False` leaves out the synchronization (the counter then loses
    updates and the sections overlap: what the protocol prevents)."""
    holder_sel: dict[int, int] = {}
    log: list[tuple[int, str, int]] = []
    shared = {"counter": 0}
    sections: list[tuple[str, int, int, int]] = []
    stask = k.new_task("sync")
    sync = stask.new_thread(sync_thread, holder_sel, log, name="sync", priority=120)
    for name, prio in WORKERS:
        wtask = k.new_task(name)
        sel = wtask.add_cap(sync) if mutex else 0
        w = wtask.new_thread(worker, sel, shared, sections, name=name, priority=prio)
        holder_sel[w.tid] = stask.add_cap(w)   # boot configuration: sync may receive from w


def sections_of(k: Kernel) -> list[tuple[str, int, int, int]]:
    """(worker, asked to enter, entered, left) of every critical section, in the order
    they ended."""
    w = next(th for th in k.threads.values() if th.name == WORKERS[0][0])
    return list(w.args[2])


def counter_of(k: Kernel) -> int:
    w = next(th for th in k.threads.values() if th.name == WORKERS[0][0])
    return int(w.args[1]["counter"])


Section = tuple[str, int, int, int]


def overlaps(sections: list[Section]) -> list[tuple[Section, Section]]:
    """Pairs of critical sections that overlap in simulated time."""
    ordered = sorted(sections, key=lambda s: (s[2], s[3]))
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:] if b[2] < a[3]]


def waited(sections: list[Section]) -> list[Section]:
    """Sections whose worker found the section held and had to wait to enter."""
    return [s for s in sections if any(o[2] <= s[1] < o[3] for o in sections if o is not s)]


def report(k: Kernel, result: RunResult) -> None:
    sections = sections_of(k)
    print(f"{len(WORKERS)} workers x {ROUNDS} critical sections through a synchronization thread")
    for name, asked, entered, left in sorted(sections, key=lambda s: s[2]):
        print(f"  {name:<3} asked at {asked:>7}, inside from {entered:>7} to {left:>7} cycles"
              f"  (waited {entered - asked} cycles)")
    counter = counter_of(k)
    bad = overlaps(sections)
    print(f"shared counter: {counter} (expected {len(WORKERS) * ROUNDS}); "
          f"overlapping sections: {len(bad)}; "
          f"entries that found the section held and waited: {len(waited(sections))}")
    if bad:
        raise AssertionError(f"critical sections overlap: {bad}")
    if counter != len(WORKERS) * ROUNDS or len(sections) != len(WORKERS) * ROUNDS:
        raise AssertionError(f"lost updates: counter {counter}, {len(sections)} sections")
    if result.reason != "done" or result.died:
        raise AssertionError(f"unexpected end of run: {result!r}")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
