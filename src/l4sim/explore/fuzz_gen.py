"""The fuzzer's programs: a data structure that describes a whole system, made from a seed,
rendered as a standalone Python program, and shrunk.

A `Program` says which tasks, threads (priority, pager, exception handler, preempter),
gates, IRQs and capabilities (with their rights) exist, what each thread does (a list of
`Op`: one system call each, valid or malformed, plus an optional `finally:` block) and which
host events (`k.at`, or between the steps of a stepped run) cancel or delete objects,
trigger IRQs, make threads or move them between CPUs. `render` turns it into the source
of a module with `build(k, rt)`; the fuzzer runs exactly that source, so a rendered
reproduction is the program that failed. `shrinks` lists smaller variants of a program.

Selectors are symbolic (`Sel(cap id)`): removing a thread or a capability while shrinking
leaves the other selectors right; a selector whose capability is gone renders as 0.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

# Addresses the programs use (every task has the same layout).
DATA = 0x10000          # 16 data pages
SECRET_ADDR = 0x8000    # where each task plants its secret (see the escalation oracle)
BUF = 0x40000           # string receive buffers
WIN = 0x100000          # receive windows for memory
OBJ_WIN = 16            # receive window for capabilities: selectors 16..
SPACE_END = 1 << 47


@dataclass(frozen=True)
class Call:
    """An expression `fn(*args, **kwargs)` in the rendered program."""

    fn: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Sel:
    """The selector that capability `cap` got in its task."""

    cap: int


@dataclass(frozen=True)
class Code:
    """Verbatim code, e.g. `x.self_sel`."""

    text: str


@dataclass(frozen=True)
class Op:
    """One statement of a thread body: `await x.NAME(*args, **kwargs)`; `exit` is `return`,
    and `plain` ops are called without `await` (UTCB writes, `die`)."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def plain(self) -> bool:
        return self.name in PLAIN_OPS


PLAIN_OPS = frozenset({"set_mr", "set_br", "set_bdr", "die"})
# Operations that enter the kernel (or may): what the fuzzer counts as system calls.
SYSCALL_OPS = frozenset({
    "call", "send", "receive", "wait", "reply_and_wait", "reply", "sleep", "ipc", "unmap",
    "ex_regs", "delete", "raise_exception", "irq_bind", "irq_detach", "irq_trigger",
    "irq_unmask", "irq_receive", "irq_wait", "reply_map", "migrate"})


@dataclass(frozen=True)
class TaskSpec:
    id: int


@dataclass(frozen=True)
class ThreadSpec:
    id: int
    task: int
    priority: int
    pager: str | int = "default"          # "default", "sigma0", "none" or a thread id
    exc_handler: int | None = None
    preempter: int | None = None
    cpu: int = 0
    role: str = "client"
    ops: tuple[Op, ...] = ()
    final: tuple[Op, ...] | None = None   # a `finally:` block around the ops


@dataclass(frozen=True)
class GateSpec:
    id: int
    thread: int
    label: int


@dataclass(frozen=True)
class CapSpec:
    id: int
    task: int
    kind: str                              # "thread", "gate", "irq", "task", "sigma0"
    target: int
    rights: int


@dataclass(frozen=True)
class HostEvent:
    time: int
    action: str                            # "cancel", "delete", "trigger", "migrate", "spawn"
    kind: str                              # "thread", "gate", "irq", "task"
    target: int
    cpu: int = 0                           # where "migrate" moves the thread, "spawn" makes one
    priority: int = 0                      # of the thread "spawn" makes in the task


@dataclass(frozen=True)
class Program:
    seed: int
    kernel: tuple[tuple[str, Any], ...] = ()
    until: int | None = None
    max_steps: int | None = None
    tasks: tuple[TaskSpec, ...] = ()
    threads: tuple[ThreadSpec, ...] = ()
    gates: tuple[GateSpec, ...] = ()
    irqs: tuple[int, ...] = ()
    caps: tuple[CapSpec, ...] = ()
    events: tuple[HostEvent, ...] = ()
    stepped: bool = False  # run by `k.step()`, the host events applied between steps
    note: str = field(default="", compare=False)

    @property
    def calls(self) -> int:
        """System-call statements in the program (ops that enter the kernel)."""
        return sum(1 for th in self.threads for op in (*th.ops, *(th.final or ()))
                   if op.name in SYSCALL_OPS)

    def shape(self) -> dict[str, int]:
        return {"tasks": len(self.tasks), "threads": len(self.threads),
                "ops": sum(len(th.ops) + len(th.final or ()) for th in self.threads),
                "gates": len(self.gates), "irqs": len(self.irqs), "caps": len(self.caps),
                "events": len(self.events)}


