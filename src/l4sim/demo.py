"""`l4sim demo`: a small built-in system that shows every IPC primitive, narrated.

One kernel, two tasks, eight threads. The threads act in scenes separated by absolute
sleeps (so the story is easy to follow in simulated time), and each one narrates what it
does and what the kernel answered. Every answer is also checked against what L4's
semantics say it must be; `run_demo` returns 0 when all were as expected, 1 otherwise.

    server task:  srv   a server, reached through a gate (label 0x51) and directly
                  mbox  a thread that never receives (it sleeps forever)
    client task:  cli   the main client
                  other a second client
                  ctl   a controller that cancels and deletes
                  app   a thread whose pager is pgr
                  streamer  sends UTCB words, then a string, to echo
    server task:  pgr   a user-level pager, itself paged by sigma0
                  echo  echoes UTCB words, receives a string

Scenes: an open wait with a finite timeout; sleep; call through a gate (the server sees
the gate's label) and reply_and_wait; a direct send (the server sees the sender's tid);
a closed receive that leaves another sender queued, then an open wait that takes it; a
reply that does not wait; send timeouts zero and finite; a cancel by ex_regs; the
deletion of a thread with senders queued at it; an interrupt delivered to a driver
(masked after delivery, raises coalescing while masked); and an exception IPC whose
handler emulates an instruction; a page fault resolved by a user-level pager that
got its memory from sigma0; UTCB IPC; and a long IPC whose receive buffer pages in
during the copy.

Everything is deterministic: the log is the same on every run.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .kernel import Fpage, IpcError, Kernel, MapItem, MsgTag, Rights, RunResult, StringItem, Timeout
from .trace import write_chrome, write_mermaid
from .user import UserContext

GATE_LABEL = 0x51


def _show(value: object) -> str:
    """An outcome as the log shows it: error names, not enum reprs."""
    if isinstance(value, IpcError):
        return value.name
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        inner = ", ".join(_show(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


class Narrator:
    """Collects the narrated log (simulated time, thread, text) and the checks."""

    def __init__(self, mhz: int) -> None:
        self.mhz = mhz
        self.lines: list[tuple[int, str, str, str]] = []   # (cycles, thread, text, style)
        self.failed: list[str] = []
        self.checks = 0

    def say(self, t: UserContext, text: str, style: str = "") -> None:
        self.lines.append((t.now, t.name, text, style))

    def scene(self, t: UserContext, title: str) -> None:
        self.lines.append((t.now, "", title, "bold magenta"))

    def expect(self, t: UserContext, what: str, got: object, want: object) -> None:
        """Narrate an outcome, and check it against the expected one."""
        self.checks += 1
        shown = _show(got)
        if got == want:
            self.say(t, f"{what}: {shown}", "green")
        else:
            wanted = _show(want)
            self.say(t, f"{what}: {shown} — expected {wanted}", "bold red")
            self.failed.append(f"{t.name}: {what}: got {shown}, expected {wanted}")


def build(k: Kernel, n: Narrator) -> dict[str, Any]:
    """The demo system on `k`; returns the threads by name."""

    def at(us: int) -> Timeout:
        return Timeout.at(us * k.mhz)

    ids: dict[str, int] = {}    # thread name -> tid
    sel: dict[str, int] = {}    # capability selectors, filled in below (boot configuration)

    async def srv(t: UserContext) -> None:
        n.scene(t, "Scene 1 — open wait with a finite timeout (nobody sends)")
        n.say(t, "wait() for anyone, receive timeout 5 µs")
        r = await t.wait(receive_timeout=Timeout.us(5))
        n.expect(t, "the timeout expired", r.error, IpcError.RETIMEOUT)

        n.say(t, "wait() for anyone, no timeout")
        r = await t.wait()
        n.expect(t, "received through the gate", r.error, IpcError.OK)
        n.expect(t, "label = the gate's label (the client cannot forge it)", hex(r.label),
                 hex(GATE_LABEL))
        n.expect(t, "words", r.words, (6, 7))
        await t.compute(1000)
        n.say(t, "computed 1000 cycles; reply_and_wait(words=[42]): reply, then wait openly")
        r = await t.reply_and_wait(words=[42])

        n.expect(t, "received a direct send", r.error, IpcError.OK)
        n.expect(t, "label = the sender's tid (direct IPC)", r.label, ids["cli"])
        n.say(t, "receive(cli): a closed receive, from cli only")
        r = await t.receive(sel["srv:cli"])
        n.expect(t, "closed receive got cli's message, not other's: (label, words)",
                 (r.label, r.words),
                 (ids["cli"], (2,)))
        n.say(t, "wait(): open again — other's message is already queued")
        r = await t.wait()
        n.expect(t, "took the queued sender at once: (label, words)", (r.label, r.words),
                 (ids["other"], (99,)))

        n.say(t, "wait()")
        r = await t.wait()
        n.expect(t, "call through the gate: (label, words)", (hex(r.label), r.words),
                 (hex(GATE_LABEL), (5,)))
        n.say(t, "reply(words=[6]): zero timeout, and go on without waiting")
        r = await t.reply(words=[6])
        n.expect(t, "reply", r.error, IpcError.OK)
        n.say(t, "busy for 10 µs (sleep): not receiving")
        r = await t.sleep(Timeout.us(10))
        n.expect(t, "sleep ended", r.error, IpcError.RETIMEOUT)
        r = await t.reply(words=[0])
        n.expect(t, "a second reply: the one-shot reply capability is used up", r.error,
                 IpcError.ENOT_EXISTENT)
        n.say(t, "wait() — idle from now on")
        await t.wait()

    async def mbox(t: UserContext) -> None:
        n.say(t, "sleep(never): receives from nobody, ever")
        await t.sleep(Timeout.never())

    async def cli(t: UserContext) -> None:
        gate, srv_sel, mbox_sel = sel["gate"], sel["srv"], sel["mbox"]
        n.say(t, "sleep until 10 µs")
        r = await t.sleep(at(10))
        n.expect(t, "sleep ended", r.error, IpcError.RETIMEOUT)

        n.scene(t, "Scene 2 — call through an IPC gate; the server replies and waits")
        n.say(t, f"call(gate, words=[6, 7]) — the gate is bound to srv with label {GATE_LABEL:#x}")
        r = await t.call(gate, words=[6, 7])
        n.expect(t, "reply: (error, words)", (r.error, r.words), (IpcError.OK, (42,)))
        n.expect(t, "reply label = the server's tid", r.label, ids["srv"])

        await t.sleep(at(20))
        n.scene(t, "Scene 3 — direct send; closed receive; the queued sender")
        n.say(t, "send(srv, words=[1]) through a thread capability")
        r = await t.send(srv_sel, words=[1])
        n.expect(t, "send", r.error, IpcError.OK)
        await t.sleep(at(30))
        n.say(t, "send(srv, words=[2])")
        r = await t.send(srv_sel, words=[2])
        n.expect(t, "send", r.error, IpcError.OK)

        await t.sleep(at(40))
        n.scene(t, "Scene 4 — reply without wait; send timeouts zero and finite")
        n.say(t, "call(gate, words=[5])")
        r = await t.call(gate, words=[5])
        n.expect(t, "reply: (error, words)", (r.error, r.words), (IpcError.OK, (6,)))
        n.say(t, "send(srv, timeout zero) while srv is busy")
        r = await t.send(srv_sel, words=[7], send_timeout=Timeout.zero())
        n.expect(t, "the receiver is not ready now", r.error, IpcError.SETIMEOUT)
        n.say(t, "send(srv, timeout 3 µs) while srv is busy")
        r = await t.send(srv_sel, words=[8], send_timeout=Timeout.us(3))
        n.expect(t, "3 µs passed without a receiver", r.error, IpcError.SETIMEOUT)

        await t.sleep(at(60))
        n.scene(t, "Scene 5 — cancel by ex_regs")
        n.say(t, "receive(srv): a closed receive from srv, which will never send to us")
        r = await t.receive(srv_sel)
        n.expect(t, "ctl cancelled the receive", r.error, IpcError.RECANCELED)

        await t.sleep(at(70))
        n.scene(t, "Scene 6 — delete a thread that has senders queued")
        n.say(t, "send(mbox, words=[1]): mbox never receives, so we queue")
        r = await t.send(mbox_sel, words=[1])
        n.expect(t, "mbox was deleted while we were queued", r.error, IpcError.SECANCELED)
        r = await t.send(mbox_sel, words=[1])
        n.expect(t, "send to the deleted mbox", r.error, IpcError.ENOT_EXISTENT)

    async def other(t: UserContext) -> None:
        srv_sel, mbox_sel = sel["srv"], sel["mbox"]
        await t.sleep(at(25))
        n.say(t, "send(srv, words=[99]) — srv receives from cli only: we queue")
        r = await t.send(srv_sel, words=[99])
        n.expect(t, "send, delivered when srv waited openly", r.error, IpcError.OK)
        await t.sleep(at(71))
        n.say(t, "send(mbox, words=[2]): queue behind cli")
        r = await t.send(mbox_sel, words=[2])
        n.expect(t, "mbox was deleted while we were queued", r.error, IpcError.SECANCELED)

    async def drv(t: UserContext) -> None:
        irq = sel["irq"]
        await t.sleep(at(80))
        n.scene(t, "Scene 7 — interrupt IPC: a driver thread bound to an IRQ")
        n.say(t, "irq_bind(irq, label=0x1E); irq_receive(irq): unmask, then wait for it only")
        await t.irq_bind(irq, 0x1E)
        r = await t.irq_receive(irq)
        n.expect(t, "the device raised the line: (error, tag label, label)",
                 (r.error, r.tag.label, hex(r.label)), (IpcError.OK, -1, hex(0x1E)))
        n.say(t, "the IRQ is masked now; the device raises it twice more; we compute 20 µs")
        await t.compute(20 * k.mhz)
        r = await t.irq_receive(irq, receive_timeout=Timeout.zero())
        n.expect(t, "unmask: the two raises coalesced into one pending delivery",
                 (r.error, r.tag.label), (IpcError.OK, -1))
        r = await t.irq_receive(irq, receive_timeout=Timeout.zero())
        n.expect(t, "nothing more pending", r.error, IpcError.RETIMEOUT)

    async def emu(t: UserContext) -> None:
        await t.sleep(at(110))
        n.scene(t, "Scene 8 — exception IPC: a handler emulates an instruction")
        n.say(t, "raise_exception(trap 6, operand 0xF0F0): an opcode this CPU lacks")
        r = await t.raise_exception(6, 0xF0F0)
        n.expect(t, "the handler's reply is the result (popcount)", r.words, (8,))

    async def handler(t: UserContext) -> None:
        r = await t.wait()
        n.expect(t, "exception IPC: (tag label, trap, error code)",
                 (r.tag.label, r.words[0], hex(r.words[1])), (-5, 6, hex(0xF0F0)))
        n.say(t, "emulate popcount and reply: the faulting thread resumes")
        await t.reply(words=[bin(r.words[1]).count("1")])

    async def pgr(t: UserContext) -> None:
        await t.sleep(at(120))
        n.scene(t, "Scene 9 — a page fault resolved by a user-level pager")
        n.say(t, "store(0x200000): pgr's own pager is sigma0, which maps the page 1:1")
        await t.store(0x200000, b"\0")
        n.say(t, "wait() — pgr is app's pager")
        r = await t.wait()
        n.expect(t, "page-fault IPC: (tag label, MR0 = address | write bit)",
                 (r.tag.label, hex(r.words[0])), (-2, hex(0x10000 | 2)))
        n.say(t, "reply with a MapItem: our page 0x200000 lands at the faulting page")
        await t.reply(items=[MapItem(Fpage.mem(0x200000, 12, Rights.RW),
                                     send_base=r.words[0] & ~0xFFF)])
        await t.wait()

    async def app(t: UserContext) -> None:
        await t.sleep(at(125))
        n.say(t, "store(0x10000, b'hi'): not mapped — a page fault, IPC to pgr")
        await t.store(0x10000, b"hi")
        n.expect(t, "the store completed after the pager's reply; load(0x10000, 2)",
                 await t.load(0x10000, 2), b"hi")

    async def echo(t: UserContext) -> None:
        n.say(t, "wait(buffers=[(0x300000, 8192)]): offers a string buffer, not paged in")
        r = await t.wait(buffers=[(0x300000, 8192)])
        n.expect(t, "UTCB IPC: 8 words arrived, copied MR to MR", r.words, tuple(range(1, 9)))
        n.say(t, "reply_and_wait(tag=MsgTag(words=8)): echo the MRs as they are")
        r = await t.reply_and_wait(tag=MsgTag(words=8))
        n.expect(t, "a string arrived: (error, string_bytes)", (r.error, r.string_bytes),
                 (IpcError.OK, (8192,)))
        n.expect(t, "our buffer was paged in during the copy; load(0x300000, 5)",
                 await t.load(0x300000, 5), b"hello")
        await t.wait()

    async def streamer(t: UserContext) -> None:
        echo_sel = sel["echo"]
        await t.sleep(at(140))
        n.scene(t, "Scene 10 — UTCB IPC: 8 words, MR to MR")
        n.say(t, "write 1..8 into our MRs; call(echo, tag=MsgTag(words=8))")
        t.utcb.mr[:8] = array("Q", range(1, 9))
        r = await t.call(echo_sel, tag=MsgTag(words=8))
        n.expect(t, "the echo: (error, words)", (r.error, r.words), (IpcError.OK, tuple(range(1, 9))))
        await t.sleep(at(160))
        n.scene(t, "Scene 11 — long IPC: a string copied between address spaces, page faults "
                   "in the receiver's buffer during the copy")
        await t.store(0x10000, b"hello" + bytes(8187))
        n.say(t, "send(echo, items=[StringItem(0x10000, 8192)])")
        r = await t.send(echo_sel, items=[StringItem(0x10000, 8192)])
        n.expect(t, "sent: (error, string_bytes)", (r.error, r.string_bytes), (IpcError.OK, (8192,)))

    async def ctl(t: UserContext) -> None:
        cli_sel, mbox_sel = sel["cli"], sel["mbox"]
        await t.sleep(at(65))
        n.say(t, "ex_regs(cli, cancel=True)")
        err = await t.ex_regs(cli_sel, cancel=True)
        n.expect(t, "ex_regs", err, IpcError.OK)
        await t.sleep(at(75))
        n.say(t, "delete(mbox) — two senders are queued at it")
        err = await t.delete(mbox_sel)
        n.expect(t, "delete", err, IpcError.OK)

    stask = k.new_task("server")
    ctask = k.new_task("client")
    th_srv = stask.new_thread(srv, name="srv")
    th_mbox = stask.new_thread(mbox, name="mbox")
    th_cli = ctask.new_thread(cli, name="cli")
    th_other = ctask.new_thread(other, name="other")
    th_ctl = ctask.new_thread(ctl, name="ctl", priority=120)
    th_drv = stask.new_thread(drv, name="drv", priority=150)
    th_handler = ctask.new_thread(handler, name="handler", priority=140)
    th_emu = ctask.new_thread(emu, name="emu", exc_handler=th_handler)
    th_echo = stask.new_thread(echo, name="echo", priority=120)
    th_streamer = ctask.new_thread(streamer, name="streamer")
    sel["echo"] = ctask.add_cap(th_echo)
    th_pgr = stask.new_thread(pgr, name="pgr", priority=130, pager=k.sigma0)
    th_app = ctask.new_thread(app, name="app", pager=th_pgr)
    irq = k.new_irq("dev")
    sel["irq"] = stask.add_cap(irq)        # the driver's interrupt line
    for us in (85, 92, 95):                  # a device raising the line (host events)
        k.at(us * k.mhz, irq.trigger)
    gate = k.new_gate(th_srv, label=GATE_LABEL, name="hello")
    sel["gate"] = ctask.add_cap(gate)       # the client task: a gate to srv,
    sel["srv"] = ctask.add_cap(th_srv)      # a thread capability to srv (direct IPC),
    sel["mbox"] = ctask.add_cap(th_mbox)    # one to mbox (with the delete right),
    sel["cli"] = th_cli.self_sel            # and cli's own, which ctl uses for ex_regs
    sel["srv:cli"] = stask.add_cap(th_cli)  # the server task: cli, for the closed receive
    threads = {"srv": th_srv, "mbox": th_mbox, "cli": th_cli, "other": th_other, "ctl": th_ctl,
               "drv": th_drv, "handler": th_handler, "emu": th_emu, "pgr": th_pgr, "app": th_app,
               "echo": th_echo, "streamer": th_streamer}
    ids.update({name: th.tid for name, th in threads.items()})
    return threads


def _table(n: Narrator) -> Table:
    table = Table(title="l4sim demo — synchronous IPC, narrated", title_style="bold",
                  show_lines=False, expand=False)
    table.add_column("µs", justify="right", style="cyan", no_wrap=True)
    table.add_column("cycles", justify="right", style="dim", no_wrap=True)
    table.add_column("thread", style="yellow", no_wrap=True)
    table.add_column("what happens")
    for cycles, who, text, style in n.lines:
        us = f"{cycles / n.mhz:.2f}"
        if not who:
            table.add_row("", "", "", Text(text, style=style))
        else:
            table.add_row(us, str(cycles), who, Text(text, style=style))
    return table


def run_demo(console: Console | None = None, *, check: bool = True,
             trace_path: Path | None = None, mermaid_path: Path | None = None,
             html_path: Path | None = None) -> int:
    """Run the demo and print its narrated log; 0 if every outcome was as expected.
    With `trace_path` / `mermaid_path` / `html_path`, also write its trace, sequence
    diagram and run report."""
    console = console or Console()
    k = Kernel(check=check, trace=trace_path is not None or mermaid_path is not None
               or html_path is not None)
    n = Narrator(k.mhz)
    threads = build(k, n)
    result: RunResult = k.run()
    console.print(_table(n))
    if trace_path is not None:
        console.print(f"trace: {write_chrome(k, trace_path)} (open it in https://ui.perfetto.dev)")
    if mermaid_path is not None:
        console.print(f"sequence diagram: {write_mermaid(k, mermaid_path)}")
    if html_path is not None:
        from .trace.html import write_html

        page = write_html(k, html_path, result, title="l4sim demo")
        console.print(f"run report: {page} ({page.stat().st_size:,} bytes; open it in a browser)")
    died = ", ".join(f"{th.name} ({why})" for th, why in result.died) or "none"
    blocked = ", ".join(f"{th.name} ({th.state_name})" for th in result.blocked) or "none"
    console.print(f"run ended: [bold]{result.reason}[/] at {result.now} cycles "
                  f"({result.now / k.mhz:.2f} µs), {result.steps} kernel entries")
    console.print(f"still blocked (idle): {blocked}; ended other than by returning: {died}")
    want_end: list[tuple[str, Callable[[], bool]]] = [
        ("the run ends 'done' (only idle threads left)", lambda: result.reason == "done"),
        ("only mbox died, deleted", lambda: [(th.name, why) for th, why in result.died]
         == [("mbox", "deleted")]),
        ("cli, other, ctl, drv, handler and emu returned",
         lambda: all(threads[x].returned
                     for x in ("cli", "other", "ctl", "drv", "handler", "emu"))),
    ]
    for what, ok in want_end:
        n.checks += 1
        if not ok():
            n.failed.append(what)
    if n.failed:
        console.print(f"[bold red]{len(n.failed)} of {n.checks} outcomes differ from what L4 prescribes:[/]")
        for line in n.failed:
            console.print(f"  [red]{line}[/]")
        return 1
    console.print(f"[bold green]all {n.checks} outcomes as L4 prescribes[/]")
    return 0
