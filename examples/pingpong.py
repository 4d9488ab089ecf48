"""Ping-pong: two threads in two address spaces, N round trips of call / reply_and_wait.

The client calls the server N times with one word; the server echoes the word plus one
with `reply_and_wait` (reply to the caller with a zero timeout, then wait openly for the
next request) — the canonical L4 server loop. The client measures the simulated time of
the N round trips and prints the cycles per round trip, which the cost model sets:
two IPCs (entry/exit + IPC path each) and two thread switches across address spaces.

    python examples/pingpong.py          # or: l4sim run examples/pingpong.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult

ROUNDS = 1000


async def server(t: Any) -> None:
    """Echo server: reply with the request word plus one, forever."""
    r = await t.wait()
    while True:
        if not r.ok:                       # a failed reply (caller gone): wait afresh
            r = await t.wait()
            continue
        r = await t.reply_and_wait(words=[r.words[0] + 1])


async def client(t: Any, srv: int, rounds: int) -> dict[str, Any]:
    """Call the server `rounds` times; return what it saw and the time it took."""
    start = t.now
    value = 0
    labels = set()
    for _ in range(rounds):
        r = await t.call(srv, words=[value])
        if not r.ok:
            raise RuntimeError(f"call failed: {r.error.name}")
        value = r.words[0]
        labels.add(r.label)
    end = t.now
    return {"value": value, "start": start, "end": end, "rounds": rounds,
            "reply_labels": sorted(labels)}


def build(k: Kernel, rounds: int = ROUNDS) -> None:
    """A server task and a client task; the client holds a thread capability to the
    server (direct IPC: the server sees the client's tid as label, and vice versa)."""
    stask = k.new_task("pong")
    ctask = k.new_task("ping")
    srv = stask.new_thread(server, name="pong")
    ctask.new_thread(client, ctask.add_cap(srv), rounds, name="ping")


def _thread(k: Kernel, name: str) -> Any:
    return next(th for th in k.threads.values() if th.name == name)


def cycles_per_round_trip(k: Kernel) -> float:
    """From a finished run: simulated cycles per round trip as the client measured them."""
    res = _thread(k, "ping").result
    return float((res["end"] - res["start"]) / res["rounds"])


def report(k: Kernel, result: RunResult) -> None:
    ping = _thread(k, "ping")
    pong = _thread(k, "pong")
    res = ping.result
    if not ping.returned or res is None:
        raise AssertionError(f"the client did not finish: {result!r}")
    rounds = res["rounds"]
    per_rt = cycles_per_round_trip(k)
    ns = per_rt * 1000 / k.mhz
    print(f"{rounds} round trips between two address spaces (call / reply_and_wait, 1 word)")
    print(f"final value: {res['value']} (expected {rounds})")
    print(f"simulated: {res['end'] - res['start']} cycles, {per_rt:.1f} cycles "
          f"({ns:.1f} ns at {k.mhz} MHz) per round trip")
    if res["value"] != rounds:
        raise AssertionError(f"final value {res['value']} != {rounds}")
    if res["reply_labels"] != [pong.tid]:
        raise AssertionError(f"replies carried labels {res['reply_labels']}, expected the "
                             f"server's tid {pong.tid}")
    if result.reason != "done" or result.died:
        raise AssertionError(f"unexpected end of run: {result!r}")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
