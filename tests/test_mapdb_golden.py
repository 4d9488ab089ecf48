"""Golden files: the mapping database's dump after scripted map / grant / unmap steps.

The script runs in one kernel: A (a thread in sigma0's task, holding all memory 1:1) and
three workers B, C, D that each execute the commands A sends them. After every step the
dump is appended to the record, which must equal tests/golden/mapdb_script.txt (set
L4SIM_UPDATE_GOLDEN=1 to rewrite it after an intended change, and review the diff).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from l4sim import Fpage, IpcError, Kernel, MapItem, Rights

GOLDEN = Path(__file__).resolve().parent / "golden"

# Commands a worker executes: (op, fpage raw, send base, grant, target worker)
MAP, UNMAP, WAIT = 1, 2, 3


def run_script() -> str:
    k = Kernel(check=True)
    names = ("B", "C", "D")
    tasks = {n: k.new_task(n) for n in names}
    workers: dict[str, Any] = {}
    record: list[str] = []

    async def worker(t: Any, name: str) -> None:
        r = await t.wait(window=Fpage.mem(0x10000000 * (1 + names.index(name)), 24))
        while True:
            if r.tag.label == WAIT:  # a mapping arrived: acknowledge
                r = await t.reply_and_wait(words=[r.error])
                continue
            op, raw, base, grant, target = r.words
            if op == MAP:
                res = await t.call(task_sel[name][names[target]], label=WAIT,
                                   items=[MapItem(Fpage(raw), send_base=base, grant=bool(grant))])
                err = int(res.error)
            else:
                err = await t.unmap(Fpage(raw), self_too=bool(grant))
            r = await t.reply_and_wait(words=[err])

    for n in names:
        workers[n] = tasks[n].new_thread(worker, n, name=n, pager=None, priority=100)
    task_sel = {a: {b: tasks[a].add_cap(workers[b]) for b in names} for a in names}

    async def script(t: Any, sel: dict[str, int]) -> None:
        def step(title: str) -> None:
            record.append(f"## {title}\n{k.mapdb.dump()}")

        async def a_maps(to: str, fp: Fpage, base: int, grant: bool = False) -> None:
            r = await t.call(sel[to], label=WAIT, items=[MapItem(fp, send_base=base, grant=grant)])
            assert r.ok and r.words == (IpcError.OK,), r

        async def order(who: str, op: int, fp: Fpage, base: int = 0, flag: bool = False,
                        target: str = "B") -> None:
            r = await t.call(sel[who], words=[op, fp.raw, base, int(flag), names.index(target)])
            assert r.ok, r

        await a_maps("B", Fpage.mem(0x400000, 14, Rights.RWX), 0)
        step("A maps 16 KiB at 0x400000 to B (four 4 KiB entries)")
        await order("B", MAP, Fpage.mem(0x10000000, 12, Rights.R), 0, target="C")
        step("B maps its first page read-only to C")
        await order("B", MAP, Fpage.mem(0x10001000, 12, Rights.RW), 0x1000, target="D")
        step("B maps its second page read-write to D")
        await order("D", MAP, Fpage.mem(0x30001000, 12, Rights.RW), 0x1000, True, target="C")
        step("D grants that page to C: the node moves, D has none")
        await order("B", MAP, Fpage.mem(0x10000000, 12, Rights.RW), 0, target="C")
        step("B maps its first page again with RW: C's entry is upgraded")
        await t.unmap(Fpage.mem(0x401000, 12, Rights.W))
        step("A revokes W on 0x401000: C's granted page is read-only")
        await a_maps("B", Fpage.mem(0x600000, 12, Rights.RW), 0x2000)
        step("A maps 0x600000 over B's third page: the old entry is replaced")
        await t.unmap(Fpage.mem(0x400000, 14, Rights.RWX))
        step("A unmaps 16 KiB at 0x400000: B's, C's derived entries are gone")
        await order("B", UNMAP, Fpage.mem(0x10002000, 12, Rights.RWX), flag=True)
        step("B unmaps its own 0x10002000 (self too)")

    a = k.sigma0.task.new_thread(script, {n: k.sigma0.task.add_cap(w) for n, w in workers.items()},
                                 name="A", pager=None, priority=50)
    res = k.run()
    assert res.died == [] and a.returned, res
    return "\n".join(record)


def test_mapdb_dumps_after_a_scripted_sequence_are_golden() -> None:
    text = run_script()
    path = GOLDEN / "mapdb_script.txt"
    if os.environ.get("L4SIM_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_frame_view_shows_one_frames_tree() -> None:
    k = Kernel(check=True)

    async def body(t: Any) -> None:
        await t.store(0x5000, b"x")
        await t.store(0x9000, b"y")

    k.new_task("T").new_thread(body, name="T")
    k.run()
    full = k.mapdb.dump().splitlines()
    phys = k.new_task("probe").space  # nothing mapped
    assert phys.count == 0
    t_lines = [ln for ln in full if ln.strip().startswith("T ")]
    assert [ln.split()[1] for ln in t_lines] == ["0x5000", "0x9000"]
    frame = int(t_lines[0].split("phys ")[1].rstrip(")"), 16)
    view = k.mapdb.dump(frame=frame).splitlines()
    assert [ln.strip().split()[0] for ln in view] == ["sigma0", "anon-pager", "T"]
    assert "0x5000" in view[2] and all("0x9000" not in ln for ln in view)