# --- rendering -----------------------------------------------------------------------

def _lit(v: Any, caps: set[int]) -> str:
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int):
        return hex(v) if abs(v) >= 4096 else str(v)
    if isinstance(v, Sel):
        return f"c{v.cap}" if v.cap in caps else "0"
    if isinstance(v, Code):
        return v.text
    if isinstance(v, Call):
        parts = [_lit(a, caps) for a in v.args] + [f"{k}={_lit(a, caps)}" for k, a in v.kwargs]
        return f"{v.fn}({', '.join(parts)})"
    if isinstance(v, list):
        return "[" + ", ".join(_lit(a, caps) for a in v) + "]"
    if isinstance(v, tuple):
        inner = ", ".join(_lit(a, caps) for a in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return repr(v)


def render_op(op: Op, caps: set[int]) -> str:
    if op.name == "exit":
        return "return"
    parts = [_lit(a, caps) for a in op.args] + [f"{k}={_lit(a, caps)}" for k, a in op.kwargs]
    text = f"x.{op.name}({', '.join(parts)})"
    return text if op.plain else f"await {text}"


_VAR = {"thread": "th", "gate": "gate", "irq": "irq", "task": "task"}
_HEADER = '''"""l4sim fuzz program, seed {seed}{note}.

Run it from the project root (l4sim installed): it builds the system, runs it with the
fuzzer's oracles (a checked run, a traced re-run, a fast-path run) and prints FAIL and
each anomaly while one is there; it exits 0 either way.
"""
# ruff: noqa
from l4sim import CapRights, Fpage, Kernel, MapItem, MsgTag, Rights, StringItem, Timeout
from l4sim.explore.fuzz import repro_main

KERNEL = {kernel}
RUN = {run}


def build(k, rt):
'''


def render(prog: Program) -> str:
    """The program as the source of a standalone module (`build(k, rt)`, and a main)."""
    caps = {c.id for c in prog.caps}
    note = f": {prog.note}" if prog.note else ""
    run: dict[str, Any] = {"until": prog.until, "max_steps": prog.max_steps}
    if prog.stepped:
        run["stepped"] = True
    out = [_HEADER.format(seed=prog.seed, note=note, kernel=repr(dict(prog.kernel)),
                          run=repr(run))]
    w = out.append
    for task in prog.tasks:
        w(f'    task{task.id} = k.new_task("task{task.id}")\n')
    by_task: dict[int, list[ThreadSpec]] = {}
    for th in prog.threads:
        by_task.setdefault(th.task, []).append(th)
    for task in prog.tasks:
        ths = by_task.get(task.id, [])
        if ths and all(th.pager == "default" for th in ths):
            w(f"    rt.secret_owner(task{task.id})\n")
    for th in prog.threads:
        w(f"\n    async def b{th.id}(t):\n        x = rt.ctx(t)\n")
        ind = "        "
        if th.final is not None:
            w("        try:\n")
            ind = "            "
        for op in th.ops:
            w(f"{ind}{render_op(op, caps)}\n")
        if not th.ops:
            w(f"{ind}pass\n")
        if th.final is not None:
            w("        finally:\n")
            for op in th.final:
                w(f"            {render_op(op, caps)}\n")
            if not th.final:
                w("            pass\n")
    w("\n")
    threads = {th.id for th in prog.threads}
    for th in prog.threads:
        kw = [f'name="th{th.id}"', f"priority={th.priority}"]
        if th.cpu:
            kw.append(f"cpu={th.cpu}")
        if th.pager == "sigma0":
            kw.append("pager=k.sigma0")
        elif th.pager == "none":
            kw.append("pager=None")
        elif isinstance(th.pager, int) and th.pager in threads:
            kw.append(f"pager=th{th.pager}")
        if th.exc_handler is not None and th.exc_handler in threads:
            kw.append(f"exc_handler=th{th.exc_handler}")
        if th.preempter is not None and th.preempter in threads:
            kw.append(f"preempter=th{th.preempter}")
        w(f"    th{th.id} = task{th.task}.new_thread(b{th.id}, {', '.join(kw)})\n")
    for g in prog.gates:
        w(f'    gate{g.id} = k.new_gate(th{g.thread}, label={_lit(g.label, caps)}, name="gate{g.id}")\n')
    for i in prog.irqs:
        w(f'    irq{i} = k.new_irq("irq{i}")\n')
    for c in prog.caps:
        obj = "k.sigma0" if c.kind == "sigma0" else f"{_VAR[c.kind]}{c.target}"
        w(f"    c{c.id} = task{c.task}.add_cap({obj}, {c.rights:#x})\n")
    for e in prog.events:
        more = (f", {e.cpu}" if e.action == "migrate" else
                f", {e.cpu}, {e.priority}" if e.action == "spawn" else "")
        w(f'    rt.at({e.time}, lambda: rt.host("{e.action}", {_VAR[e.kind]}{e.target}{more}))\n')
    w("    return None\n\n\nif __name__ == \"__main__\":\n    repro_main(build, KERNEL, RUN)\n")
    return "".join(out)


# --- shrinking -----------------------------------------------------------------------

def without_thread(prog: Program, tid: int) -> Program:
    """The program without thread `tid` and everything that names it."""
    gates = tuple(g for g in prog.gates if g.thread != tid)
    gone_gates = {g.id for g in prog.gates} - {g.id for g in gates}
    caps = tuple(c for c in prog.caps
                 if not (c.kind == "thread" and c.target == tid)
                 and not (c.kind == "gate" and c.target in gone_gates))
    threads = []
    for th in prog.threads:
        if th.id == tid:
            continue
        threads.append(replace(
            th, pager="default" if th.pager == tid else th.pager,
            exc_handler=None if th.exc_handler == tid else th.exc_handler,
            preempter=None if th.preempter == tid else th.preempter))
    events = tuple(e for e in prog.events
                   if not (e.kind == "thread" and e.target == tid)
                   and not (e.kind == "gate" and e.target in gone_gates))
    return replace(prog, threads=tuple(threads), gates=gates, caps=caps, events=events)


def _with_ops(prog: Program, i: int, ops: tuple[Op, ...], final: tuple[Op, ...] | None) -> Program:
    threads = list(prog.threads)
    threads[i] = replace(threads[i], ops=ops, final=final)
    return replace(prog, threads=tuple(threads))


def shrinks(prog: Program) -> Iterator[Program]:
    """Smaller variants of `prog`, the biggest cuts first."""
    for e in range(len(prog.events)):
        yield replace(prog, events=prog.events[:e] + prog.events[e + 1:])
    if prog.stepped:
        yield replace(prog, stepped=False)  # (a run in one piece is simpler to read)
    for th in sorted(prog.threads, key=lambda t: -len(t.ops)):
        yield without_thread(prog, th.id)
    used_tasks = {th.task for th in prog.threads}
    for task in prog.tasks:
        if task.id not in used_tasks:
            yield replace(prog, tasks=tuple(t for t in prog.tasks if t.id != task.id),
                          caps=tuple(c for c in prog.caps if c.task != task.id
                                     and not (c.kind == "task" and c.target == task.id)),
                          events=tuple(e for e in prog.events
                                       if not (e.kind == "task" and e.target == task.id)))
    for i, th in enumerate(prog.threads):
        ops = th.ops
        n = len(ops)
        chunk = n // 2
        while chunk >= 1:
            for start in range(0, n, chunk):
                yield _with_ops(prog, i, ops[:start] + ops[start + chunk:], th.final)
            chunk //= 2
        if th.final is not None:
            yield _with_ops(prog, i, ops, None)
            for j in range(len(th.final)):
                yield _with_ops(prog, i, ops, th.final[:j] + th.final[j + 1:])
    for c in range(len(prog.caps)):
        yield replace(prog, caps=prog.caps[:c] + prog.caps[c + 1:])
    for g in prog.gates:
        yield replace(prog, gates=tuple(x for x in prog.gates if x.id != g.id),
                      caps=tuple(c for c in prog.caps if not (c.kind == "gate" and c.target == g.id)),
                      events=tuple(e for e in prog.events if not (e.kind == "gate" and e.target == g.id)))
    for q in prog.irqs:
        yield replace(prog, irqs=tuple(x for x in prog.irqs if x != q),
                      caps=tuple(c for c in prog.caps if not (c.kind == "irq" and c.target == q)),
                      events=tuple(e for e in prog.events if not (e.kind == "irq" and e.target == q)))
    for i, th in enumerate(prog.threads):
        simpler = replace(th, exc_handler=None, preempter=None,
                          pager=th.pager if isinstance(th.pager, str) else "default")
        if simpler != th:
            threads = list(prog.threads)
            threads[i] = simpler
            yield replace(prog, threads=tuple(threads))


# --- generation ----------------------------------------------------------------------

PRIORITIES = (10, 50, 90, 100, 100, 100, 110, 150, 200, 249)
_MEM_RIGHTS = (7, 7, 6, 4, 5, 2, 0)
MULTI_CPU: bool | None = None  # set by the fuzzer: can Kernel(cpus=2) be built?


class _Gen:
    """Makes one program from a seed."""

    def __init__(self, seed: int, cpus: int) -> None:
        self.r = random.Random(seed)
        self.seed = seed
        self.cpus = cpus
        self.sels: dict[int, list[Sel]] = {}

    # small values
    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def word(self) -> int:
        r = self.r
        return r.choice((0, 1, 2, 0xDEAD, r.getrandbits(16), r.getrandbits(64), (1 << 64) - 1))

    def words(self) -> Any:
        r = self.r
        if self.chance(0.03):  # malformed: out of range, not an int, too many
            return r.choice(([1 << 64], [-1], ["w"], [0] * 64, 7))
        n = r.choice((0, 1, 1, 2, 2, 3, 4, 8)) if not self.chance(0.05) else r.randrange(9, 64)
        return [self.word() for _ in range(n)]

    def label(self, misuse: bool = True) -> int:
        r = self.r
        if self.chance(0.8):
            return 0
        if misuse and self.chance(0.03):
            return r.choice((1 << 47, -(1 << 47) - 1))
        return r.choice((r.randrange(1, 1000), -r.randrange(1, 20), r.getrandbits(47)))

    def timeout(self, until: int) -> Any:
        r = self.r
        x = r.random()
        if x < 0.08:
            return Call("Timeout.never")
        if x < 0.28:
            return Call("Timeout.zero")
        if x < 0.73:
            return Call("Timeout.us", (r.randrange(1, 120),))
        if x < 0.88:
            return Call("Timeout.cycles", (r.randrange(0, 300_000),))
        if x < 0.985:
            return Call("Timeout.at", (r.randrange(0, until or 3_000_000),))
        return r.choice((5, None, "never"))  # not a Timeout: misuse

    def addr(self) -> int:
        r = self.r
        x = r.random()
        if x < 0.7:
            return DATA + r.randrange(16) * 0x1000 + r.choice((0, 0, 8, 0xFF8))
        if x < 0.8:
            return SECRET_ADDR
        if x < 0.9:
            return BUF + r.randrange(8) * 0x1000
        return r.choice((SPACE_END - 8, SPACE_END, 1 << 48, WIN + r.randrange(64) * 0x1000, 0))

    def sel(self, task: int, misuse: bool = True) -> Any:
        r = self.r
        own = self.sels.get(task, [])
        x = r.random() if misuse else r.random() * 0.97
        if own and x < 0.7:
            return r.choice(own)
        if x < 0.8:
            return Code("x.self_sel")
        if x < 0.85:
            return Code("x.pager_sel")
        if x < 0.97:
            return r.choice((0, 1, 2, 3, 4, 5, OBJ_WIN, OBJ_WIN + 1, OBJ_WIN + 2, 99, 1 << 40)
                            + ((-1,) if misuse else ()))
        return r.choice(("a", 1.5, None))  # misuse

    def fpage(self, task: int) -> Any:
        r = self.r
        x = r.random()
        if x < 0.55:
            return Call("Fpage.mem", (self.addr() if self.chance(0.8) else DATA,
                                      r.choice((12, 12, 12, 13, 14, 16, 20, 11, 0, 47)),
                                      r.choice(_MEM_RIGHTS)))
        if x < 0.8:
            return Call("Fpage.obj", (self.sel(task, False) if self.chance(0.8) else r.randrange(8),
                                      r.choice((0, 0, 1, 2, 4)), r.randrange(16)))
        if x < 0.85:
            return Call("Fpage.io", (r.randrange(0x400), r.randrange(4)))
        if x < 0.9:
            return Call("Fpage.all")
        return Call("Fpage", (r.getrandbits(64),))

    def items(self, task: int) -> Any:
        r = self.r
        if self.chance(0.03):
            return r.choice((["junk"], 5))  # misuse
        out: list[Any] = []
        for _ in range(r.choice((1, 1, 1, 2, 3))):
            if self.chance(0.6):
                out.append(Call("MapItem", (self.fpage(task),),
                                (("send_base", self.addr()), ("grant", self.chance(0.2)))))
            else:
                length = r.choice((0, 8, 64, 4096, 5000, 9000, r.randrange(1, 20000)))
                addr = self.addr() if self.chance(0.95) else SPACE_END - 16
                out.append(Call("StringItem", (addr, length)))
        return out

    def window(self) -> Any:
        r = self.r
        x = r.random()
        if x < 0.4:
            return Call("Fpage.mem", (WIN, r.choice((12, 14, 16, 20, 21, 30))))
        if x < 0.65:
            return Call("Fpage.obj", (OBJ_WIN, r.choice((0, 1, 2, 3))))
        if x < 0.8:
            return Call("Fpage.all")
        if x < 0.95:
            return [Call("Fpage.mem", (WIN, 16)), Call("Fpage.obj", (OBJ_WIN, 2))]
        return r.choice(("w", [Call("Fpage.mem", (WIN, 12))] * 2, []))  # misuse, or clear

    def buffers(self) -> Any:
        r = self.r
        if self.chance(0.05):
            return r.choice(([(SPACE_END, 4096)], [(1,)], "b", [(BUF, -1)]))  # misuse
        return [(BUF + i * 0x2000, r.choice((8, 64, 4096, 8192, 100)))
                for i in range(r.choice((0, 1, 1, 2, 3)))]

    def kw_receive(self, kw: list[tuple[str, Any]], until: int) -> None:
        if self.chance(0.25):
            kw.append(("window", self.window()))
        if self.chance(0.25):
            kw.append(("buffers", self.buffers()))
        if self.chance(0.1):
            kw.append(("pagefault_timeout", self.timeout(until)))

    def kw_send(self, kw: list[tuple[str, Any]], task: int, until: int, timeout: bool = True) -> None:
        kw.append(("words", self.words()))
        lbl = self.label()
        if lbl:
            kw.append(("label", lbl))
        if self.chance(0.25):
            kw.append(("items", self.items(task)))
        if timeout and self.chance(0.85):
            kw.append(("send_timeout", self.timeout(until)))
        if self.chance(0.05):
            kw.append(("tag", Call("MsgTag", (0, self.r.randrange(4)))))

    # operations
    def op(self, task: int, role: str, until: int) -> Op:
        r = self.r
        if self.cpus > 1 and self.chance(0.03):  # several CPUs: move between them
            return Op("migrate", (r.randrange(self.cpus + 1),))
        weights = _ROLE_WEIGHTS[role]
        name = r.choices(_OP_NAMES, weights)[0]
        kw: list[tuple[str, Any]] = []
        if name == "call":
            dest = self.sel(task)
            self.kw_send(kw, task, until)
            if self.chance(0.85):
                kw.append(("receive_timeout", self.timeout(until)))
            self.kw_receive(kw, until)
            return Op(name, (dest,), tuple(kw))
        if name == "send":
            dest = self.sel(task)
            self.kw_send(kw, task, until)
            if self.chance(0.1):
                kw.append(("pagefault_timeout", self.timeout(until)))
            return Op(name, (dest,), tuple(kw))
        if name in ("receive", "wait"):
            if self.chance(0.9):
                kw.append(("receive_timeout", self.timeout(until)))
            self.kw_receive(kw, until)
            return Op(name, (self.sel(task),) if name == "receive" else (), tuple(kw))
        if name == "reply_and_wait":
            self.kw_send(kw, task, until, timeout=False)
            if self.chance(0.9):
                kw.append(("receive_timeout", self.timeout(until)))
            self.kw_receive(kw, until)
            return Op(name, (), tuple(kw))
        if name == "reply":
            self.kw_send(kw, task, until, timeout=False)
            return Op(name, (), tuple(kw))
        if name == "sleep":
            return Op(name, (self.timeout(until),))
        if name == "ipc":
            return self.raw_ipc(task, until)
        if name == "set_mr":
            return Op(name, (r.randrange(63), self.word()))
        if name == "set_br":
            return Op(name, (r.randrange(58), r.choice((8, 0x4 | 64 << 12, BUF, self.word()))))
        if name == "compute":
            return Op(name, (r.choice((0, 100, 1000, 20_000, 200_000, r.randrange(3_000_000))),))
        if name == "load":
            return Op(name, (self.addr(), r.choice((1, 8, 16, 64, 4096, 5000))))
        if name == "store":
            data = r.randbytes(r.choice((1, 8, 8, 16)))
            if self.chance(0.02):
                return Op(name, (self.addr(), "not bytes"))
            return Op(name, (self.addr(), data))
        if name == "unmap":
            return Op(name, (self.fpage(task),), (("self_too", self.chance(0.3)),))
        if name == "ex_regs":
            regs: tuple[tuple[str, Any], ...] = (("cancel", self.chance(0.9)),)
            if self.cpus > 1 and self.chance(0.3):  # several CPUs: move it (or a bad CPU)
                regs += (("cpu", r.randrange(self.cpus + 1)),)
            return Op(name, (self.sel(task),), regs)
        if name == "delete":
            return Op(name, (self.sel(task),))
        if name == "raise_exception":
            return Op(name, (r.choice((0, 3, 6, 13, 14, 1 << 64)), r.getrandbits(16)))
        if name in ("irq_bind",):
            return Op(name, (self.sel(task),), (("label", self.label()),))
        if name in ("irq_detach", "irq_trigger", "irq_unmask"):
            return Op(name, (self.sel(task),))
        if name in ("irq_receive", "irq_wait"):
            return Op(name, (self.sel(task),), (("receive_timeout", self.timeout(until)),))
        if name == "reply_map":
            return self.pager_reply(task)
        if name == "spin":
            return Op(name, (r.choice((2_000_000, 20_000_000, 100_000_000)),))  # few steps
        return Op(name)  # die, exit, plant_secret

    def raw_ipc(self, task: int, until: int) -> Op:
        r = self.r
        words = r.choice((0, 1, 2, 5, 63, r.randrange(64)))
        items = r.choice((0, 0, 0, 1, 2, r.randrange(64)))
        x = r.random()
        if x < 0.6:
            tag: Any = Call("MsgTag", (self.label(False) if self.chance(0.9) else -(1 << 47),
                                       min(words, 63), items, r.choice((0, 0, 0x1000, 0x8000))))
        elif x < 0.97:
            tag = r.getrandbits(64)
        else:
            tag = r.choice(((1 << 80) | 1, -1, "t"))  # misuse
        flags = r.choice((1, 2, 3, 6, 7, 15, 9, 8, 0, r.randrange(16)))
        if self.chance(0.02):
            flags = 16
        t = r.random()
        if t < 0.5:
            timeouts = 0
        elif t < 0.8:
            timeouts = r.getrandbits(32)
        else:
            timeouts = (0x8000 | r.randrange(64)) << r.choice((0, 16))  # absolute: from a BR
        return Op("ipc", (self.sel(task), tag, flags, timeouts))

    def pager_reply(self, task: int) -> Op:
        r = self.r
        x = r.random()
        kw: list[tuple[str, Any]] = [("addr", DATA + r.randrange(16) * 0x1000),
                                     ("order", r.choice((12, 12, 12, 13, 16, 11))),
                                     ("rights", r.choice(_MEM_RIGHTS))]
        if x < 0.6:
            kw.append(("mode", "map"))
        elif x < 0.7:
            kw.append(("mode", "grant"))
        elif x < 0.85:
            kw.append(("mode", "refuse"))
        else:
            kw.append(("mode", "junk"))
        kw.append(("and_wait", self.chance(0.6)))
        return Op("reply_map", (), tuple(kw))

    def body(self, th: ThreadSpec, until: int) -> ThreadSpec:
        r = self.r
        ops: list[Op] = []
        if th.pager == "default" and self.chance(0.5):
            ops.append(Op("plant_secret"))
        role = th.role
        n = r.choice((2, 4, 6, 8, 10, 12, 16, 20, 30))
        if role == "pager":
            for _ in range(r.randrange(1, 8)):
                if self.chance(0.8):
                    ops.append(Op("wait", (), (("receive_timeout", self.timeout(until)),))
                                if self.chance(0.5) else Op("wait"))
                if self.chance(0.7):
                    ops.append(Op("store", (DATA + r.randrange(16) * 0x1000, b"pager page")))
                ops.append(self.pager_reply(th.task))
                if self.chance(0.2):
                    ops.append(self.op(th.task, "client", until))
            if self.chance(0.2):
                ops.append(Op(r.choice(("die", "exit"))))
        else:
            if role in ("server", "handler") and self.chance(0.7):
                ops.append(Op("wait", (), (("receive_timeout", self.timeout(until)),))
                           if self.chance(0.7) else Op("wait"))
            for _ in range(n):
                ops.append(self.op(th.task, role, until))
        final = None
        if self.chance(0.12):
            final = tuple(self.op(th.task, "client", until) for _ in range(r.randrange(1, 3)))
        return replace(th, ops=tuple(ops), final=final)


_OP_NAMES = ("call", "send", "receive", "wait", "reply_and_wait", "reply", "sleep", "ipc",
             "set_mr", "set_br", "compute", "load", "store", "unmap", "ex_regs", "delete",
             "raise_exception", "irq_bind", "irq_detach", "irq_trigger", "irq_unmask",
             "irq_receive", "irq_wait", "reply_map", "die", "exit", "spin", "plant_secret")
_ROLE_WEIGHTS: dict[str, tuple[float, ...]] = {
    #          call send recv wait r&w rep sleep ipc mr  br comp load store unmap exr del rexc
    "client": (14, 8, 3, 4, 3, 2, 5, 6, 2, 1, 5, 4, 5, 2, 3, 1.5, 1,
               # bind det trig unm irecv iwait rmap die exit spin secret
               1.5, 0.5, 1.5, 1, 1, 1, 0.3, 0.3, 0.3, 0.2, 0.2),
    "server": (3, 2, 2, 10, 14, 6, 2, 3, 1, 0.5, 3, 2, 2, 1, 1, 0.5, 0.3,
               0.5, 0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1, 0.1),
    "handler": (2, 1, 2, 10, 12, 8, 1, 2, 1, 0.5, 2, 1, 1, 0.5, 1, 0.5, 0.2,
                0.3, 0.2, 0.3, 0.3, 0.3, 0.3, 1, 0.2, 0.2, 0.1, 0.1),
}


def generate(seed: int, cpus_available: int = 1) -> Program:
    """The program of `seed`: 2-6 tasks, 2-10 threads with random priorities, pagers
    (the default one, sigma0, none, or hostile user-level ones), exception handlers,
    preempters, gates, IRQs, capabilities with random rights, and host events."""
    g = _Gen(seed, cpus_available)
    r = g.r
    kernel: list[tuple[str, Any]] = []
    if g.chance(0.5):
        kernel.append(("transfer", "sender-driven"))
    if g.chance(0.3):
        kernel.append(("copy", "kernel-buffer"))
    if g.chance(0.15):
        kernel.append(("priority_inheritance", False))
    if g.chance(0.3):
        kernel.append(("timeslice", r.choice((2_000, 20_000, 200_000))))
    cpus = 1
    if cpus_available > 1:
        cpus = r.randrange(1, cpus_available + 1)
        if cpus > 1:
            kernel.append(("cpus", cpus))
    g.cpus = cpus
    until = r.choice((1_000_000, 3_000_000, 10_000_000, 30_000_000))
    x = r.random()
    run_until: int | None = until
    max_steps: int | None = None
    if x < 0.2:
        max_steps = r.randrange(50, 2000)
    elif x < 0.28:
        run_until, max_steps = None, r.randrange(50, 2000)

    tasks = tuple(TaskSpec(i + 1) for i in range(r.randrange(2, 7)))
    nthreads = r.randrange(2, 11)
    threads: list[ThreadSpec] = []
    for i in range(nthreads):
        tid = i + 1
        role = r.choices(("client", "server", "pager", "handler"), (5, 3, 1.5, 1))[0]
        earlier = [t for t in threads]
        pager: str | int = "default"
        x = r.random()
        pagers = [t.id for t in earlier if t.role == "pager"] or [t.id for t in earlier]
        if x < 0.1:
            pager = "sigma0"
        elif x < 0.18:
            pager = "none"
        elif x < 0.45 and pagers:
            pager = r.choice(pagers)
        handlers = [t.id for t in earlier if t.role in ("handler", "server")]
        exc = r.choice(handlers) if handlers and g.chance(0.3) else None
        pre = r.choice([t.id for t in earlier]) if earlier and g.chance(0.15) else None
        threads.append(ThreadSpec(tid, r.choice(tasks).id, r.choice(PRIORITIES), pager, exc, pre,
                                  r.randrange(cpus), role))
    gates = tuple(GateSpec(i + 1, r.choice(threads).id,
                           r.choice((0, 0x10, 0x20 + i, -5, r.getrandbits(20))))
                  for i in range(r.choice((0, 1, 1, 2, 3, 4))))
    irqs = tuple(range(1, r.choice((0, 0, 1, 1, 2, 3)) + 1))
    caps: list[CapSpec] = []
    for task in tasks:
        for _ in range(r.randrange(1, 7)):
            x = r.random()
            if x < 0.55 or (not gates and x < 0.75):
                kind, target = "thread", r.choice(threads).id
            elif x < 0.75:
                kind, target = "gate", r.choice(gates).id
            elif x < 0.87 and irqs:
                kind, target = "irq", r.choice(irqs)
            elif x < 0.97:
                kind, target = "task", r.choice(tasks).id
            else:
                kind, target = "sigma0", 0
            rights = 0xF if g.chance(0.6) else r.randrange(16)
            caps.append(CapSpec(len(caps) + 1, task.id, kind, target, rights))
    for c in caps:
        g.sels.setdefault(c.task, []).append(Sel(c.id))
    events: list[HostEvent] = []
    horizon = until if run_until is not None else 2_000_000
    for _ in range(r.choice((0, 0, 1, 1, 2, 3, 4))):
        x = r.random()
        t = r.randrange(horizon)
        if x < 0.3:
            events.append(HostEvent(t, "cancel", "thread", r.choice(threads).id))
        elif x < 0.55:
            events.append(HostEvent(t, "delete", "thread", r.choice(threads).id))
        elif x < 0.7:
            events.append(HostEvent(t, "delete", "task", r.choice(tasks).id))
        elif x < 0.8 and gates:
            events.append(HostEvent(t, "delete", "gate", r.choice(gates).id))
        elif irqs:
            events.append(HostEvent(t, r.choice(("trigger", "trigger", "delete")), "irq",
                                    r.choice(irqs)))
    bodies = tuple(g.body(th, horizon) for th in threads)
    if cpus > 1:
        # The host moves threads between CPUs too: at any time, blocked, ready, or just
        # chosen to run next. (A stream of its own: the rest of the program is as it was.)
        m = random.Random(seed * 1_000_003 + 17)
        for _ in range(m.choice((0, 1, 1, 2, 3))):
            events.append(HostEvent(m.randrange(horizon), "migrate", "thread",
                                    m.choice(threads).id, m.randrange(cpus)))
    # Some runs are stepped by the host, which acts between two steps, and the host makes
    # threads now and then, often above the others (from a stream of their own, as the
    # moves above).
    h = random.Random(seed * 1_000_003 + 29)
    stepped = h.random() < 0.15
    for _ in range(h.choice((0, 0, 0, 1, 2))):
        events.append(HostEvent(h.randrange(horizon), "spawn", "task", h.choice(tasks).id,
                                h.randrange(cpus), h.choice((10, 150, 255, 255))))
    return Program(seed=seed, kernel=tuple(kernel), until=run_until, max_steps=max_steps,
                   tasks=tasks, threads=bodies, gates=gates, irqs=irqs, caps=tuple(caps),
                   events=tuple(events), stepped=stepped)
