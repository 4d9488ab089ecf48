"""The recipes of docs/api.md work as written: capabilities to threads created later
(a selector added afterwards; an object flexpage by IPC, read from what landed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l4sim import CapRights, Fpage, Kernel, MapItem

API = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_reference_covers_what_users_asked_for() -> None:
    text = API.read_text()
    for words in ("How a thread gets capabilities to threads created after it",
                  "### Page fault (label −2)", "### What landed after a map", "### sigma0",
                  "## Error codes", "k.us(n)", "kernel entries", "`k.at(time, callback)`",
                  "`k.delete(obj)`", "l4sim.platform"):
        assert words in text, words


def test_a_selector_added_after_the_thread_was_made() -> None:
    async def caller(t: Any, sel: list[int]) -> int:
        r = await t.call(sel[0], words=[1])
        return r.words[0]

    async def server(t: Any) -> None:
        r = await t.wait()
        await t.reply(words=[r.words[0] + 1])

    k = Kernel(check=True)
    ta = k.new_task("a")
    sel = [0]
    a = ta.new_thread(caller, sel, name="a")
    b = k.new_task("b").new_thread(server, name="b")
    sel[0] = ta.add_cap(b)
    k.run()
    assert a.result == 2


def test_a_capability_mapped_by_ipc_and_read_from_what_landed() -> None:
    async def giver(t: Any, rcv: int, thing: int) -> None:
        await t.send(rcv, items=[MapItem(Fpage.obj(thing, 0, CapRights.ALL))])

    async def taker(t: Any) -> tuple[int, ...]:
        r = await t.wait(window=Fpage.obj(16, 4))
        landed = Fpage(t.utcb.mr[len(r.words) + 1])
        r2 = await t.call(landed.address >> 12, words=[1])
        return landed.address >> 12, *r2.words

    async def server(t: Any) -> None:
        await t.wait()
        await t.reply(words=[7])

    k = Kernel(check=True)
    s = k.new_task("s").new_thread(server, name="srv")
    tk = k.new_task("t").new_thread(taker, name="taker", priority=120)
    g = k.new_task("g")
    g.new_thread(giver, g.add_cap(tk), g.add_cap(s), name="giver")
    k.run()
    assert tk.result == (16, 7)
