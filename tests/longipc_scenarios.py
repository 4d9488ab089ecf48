"""Long-IPC scenarios shared by test_longipc.py and the state-machine witnesses.

One sender S (task "S") sends a string of `size` bytes from SRC to a receiver R (task "R")
that offers a buffer at BUF. A pager P (a thread in sigma0's task) serves the pages of
either side that the scenario leaves unmapped: S's pages from frames at SRC_FRAMES, which
the scenario fills with a pattern first, R's from frames at BUF_FRAMES; it records every
fault (the label it saw, the address, the write bit). A third thread X, at priority 250,
can act at a given time (cancel or delete a side). `run_case` returns everything a test
compares: both results, the faults, what R's buffer holds, who died.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from l4sim import Fpage, IpcError, Kernel, MapItem, Rights, StringItem, Task, Timeout
from l4sim.kernel.costs import PROFILES

PAGE = 4096
SRC = 0x10000
BUF = 0x400000
SRC_FRAMES = 0x1000000
BUF_FRAMES = 0x2000000
T0 = 500_000  # when the second party arrives (after both have paged in their buffers)

COMBOS = list(itertools.product(("window", "kernel-buffer"), ("symmetric", "sender-driven")))
COMBO_IDS = [f"{c}-{t}" for c, t in COMBOS]

# Both copy strategies at the same price per byte, so that an event at a given time falls
# at the same byte in every combination (the strategies still differ in what they charge).
EVEN = replace(PROFILES["core2-sysenter"], name="even", string_byte_kernel_buffer=0.5,
               string_byte_window=0.5, window_setup=0)


def pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


@dataclass
class Outcome:
    snd: tuple[IpcError, tuple[int, ...]] | None = None
    rcv: tuple[IpcError, tuple[int, ...], tuple[int, ...]] | None = None
    faults: list[tuple[str, int, bool]] = field(default_factory=list)
    buffer: bytes = b""
    died: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""
    kernel: Any = None

    def comparable(self) -> tuple[Any, ...]:
        return self.snd, self.rcv, self.faults, self.buffer, self.died, self.reason


def read_space(task: Task, addr: int, n: int) -> bytes:
    """What `task` sees at [addr, addr + n), read by the host; '?' for an unmapped byte."""
    k = task.kernel
    out = bytearray()
    for a in range(addr, addr + n):
        m = task.space.lookup(a)
        out += k.phys.read(m.phys + a - m.base, 1) if m is not None else b"?"
    return bytes(out)


def run_case(copy: str, transfer: str, *, sender_first: bool = True, call: bool = False,
             size: int = 3 * PAGE, bufsize: int | None = None, snd_unmapped: bool = False,
             rcv_unmapped: bool = False, pager: str = "content", pager_delay: int = 100_000,
             snd_pf_to: Timeout | None = None, rcv_pf_to: Timeout | None = None,
             rcv_timeout: Timeout | None = None, act_at: int | None = None,
             action: str = "", even_costs: bool = False, trace: bool = False) -> Outcome:
    """pager: "content" (maps the frame), "refuse" (label -1), "slow" (maps after
    `pager_delay` cycles), "empty" (replies without mapping). action: "cancel_rcv",
    "cancel_snd", "delete_rcv", "delete_snd" at `act_at` cycles."""
    k = Kernel(check=True, trace=trace, copy=copy, transfer=transfer,
               profile=EVEN if even_costs else "core2-sysenter")
    bufsize = size if bufsize is None else bufsize
    out = Outcome(kernel=k)
    data = pattern(size)
    k.phys.write(SRC_FRAMES, data)
    ids: dict[int, str] = {}

    async def pager_body(t: Any) -> None:
        r = await t.wait()
        while True:
            if not r.ok:  # our reply found nobody waiting (its fault timed out): wait again
                r = await t.wait()
                continue
            addr = r.words[0]
            who = ids.get(r.label, str(r.label))
            out.faults.append((who, addr & ~0xFFF, bool(addr & 2)))
            if pager == "refuse":
                r = await t.reply_and_wait(label=-1)
                continue
            if pager == "slow":
                await t.sleep(Timeout.cycles(pager_delay))
            if pager == "empty":
                r = await t.reply_and_wait()
                continue
            page = addr & ~0xFFF
            frame = SRC_FRAMES + page - SRC if who == "S" else BUF_FRAMES + page - BUF
            r = await t.reply_and_wait(items=[MapItem(Fpage.mem(frame, 12, Rights.RW), send_base=page)])

    p = k.sigma0.task.new_thread(pager_body, name="P", priority=200, pager=None)
    rt, st = k.new_task("R"), k.new_task("S")

    async def receiver(t: Any) -> None:
        if not rcv_unmapped:
            await t.store(BUF, bytes(bufsize))  # paged in by the anonymous-memory pager
        if sender_first:
            await t.sleep(Timeout.at(T0))
        kw: dict[str, Any] = {"buffers": [(BUF, bufsize)]}
        if rcv_pf_to is not None:
            kw["pagefault_timeout"] = rcv_pf_to
        if rcv_timeout is not None:
            kw["receive_timeout"] = rcv_timeout
        r = await t.wait(**kw)
        out.rcv = (r.error, r.words, r.string_bytes)
        if call and r.ok:
            await t.reply(words=[r.words[0] + 1])

    async def sender(t: Any, dest: int) -> None:
        if not snd_unmapped:
            await t.store(SRC, data)
        if not sender_first:
            await t.sleep(Timeout.at(T0))
        kw: dict[str, Any] = {"words": [5], "items": [StringItem(SRC, size)]}
        if snd_pf_to is not None:
            kw["pagefault_timeout"] = snd_pf_to
        r = await (t.call(dest, **kw) if call else t.send(dest, **kw))
        out.snd = (r.error, r.string_bytes)

    # Omitted pager: the anonymous-memory pager.
    r_th = rt.new_thread(receiver, name="R", priority=100, **({"pager": p} if rcv_unmapped else {}))
    s_th = st.new_thread(sender, st.add_cap(r_th), name="S", priority=100,
                         **({"pager": p} if snd_unmapped else {}))
    ids.update({r_th.tid: "R", s_th.tid: "S"})

    if action:
        xt = k.new_task("X")
        sel = {"rcv": xt.add_cap(r_th), "snd": xt.add_cap(s_th)}

        async def actor(t: Any) -> None:
            await t.sleep(Timeout.at(act_at or 0))
            verb, side = action.split("_")
            if verb == "cancel":
                await t.ex_regs(sel[side], cancel=True)
            else:
                await t.delete(sel[side])

        xt.new_thread(actor, name="X", priority=250, pager=None)

    res = k.run()
    out.reason = res.reason
    out.died = [(th.name, why) for th, why in res.died]
    out.buffer = read_space(rt, BUF, bufsize) if rt.alive else b""
    return out
