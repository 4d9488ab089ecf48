"""Connection-oriented client/server through IPC gates (lecture: "hold state for a
client-server connection").

The server thread is reached only through IPC gates. Each client gets its own gate, bound
to the server with a distinct label chosen by whoever set up the connection; the kernel
shows the server that label on every message through the gate (`r.label`), and a client
cannot forge it. So the server keys its per-connection state by the label: here a running
total per connection. The clients never learn the server's thread: the gate hides it.

Protocol (message label = operation):
    ADD  [n]  -> reply [total of this connection after adding n, requests so far]
    CLOSE []  -> reply [final total]; the server drops the connection's state

    python examples/client_server.py     # or: l4sim run examples/client_server.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult, Timeout

ADD = 1
CLOSE = 2

# (client name, connection label, priority, the numbers it adds)
CLIENTS = [
    ("alice", 0xA11CE, 100, [1, 2, 3, 4]),
    ("bob", 0xB0B, 100, [10, 20, 30]),
    ("carol", 0xCA201, 120, [100, 200]),
    ("dave", 0xDA7E, 90, [7, 7, 7, 7, 7]),
]
WORK_PER_REQUEST = 500   # cycles the server computes per request


async def server(t: Any, log: list[tuple[int, str, int, int]]) -> None:
    """Serve every connection; state is a dict keyed by the gate label."""
    state: dict[int, list[int]] = {}      # label -> [total, requests]
    closed: dict[int, int] = {}
    r = await t.wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        conn = r.label
        op = r.tag.label
        await t.compute(WORK_PER_REQUEST)
        if op == ADD:
            st = state.setdefault(conn, [0, 0])
            st[0] += r.words[0]
            st[1] += 1
            log.append((t.now, "add", conn, st[0]))
            answer = [st[0], st[1]]
        elif op == CLOSE:
            total = state.pop(conn, [0, 0])[0]
            closed[conn] = total
            log.append((t.now, "close", conn, total))
            answer = [total]
        else:
            answer = []
        # Reply with a zero timeout, then wait openly, in one operation; a caller that
        # queued at us while we worked is taken at once.
        r = await t.reply_and_wait(words=answer)


async def client(t: Any, gate: int, numbers: list[int]) -> dict[str, Any]:
    """Open connection: add the numbers one by one, then close it."""
    totals = []
    for i, n in enumerate(numbers):
        r = await t.call(gate, words=[n], label=ADD)
        if not r.ok:
            raise RuntimeError(f"ADD failed: {r.error.name}")
        total, count = r.words
        if count != i + 1:
            raise RuntimeError(f"server counted {count} requests, expected {i + 1}")
        totals.append(total)
        await t.compute(300)              # some client-side work between requests,
        await t.sleep(Timeout.us(1))      # and a pause: the connections interleave
    r = await t.call(gate, label=CLOSE)
    if not r.ok:
        raise RuntimeError(f"CLOSE failed: {r.error.name}")
    return {"totals": totals, "final": r.words[0]}


def build(k: Kernel) -> None:
    stask = k.new_task("server")
    log: list[tuple[int, str, int, int]] = []
    srv = stask.new_thread(server, log, name="server", priority=100)
    for name, label, prio, numbers in CLIENTS:
        gate = k.new_gate(srv, label=label, name=f"conn-{name}")
        ctask = k.new_task(name)
        ctask.new_thread(client, ctask.add_cap(gate), numbers, name=name, priority=prio)


def expected() -> dict[str, dict[str, Any]]:
    """What each client must see: running totals of its own numbers only."""
    out = {}
    for name, _label, _prio, numbers in CLIENTS:
        totals, s = [], 0
        for n in numbers:
            s += n
            totals.append(s)
        out[name] = {"totals": totals, "final": s}
    return out


def report(k: Kernel, result: RunResult) -> None:
    by_name = {th.name: th for th in k.threads.values()}
    srv = by_name["server"]
    log = srv.args[0]
    print(f"server behind {len(CLIENTS)} gates; run ended {result.reason!r} at {result.now} cycles")
    for time, op, conn, total in log:
        name = next(n for n, lab, _p, _ns in CLIENTS if lab == conn)
        print(f"  {time:>8}  {op:<5} connection {conn:#8x} ({name:<5})  total {total}")
    want = expected()
    for name, _label, _prio, _numbers in CLIENTS:
        th = by_name[name]
        if not th.returned:
            raise AssertionError(f"client {name} did not finish: {result!r}")
        print(f"  client {name:<5}: running totals {th.result['totals']}, final {th.result['final']}")
        if th.result != want[name]:
            raise AssertionError(f"client {name} saw {th.result}, expected {want[name]}")
    if result.died:
        raise AssertionError(f"threads died: {result!r}")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
