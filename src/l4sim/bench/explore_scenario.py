"""The scenario of `l4sim bench explore`: ten threads and about a hundred IPCs.

A server and nine clients of one task; each client calls the server five times and
after each reply increments its own word of a shared page (a load and a store the
explorer can reorder: the clients' words are independent, which the reduction sees).
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, RunResult

CLIENTS = 9
CALLS = 5
SLOTS = 0x10000


async def server(t: Any) -> None:
    r = await t.wait()
    while True:
        r = await t.reply_and_wait(words=[r.words[0] + 1 if r.words else 0])


async def client(t: Any, sel: int, slot: int, calls: int) -> int:
    total = 0
    for i in range(calls):
        r = await t.call(sel, words=[i])
        total += r.words[0]
        value = await t.load_word(slot)
        await t.store_word(slot, value + 1)
    return total


def build(k: Kernel, clients: int = CLIENTS, calls: int = CALLS) -> None:
    srv = k.new_task("server").new_thread(server, name="server", priority=110)
    app = k.new_task("clients")
    sel = app.add_cap(srv)
    for i in range(clients):
        app.new_thread(client, sel, SLOTS + 8 * i, calls, name=f"c{i}", priority=100)


def check(k: Kernel, result: RunResult, clients: int = CLIENTS) -> None:
    done = [th for th in k.threads.values() if th.name.startswith("c") and th.returned]
    assert len(done) == clients, f"{len(done)} of {clients} clients finished"
