"""`l4sim fuzz`: a seeded generative fuzzer over the whole user API and the raw ABI.

Each seed makes a random system (`fuzz_gen.generate`): 2-6 tasks, 2-10 threads with random
priorities, pagers (the default one, sigma0, none, or user-level ones that refuse, reply
junk or die), exception handlers, preempters, gates, IRQs and capabilities with random
rights, whose threads issue random system calls, valid and malformed, while host events
cancel and delete threads, gates, IRQs and tasks, trigger IRQs, make threads and (on
several CPUs) move threads between CPUs. Some runs are stepped (`k.step()`), the host
acting between two steps. The program is rendered as Python source and that source is
what runs, three times:

1. checked: `Kernel(check=True, trace=True)`: the kernel's invariants after every operation;
2. traced: `Kernel(trace=True)`: the same seed again in the same process;
3. fast: `Kernel()`: the fast path on.

The oracles (each one an anomaly kind):
- `invariant`: a `KernelInvariantError`, wherever it surfaces;
- `kernel-exception`: an exception out of kernel code: into a thread's system call after it
  entered the kernel, or from kernel or library code before (user misuse raises
  `TypeError`/`ValueError`/`OverflowError` from the user API before any kernel entry, and
  is fine); `run-escape`: anything out of `k.run()`;
- `internal-death`: a thread (library servers included) that died of a reason that names an
  internal error, not a fault, an exception report, a deletion or the fuzzer's own death;
- `dead-syscall`: a thread that was already dead entered the kernel, or got a result;
- `bad-result`: a result that is not what the ABI allows (a label beyond 48 bits, not an
  `IpcError`, a load of the wrong length), or misuse that raised but changed the BRs;
- `escalation-cap`: an operation that succeeded through a selector that held no capability
  with the right it needs;
- `escalation-memory`: a task read another task's secret (planted in its pages) that the
  owner never sent (no map, grant or string item covering it), and the reader has no access
  to physical memory through sigma0;
- `nondeterminism`: the traced re-run differs from the checked run (event record, results,
  end state); `hash-nondeterminism`: a sample of seeds re-run under another
  `PYTHONHASHSEED` in a subprocess differs;
- `fastpath-divergence`: the fast-path run gives other results, times or end state;
- `hang`: a run that does not end (`until` and `max_steps` bound every run; a wall-clock
  watchdog catches the rest).

A failing program is shrunk (`fuzz_gen.shrinks`: fewer host events, threads, operations,
capabilities) while it still shows the same anomaly, and printed as a standalone program.

Coverage guidance: none, by choice. The fuzzer is generative and the kernel's state is the
product of whole interleavings, not of the bytes of one input, so a byte-level
coverage-guided engine (atheris) would mutate encodings the generator already covers by
construction, and its line coverage saturates within seconds on a kernel this size while the
bugs found so far live in orders of events (a deletion during a copy, a cancel between a
fault and its reply). HypoFuzz would guide the existing Hypothesis state machines, which by
design do not reach those orders (they never delete a thread whose body still runs). What
finds them is volume and variety of whole systems per second, which is what the budget goes
to: many short seeded runs, each fully reproducible from its seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from ..kernel import IpcError, IpcResult, Kernel, KernelInvariantError, MsgTag, Thread
from ..kernel.abi import Fpage, MapItem, StringItem
from ..kernel.objects import KernelObject, Task
from ..kernel.states import DEAD
from ..user.context import UserContext
from . import fuzz_gen
from .fuzz_gen import SECRET_ADDR, Program, generate, render, shrinks

Build = Callable[[Kernel, "FuzzRuntime"], None]

WATCHDOG_SECONDS = 10.0   # wall-clock bound of one run (a normal run takes well under 1 s)
_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_USER_SIDE = tuple(os.path.join(_PKG, p) for p in (
    os.path.join("user", "context.py"), os.path.join("kernel", "fastpath.py"),
    os.path.join("kernel", "message.py"), os.path.join("kernel", "abi.py")))
_MISUSE = (TypeError, ValueError, OverflowError)
_SEND, _RECEIVE, _OPEN_WAIT, _REPLY = 1, 2, 4, 8
_R, _S, _D = 4, 2, 8
_LABEL_MIN, _LABEL_MAX = -(1 << 47), 1 << 47
# Reasons a thread may die of (the run result's `died`), other than internal errors.
_DEATHS = re.compile(r"^(deleted$|exception trap |FuzzDeath: |.*page fault at |access to )")


class FuzzDeath(Exception):
    """What a fuzz thread raises to die on purpose (an exception report to its handler)."""


class FuzzHang(BaseException):
    """Raised by the watchdog: a run took longer than its wall-clock bound."""


@dataclass
class Anomaly:
    """One oracle failure: `kind` (see the module's docstring), `key` (what makes two
    anomalies the same bug, for shrinking and deduplication) and a readable `detail`."""

    kind: str
    key: str
    detail: str
    seed: int | None = None
    mode: str = ""

    @property
    def signature(self) -> str:
        return f"{self.kind}: {self.key}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "detail": self.detail, "seed": self.seed,
                "mode": self.mode}


def _where(tb: TracebackType | None) -> tuple[str, str]:
    """The innermost frame of a traceback: (file, 'file:function:line' short form)."""
    last: FrameType | None = None
    line = 0
    while tb is not None:
        last, line = tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next
    if last is None:
        return "", "?"
    path = last.f_code.co_filename
    short = path[len(_PKG):] if path.startswith(_PKG) else os.path.basename(path)
    return path, f"{short}:{last.f_code.co_name}:{line}"


def _kernel_frames(exc: BaseException) -> str:
    """The l4sim frames an exception passed through, innermost last (for details)."""
    frames = [f"{f.filename[len(_PKG):]}:{f.lineno} {f.name}"
              for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(_PKG)
              and "explore" not in f.filename]
    return " <- ".join(reversed(frames[-4:]))


def _scrub(text: str) -> str:
    """A reason without addresses and numbers, as an anomaly key."""
    return re.sub(r"0x[0-9a-f]+|\d+", "N", text)[:120]


# --- the runtime of one run ----------------------------------------------------------

class FuzzRuntime:
    """What a fuzz program's `build(k, rt)` talks to: makes the threads' wrapped contexts,
    records every result, and holds the oracles' state for one run."""

    def __init__(self, k: Kernel, seed: int, mode: str, stepped: bool = False) -> None:
        self.k = k
        self.seed = seed
        self.mode = mode
        self.stepped = stepped
        self.between: list[tuple[int, int, Callable[[], None]]] = []  # (time, order, event)
        self.spawned = 0  # threads the host made
        self.anomalies: list[Anomaly] = []
        self.log: list[tuple[Any, ...]] = []
        self.ops = 0
        self.finished = False
        self.owners: set[Task] = set()
        self.secrets: dict[Task, bytes] = {}
        self.public: set[Task] = set()
        self.dead_pending: dict[int, str] = {}
        self._pending_id = 0

    def anomaly(self, kind: str, key: str, detail: str) -> None:
        self.anomalies.append(Anomaly(kind, key, detail, self.seed, self.mode))

    async def _spawned(self, t: UserContext) -> None:
        """The body of a thread the host makes: it computes a little, then ends."""
        self.log.append(("spawned", t.name, t.now))
        await t.compute(3_000)
        self.log.append(("spawned-end", t.name, t.now))

    def at(self, time: int, event: Callable[[], None]) -> None:
        """A host event at simulated `time`: `k.at`, or in a stepped run the first time
        the host gets to act (between two steps) once the next step is that late."""
        if self.stepped:
            self.between.append((time, len(self.between), event))
        else:
            self.k.at(time, event)

    def ctx(self, t: UserContext) -> FuzzCtx:
        return FuzzCtx(self, t)

    def secret_owner(self, task: Task) -> None:
        """`task`'s threads all have the default pager: its secret is checked."""
        self.owners.add(task)

    def secret_of(self, task: Task) -> bytes:
        return b"\xa5SECRET" + bytes([task.id & 0xFF]) + (
            (self.seed * 1_000_003 + task.id) & ((1 << 64) - 1)).to_bytes(8, "little")

    def host(self, action: str, obj: KernelObject, cpu: int = 0, priority: int = 0) -> None:
        """A host event (`k.at`): cancel a thread, delete an object, trigger an IRQ, move
        a thread to CPU `cpu` (not one that ended or the one running: that raises, as the
        API says), make a thread in a task (on `cpu`, of `priority`)."""
        k = self.k
        self.log.append(("host", action, getattr(obj, "name", "?"), obj.alive, k.now))
        if not obj.alive:
            return
        try:
            if action == "spawn":
                if isinstance(obj, Task):
                    self.spawned += 1
                    obj.new_thread(self._spawned, name=f"spawn{self.spawned}",
                                   priority=priority, cpu=cpu)
            elif action == "migrate":  # (not a thread that ended, or the one running)
                if (isinstance(obj, Thread) and not obj.state & DEAD
                        and obj.cpu.current is not obj):
                    obj.migrate(cpu)
            elif action == "cancel":
                if isinstance(obj, Thread):
                    k.cancel(obj)
            elif action == "delete":
                k.delete(obj)
            elif action == "trigger":
                obj.trigger()  # type: ignore[attr-defined]
        except KernelInvariantError as e:
            self.anomaly("invariant", e.invariant, f"host {action}: {e}")
            raise
        except Exception as e:
            _path, where = _where(e.__traceback__)
            self.anomaly("kernel-exception", f"{type(e).__name__} at {where}",
                         f"host {action} {obj!r}: {type(e).__name__}: {e} ({_kernel_frames(e)})")
            raise

    def has_sigma0_access(self, task: Task) -> bool:
        sigma0 = getattr(self.k, "_sigma0", None)
        if sigma0 is None:
            return False
        return (any(th.pager is sigma0 for th in task.threads)
                or any(c is not None and c.obj is sigma0 for c in task.caps))


def _covers_secret(item: object) -> bool:
    """Can this send item give away the page at SECRET_ADDR?"""
    lo, hi = SECRET_ADDR, SECRET_ADDR + 0x1000
    if isinstance(item, MapItem):
        fp = item.fpage
        if fp.type == Fpage.SPECIAL:
            return True
        if fp.type != Fpage.MEMORY:
            return False
        base = fp.address
        return base < hi and lo < base + (1 << fp.order)
    if isinstance(item, StringItem):
        return item.addr < hi and lo < item.addr + item.length
    return False


def _summary(res: object) -> tuple[Any, ...]:
    if isinstance(res, IpcResult):
        return ("r", int(res.error), res.label, res._tag, res.words, res.string_bytes)
    if isinstance(res, BaseException):
        return ("x", type(res).__name__, str(res)[:80])
    if isinstance(res, bytes):
        return ("b", hashlib.blake2b(res, digest_size=8).hexdigest())
    return ("v", repr(res))


class FuzzCtx:
    """A thread's context `t`, wrapped: each method issues one operation through `t` and
    applies the per-operation oracles (dead thread, capability escalation, results,
    misuse, memory secrets); exceptions are recorded, never propagated (the thread goes on),
    except the kernel's own `ThreadKilled`/`ThreadDeleted` and a `KernelInvariantError`."""

    __slots__ = ("rt", "t", "th", "last")

    def __init__(self, rt: FuzzRuntime, t: UserContext) -> None:
        self.rt = rt
        self.t = t
        self.th: Thread = t._th
        self.last: IpcResult | None = None

    @property
    def self_sel(self) -> int:
        return self.t.self_sel

    @property
    def pager_sel(self) -> int:
        return self.t.pager_sel

    def _held(self, sel: object, rights: int) -> bool:
        caps = self.th.task.caps
        if type(sel) is not int or not 0 < sel < len(caps):
            return False
        cap = caps[sel]
        return cap is not None and cap.obj.alive and cap.rights & rights == rights

    def _mark_items(self, items: object, tag: object = None) -> None:
        rt = self.rt
        task = self.th.task
        if task not in rt.owners or task in rt.public:
            return
        if isinstance(tag, MsgTag) and tag.items:
            rt.public.add(task)  # typed items already in the MRs: anything may go
        if isinstance(items, (list, tuple)) and any(_covers_secret(i) for i in items):
            rt.public.add(task)

    async def _op(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                  need: tuple[Any, ...] | None = None) -> Any:
        """Issue `t.NAME(*args, **kwargs)`. `need`: (selector, rights) that the operation
        needs; without them it must fail with ENOT_EXISTENT (or a malformed-message error)."""
        rt = self.rt
        if rt.finished:
            return None  # a coroutine closed after its run: nothing to do
        th = self.th
        k = rt.k
        rt.ops += 1
        entries0 = k.entries
        dead = bool(th.state & DEAD) or not th.alive
        pending = 0
        if dead:
            rt._pending_id += 1
            pending = rt._pending_id
            rt.dead_pending[pending] = f"{th.name}: {name} issued after its death"
        held = True if need is None else self._held(need[0], need[1])
        utcb = th.utcb
        snap = ((bytes(utcb.br), utcb.bdr) if "window" in kwargs or "buffers" in kwargs
                else None)
        res: Any = None
        returned = False
        try:
            res = await getattr(self.t, name)(*args, **kwargs)
            returned = True
        except KernelInvariantError as e:
            rt.anomaly("invariant", e.invariant, f"{th.name} {name}: {e} ({_kernel_frames(e)})")
            raise
        except Exception as e:
            res = e
            self._exception(name, e, k.entries != entries0, snap)
        finally:
            if pending:
                del rt.dead_pending[pending]
                if k.entries != entries0 or (returned and name in fuzz_gen.SYSCALL_OPS):
                    rt.anomaly("dead-syscall", name,
                               f"{th.name} (dead) issued {name}: it entered the kernel"
                               if k.entries != entries0 else
                               f"{th.name} (dead) issued {name} and got {res!r}")
        if returned:
            self._check_result(name, res, held, need)
        rt.log.append((th.tid, name, _summary(res), th.cpu.now))
        return res

    def _exception(self, name: str, e: Exception, entered: bool,
                   snap: tuple[bytes, int] | None) -> None:
        rt = self.rt
        th = self.th
        path, where = _where(e.__traceback__)
        if isinstance(e, _MISUSE) and not entered and path.startswith(_USER_SIDE):
            if snap is not None and (bytes(th.utcb.br), th.utcb.bdr) != snap:
                rt.anomaly("bad-result", f"{name} misuse changed the BRs",
                           f"{th.name} {name} raised {type(e).__name__}: {e}, "
                           "but the BRs/BDR changed")
            return
        if isinstance(e, FuzzDeath):
            return
        rt.anomaly("kernel-exception", f"{type(e).__name__} at {where}",
                   f"{th.name} {name}: {type(e).__name__}: {e} "
                   f"({'after' if entered else 'before'} a kernel entry; {_kernel_frames(e)})")

    def _check_result(self, name: str, res: Any, held: bool,
                      need: tuple[Any, ...] | None) -> None:
        rt = self.rt
        th = self.th
        err: int | None = None
        if isinstance(res, IpcResult):
            err = res.error
            if not isinstance(res.error, IpcError):
                rt.anomaly("bad-result", f"{name} error type", f"{th.name} {name}: {res.error!r}")
            if not _LABEL_MIN <= res.label < _LABEL_MAX or not -(1 << 63) <= res._tag < 1 << 63:
                rt.anomaly("bad-result", f"{name} label out of range",
                           f"{th.name} {name}: label {res.label:#x}, tag {res._tag:#x}")
            elif not _LABEL_MIN <= res.tag.label < _LABEL_MAX:
                rt.anomaly("bad-result", f"{name} tag label out of range",
                           f"{th.name} {name}: tag label {res.tag.label:#x}")
        elif isinstance(res, IpcError):
            err = res
        elif name in ("ex_regs", "delete") or name.startswith("irq_"):
            rt.anomaly("bad-result", f"{name} returned {type(res).__name__}",
                       f"{th.name} {name}: {res!r}")
        if need is not None and not held and err is not None:
            phase = need[2] if len(need) > 2 else "op"
            bad = ((err == IpcError.OK or err & 1) if phase == "send" else
                   err == IpcError.OK if phase == "recv" else err != IpcError.ENOT_EXISTENT)
            if bad:
                rt.anomaly("escalation-cap", f"{name} without the capability",
                           f"{th.name} {name} through selector {need[0]!r} without a capability "
                           f"with rights {need[1]:#x}: {IpcError(err).name}"
                           + (" (a send-phase success)" if phase == "send" else ""))
        if isinstance(res, IpcResult):
            self.last = res

    # --- IPC ---------------------------------------------------------------------------

    async def call(self, dest: Any, **kw: Any) -> None:
        self._mark_items(kw.get("items"), kw.get("tag"))
        await self._op("call", (dest,), kw, (dest, _R, "send"))

    async def send(self, dest: Any, **kw: Any) -> None:
        self._mark_items(kw.get("items"), kw.get("tag"))
        await self._op("send", (dest,), kw, (dest, _R, "send"))

    async def receive(self, source: Any, **kw: Any) -> None:
        await self._op("receive", (source,), kw, (source, _R, "recv"))

    async def wait(self, **kw: Any) -> None:
        await self._op("wait", (), kw)

    async def reply_and_wait(self, **kw: Any) -> None:
        self._mark_items(kw.get("items"), kw.get("tag"))
        await self._op("reply_and_wait", (), kw)

    async def reply(self, **kw: Any) -> None:
        self._mark_items(kw.get("items"), kw.get("tag"))
        await self._op("reply", (), kw)

    async def sleep(self, timeout: Any) -> None:
        await self._op("sleep", (timeout,), {})

    async def ipc(self, dest: Any, tag: Any, flags: Any, timeouts: Any) -> None:
        need: tuple[Any, ...] | None = None
        if type(flags) is int:
            if flags & _SEND and not flags & _REPLY:
                need = (dest, _R, "send")
            elif flags & _RECEIVE and not flags & (_OPEN_WAIT | _SEND):
                need = (dest, _R, "recv")
        raw = tag.raw if isinstance(tag, MsgTag) else tag
        if type(raw) is int and (raw >> 6) & 0x3F and type(flags) is int and flags & _SEND:
            task = self.th.task
            if task in self.rt.owners:
                self.rt.public.add(task)
        await self._op("ipc", (dest, tag, flags, timeouts), {}, need)

    async def reply_map(self, addr: int, order: int, rights: int, mode: str,
                        and_wait: bool) -> None:
        """A pager's answer to the last message: map or grant a page of ours at the fault
        address, refuse (negative label), or junk (a capability instead of memory)."""
        last = self.last
        words = last.words if last is not None else ()
        fault = words[0] & ~0xFFF if words else 0
        kw: dict[str, Any] = {}
        if mode in ("map", "grant"):
            kw["items"] = [MapItem(Fpage.mem(addr, order, rights), send_base=fault,
                                   grant=mode == "grant")]
        elif mode == "refuse":
            kw["label"] = -1
        else:
            kw["words"] = [fault, order]
            kw["items"] = [MapItem(Fpage.obj(1, 0, 0xF), send_base=fault)]
        self._mark_items(kw.get("items"))
        await self._op("reply_and_wait" if and_wait else "reply", (), kw)

    # --- other operations ----------------------------------------------------------------

    async def compute(self, cycles: Any) -> None:
        await self._op("compute", (cycles,), {})

    async def spin(self, cycles: int) -> None:
        """Compute for ever (until the run ends or the thread dies)."""
        while not self.rt.finished:
            await self._op("compute", (cycles,), {})

    async def load(self, addr: Any, n: Any) -> None:
        res = await self._op("load", (addr, n), {})
        if isinstance(res, bytes):
            if type(n) is int and len(res) != n:
                self.rt.anomaly("bad-result", "load length",
                                f"{self.th.name} load({addr!r}, {n}) returned {len(res)} bytes")
            self._check_secrets(res, addr)

    def _check_secrets(self, data: bytes, addr: object) -> None:
        rt = self.rt
        mine = self.th.task
        for owner, secret in rt.secrets.items():
            if owner is mine or owner in rt.public or secret not in data:
                continue
            if rt.has_sigma0_access(mine):
                continue
            rt.anomaly("escalation-memory", "a secret read by another task",
                       f"{self.th.name} (task {mine.name}) loaded at {addr!r} the secret of "
                       f"task {owner.name}, which never sent it")

    async def store(self, addr: Any, data: Any) -> None:
        await self._op("store", (addr, data), {})

    async def plant_secret(self) -> None:
        """Store this task's secret at SECRET_ADDR (checked: no other task may read it)."""
        rt = self.rt
        task = self.th.task
        secret = rt.secret_of(task)
        res = await self._op("store", (SECRET_ADDR, secret), {})
        if res is None and not rt.finished and task in rt.owners and self.th.alive:
            rt.secrets[task] = secret

    async def unmap(self, fpage: Any, self_too: Any = False) -> None:
        await self._op("unmap", (fpage,), {"self_too": self_too})

    async def ex_regs(self, sel: Any, cancel: Any = True, cpu: Any = None) -> None:
        await self._op("ex_regs", (sel,), {"cancel": cancel, "cpu": cpu}, (sel, _R))

    async def delete(self, sel: Any) -> None:
        await self._op("delete", (sel,), {}, (sel, _D))

    async def raise_exception(self, trap: Any, code: Any = 0) -> None:
        await self._op("raise_exception", (trap, code), {})

    async def irq_bind(self, sel: Any, label: Any = 0) -> None:
        await self._op("irq_bind", (sel,), {"label": label}, (sel, _S | _R))

    async def irq_detach(self, sel: Any) -> None:
        await self._op("irq_detach", (sel,), {}, (sel, _S | _R))

    async def irq_trigger(self, sel: Any) -> None:
        await self._op("irq_trigger", (sel,), {}, (sel, _R))

    async def irq_unmask(self, sel: Any) -> None:
        await self._op("irq_unmask", (sel,), {}, (sel, _R))

    async def irq_receive(self, sel: Any, **kw: Any) -> None:
        await self._op("irq_receive", (sel,), kw, (sel, _R, "recv"))

    async def irq_wait(self, sel: Any, **kw: Any) -> None:
        await self._op("irq_wait", (sel,), kw, (sel, _R, "recv"))

    async def migrate(self, cpu: Any) -> None:
        await self._op("migrate", (cpu,), {})

    # --- the UTCB, and dying ---------------------------------------------------------------

    def set_mr(self, i: int, value: int) -> None:
        self.th.mr[i] = value

    def set_br(self, i: int, value: int) -> None:
        self.th.utcb.br[i] = value

    def set_bdr(self, value: int) -> None:
        self.th.utcb.bdr = value

    def die(self) -> None:
        raise FuzzDeath(f"{self.th.name} dies on purpose")


# --- running one program ---------------------------------------------------------------

@dataclass
class RunOutcome:
    """One run of a program in one mode."""

    mode: str
    anomalies: list[Anomaly]
    log: list[tuple[Any, ...]]
    end: tuple[Any, ...]
    events: str
    entries: int
    ops: int
    seconds: float


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[dict[str, bool]]:
    """Raise FuzzHang in this (main) thread after `seconds` of wall time, and again every
    half second until the run ends (a `finally:` in a thread body may swallow one); the
    state says whether it fired."""
    state = {"fired": False}
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def fire(_sig: int, _frame: FrameType | None) -> None:
        state["fired"] = True
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        raise FuzzHang(f"no end after {seconds:g} s of wall time")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


MODES: dict[str, dict[str, Any]] = {
    "checked": {"check": True, "trace": True}, "traced": {"trace": True}, "fast": {}}


def run_build(build: Build, kernel: dict[str, Any], run: dict[str, Any], seed: int,
              mode: str, watchdog: float | None = None) -> RunOutcome:
    """Build the system on a fresh kernel in `mode` and run it, applying the oracles."""
    t0 = time.perf_counter()
    k = Kernel(**kernel, **MODES[mode])
    stepped = bool(run.get("stepped"))
    rt = FuzzRuntime(k, seed, mode, stepped)
    reason = "?"
    dog = {"fired": False}
    try:
        with _watchdog(WATCHDOG_SECONDS if watchdog is None else watchdog) as dog:
            reason = "build"
            build(k, rt)
            reason = "run"
            if stepped:
                reason = _step_through(k, rt, run.get("until"), run.get("max_steps"))
            else:
                res = k.run(until=run.get("until"), max_steps=run.get("max_steps"))
                reason = res.reason
    except FuzzHang as e:
        rt.anomaly("hang", "no end", f"{e} (until={run.get('until')}, "
                   f"max_steps={run.get('max_steps')}, simulated time {k.now})")
        reason = "hang"
    except KernelInvariantError as e:
        rt.anomaly("invariant", e.invariant, f"out of k.run(): {e} ({_kernel_frames(e)})")
        reason = "invariant"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        _path, where = _where(e.__traceback__)
        kind = "run-escape" if reason == "run" else "build-error"
        rt.anomaly(kind, f"{type(e).__name__} at {where}",
                   f"out of {'k.run()' if reason == 'run' else 'build(k)'}: "
                   f"{type(e).__name__}: {e} ({_kernel_frames(e)})")
        reason = "escape"
    finally:
        rt.finished = True
    if dog["fired"] and reason != "hang":  # the watchdog's exception was swallowed
        rt.anomaly("hang", "no end", f"no end within {WATCHDOG_SECONDS:g} s of wall time "
                   f"(until={run.get('until')}, max_steps={run.get('max_steps')})")
    for what in rt.dead_pending.values():
        rt.anomaly("dead-syscall", "blocked", f"{what}: it blocked in the kernel")
    died = []
    for th, why in k.died:
        died.append((th.tid, why))
        if not _DEATHS.match(why):
            kind = "internal-death"
            rt.anomaly(kind, _scrub(why), f"{th.name} died: {why}")
    end = (reason, k.now, tuple(died),
           tuple(sorted((th.tid, th.state, repr(th.result)) for th in k.threads.values())))
    events = (hashlib.blake2b(repr(k.events).encode(), digest_size=16).hexdigest()
              if k.trace else "")
    entries = k.entries
    _close(k)
    return RunOutcome(mode, rt.anomalies, rt.log, end, events, entries, rt.ops,
                      time.perf_counter() - t0)


STEPS = 20_000  # the steps of a stepped run without a step limit of its own


def _step_through(k: Kernel, rt: FuzzRuntime, until: int | None,
                  max_steps: int | None) -> str:
    """A stepped run: `k.step()` until nothing can run, the next step would begin at
    `until`, or `max_steps` steps (STEPS) were made; before each step, the host events
    due by the time that step begins (all of them once nothing can run)."""
    pending = sorted(rt.between)
    limit = STEPS if max_steps is None else max_steps
    steps = 0
    while True:
        nxt = k.peek()
        when = nxt[0] if nxt is not None else None
        if pending and (when is None or pending[0][0] <= when):
            pending.pop(0)[2]()  # (then look again: it may change what runs next)
            continue
        if nxt is None:
            return "stopped"
        if until is not None and when is not None and when >= until:
            return "until"
        if steps >= limit:
            return "steps"
        k.step()
        steps += 1


def _close(k: Kernel) -> None:
    """Close the coroutines of threads that did not end (their wrappers do nothing now)."""
    for th in list(k.threads.values()):
        coro = th.coro
        th.coro = None
        if coro is not None:
            with contextlib.suppress(BaseException):
                coro.close()


def _first_difference(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"entry {i}: {x!r} != {y!r}"
    return f"lengths {len(a)} != {len(b)}"


@dataclass
class SeedReport:
    """Everything the fuzzer learned from one program."""

    seed: int
    anomalies: list[Anomaly]
    entries: int          # kernel entries of the checked run (its system calls)
    entries_all: int      # kernel entries of every run
    ops: int              # operations the fuzz threads issued in the checked run
    runs: int
    digest: str           # the traced run's event record, results and end state
    shape: dict[str, int] = field(default_factory=dict)


def compile_program(prog: Program) -> tuple[Build, dict[str, Any], dict[str, Any]]:
    """Render the program and load its source: (build, kernel options, run options)."""
    source = render(prog)
    ns: dict[str, Any] = {"__name__": f"l4sim_fuzz_{prog.seed}"}
    exec(compile(source, f"<fuzz seed {prog.seed}>", "exec"), ns)
    return ns["build"], ns["KERNEL"], ns["RUN"]


def _digest(out: RunOutcome) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(out.events.encode())
    h.update(repr(out.log).encode())
    h.update(repr(out.end).encode())
    return h.hexdigest()


def check_build(build: Build, kernel: dict[str, Any], run: dict[str, Any], seed: int,
                modes: Iterable[str] = ("checked", "traced", "fast")) -> SeedReport:
    """Run one program in each mode and compare the runs (determinism, fast path)."""
    outs: dict[str, RunOutcome] = {}
    anomalies: list[Anomaly] = []
    for mode in modes:
        out = run_build(build, kernel, run, seed, mode)
        outs[mode] = out
        anomalies += out.anomalies
        if out.anomalies:
            break  # a broken run says nothing about the others
    a, b, c = outs.get("checked"), outs.get("traced"), outs.get("fast")
    if (a is not None and b is not None and not anomalies
            and (a.events != b.events or a.log != b.log or a.end != b.end)):
        what = ("event record" if a.events != b.events else
                f"results ({_first_difference(a.log, b.log)})" if a.log != b.log else
                f"end state ({a.end!r} != {b.end!r})")
        anomalies.append(Anomaly("nondeterminism", "re-run differs",
                                 f"the re-run of the seed differs: {what}", seed, "traced"))
    ref = a or b
    if (ref is not None and c is not None and not anomalies
            and (ref.log != c.log or ref.end != c.end)):
        what = (f"results ({_first_difference(ref.log, c.log)})" if ref.log != c.log else
                f"end state ({ref.end!r} != {c.end!r})")
        anomalies.append(Anomaly("fastpath-divergence", "fast path differs",
                                 f"the fast-path run differs: {what}", seed, "fast"))
    first = a or b or c
    assert first is not None
    return SeedReport(seed, anomalies, first.entries, sum(o.entries for o in outs.values()),
                      first.ops, len(outs), _digest(b) if b is not None else "")


def check_program(prog: Program, modes: Iterable[str] = ("checked", "traced", "fast")) -> SeedReport:
    build, kernel, run = compile_program(prog)
    report = check_build(build, kernel, run, prog.seed, modes)
    report.shape = prog.shape()
    return report


_MULTI_CPU: int | None = None


def cpus_available() -> int:
    """How many CPUs the generator may give a kernel (1 until the multiprocessor lands)."""
    global _MULTI_CPU
    if _MULTI_CPU is None:
        try:
            Kernel(cpus=2)
            _MULTI_CPU = 2 if hasattr(UserContext, "migrate") else 1
        except (ValueError, TypeError):
            _MULTI_CPU = 1
        fuzz_gen.MULTI_CPU = _MULTI_CPU > 1
    return _MULTI_CPU


def program_of(seed: int) -> Program:
    return generate(seed, cpus_available())


def check_seed(seed: int) -> SeedReport:
    return check_program(program_of(seed))


# --- shrinking -------------------------------------------------------------------------

def shrink(prog: Program, signature: str, budget: float = 60.0) -> Program:
    """The smallest variant of `prog` found within `budget` seconds that still shows an
    anomaly with this signature."""
    global WATCHDOG_SECONDS
    deadline = time.monotonic() + budget
    best = prog
    saved, WATCHDOG_SECONDS = WATCHDOG_SECONDS, min(WATCHDOG_SECONDS, 3.0)  # hangs shrink too
    try:
        improved = True
        while improved and time.monotonic() < deadline:
            improved = False
            for cand in shrinks(best):
                if time.monotonic() >= deadline:
                    break
                try:
                    rep = check_program(cand)
                except Exception:  # a variant that does not even build
                    continue
                if any(a.signature == signature for a in rep.anomalies):
                    best = cand
                    improved = True
                    break
    finally:
        WATCHDOG_SECONDS = saved
    return best


# --- PYTHONHASHSEED ----------------------------------------------------------------------

def traced_digest(seed: int) -> str:
    """The digest of the traced run of `seed` (the same as `SeedReport.digest`)."""
    return check_program(program_of(seed), modes=("traced",)).digest


def hashseed_digests(seeds: list[int], hashseed: str) -> dict[int, str]:
    """The traced digests of `seeds` computed in a subprocess with PYTHONHASHSEED=hashseed."""
    if not seeds:
        return {}
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    proc = subprocess.run([sys.executable, "-m", "l4sim.explore.fuzz", *map(str, seeds)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the digest subprocess failed: {proc.stderr[-2000:]}")
    return {int(s): d for s, d in json.loads(proc.stdout).items()}


def other_hashseed() -> str:
    current = os.environ.get("PYTHONHASHSEED", "")
    return "4242" if current != "4242" else "1717"


# --- the standalone reproduction's main -------------------------------------------------------

def repro_main(build: Build, kernel: dict[str, Any], run: dict[str, Any], seed: int = 0) -> int:
    """Run a rendered program with every oracle; print FAIL and each anomaly, or OK."""
    report = check_build(build, kernel, run, seed)
    for a in report.anomalies:
        print(f"FAIL [{a.mode}] {a.kind}: {a.detail}")
    if not report.anomalies:
        print(f"OK: no anomaly ({report.entries} system calls in the checked run)")
    return 0


def _digest_main(argv: list[str]) -> None:
    print(json.dumps({s: traced_digest(int(s)) for s in argv}))



# --- campaigns -------------------------------------------------------------------------

@dataclass
class Summary:
    """What a campaign did and found."""

    seeds: int = 0
    runs: int = 0
    system_calls: int = 0      # kernel entries of the checked runs
    entries_all: int = 0       # kernel entries of every run
    ops: int = 0
    seconds: float = 0.0
    jobs: int = 1
    anomalies: list[Anomaly] = field(default_factory=list)
    shapes: dict[str, dict[int, int]] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)   # a sample, for PYTHONHASHSEED
    hashseed_checked: int = 0
    first_seed: int = 0
    last_seed: int = -1

    def add(self, rep: SeedReport, sample: bool) -> None:
        self.seeds += 1
        self.runs += rep.runs
        self.system_calls += rep.entries
        self.entries_all += rep.entries_all
        self.ops += rep.ops
        self.anomalies += rep.anomalies
        shape = dict(rep.shape, calls=_bucket(rep.entries))
        for key, value in shape.items():
            hist = self.shapes.setdefault(key, {})
            hist[value] = hist.get(value, 0) + 1
        if sample and rep.digest and not rep.anomalies:
            self.digests[rep.seed] = rep.digest

    def merge(self, other: Summary) -> None:
        self.seeds += other.seeds
        self.runs += other.runs
        self.system_calls += other.system_calls
        self.entries_all += other.entries_all
        self.ops += other.ops
        self.anomalies += other.anomalies
        for key, hist in other.shapes.items():
            mine = self.shapes.setdefault(key, {})
            for value, n in hist.items():
                mine[value] = mine.get(value, 0) + n
        self.digests.update(other.digests)
        self.last_seed = max(self.last_seed, other.last_seed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seeds": self.seeds, "first_seed": self.first_seed, "last_seed": self.last_seed,
            "runs": self.runs, "system_calls": self.system_calls,
            "system_calls_all_runs": self.entries_all, "operations": self.ops,
            "seconds": round(self.seconds, 2), "jobs": self.jobs,
            "calls_per_second": round(self.system_calls / self.seconds, 1) if self.seconds else 0.0,
            "hashseed_checked": self.hashseed_checked,
            "anomalies": [a.as_dict() for a in self.anomalies],
            "shape": {key: {str(v): n for v, n in sorted(hist.items())}
                      for key, hist in sorted(self.shapes.items())},
        }


def _bucket(n: int) -> int:
    """System calls of a run, rounded down to a power of two (a histogram bin)."""
    return 0 if n <= 0 else 1 << (n.bit_length() - 1)


SAMPLE_EVERY = 50  # one seed in this many is re-run under another PYTHONHASHSEED


def fuzz_chunk(seeds: list[int], deadline: float | None = None) -> Summary:
    """Fuzz these seeds (stop early at the wall-clock `deadline`, time.time())."""
    s = Summary(first_seed=seeds[0] if seeds else 0)
    for seed in seeds:
        if deadline is not None and time.time() >= deadline:
            break
        s.add(check_seed(seed), sample=seed % SAMPLE_EVERY == 0)
        s.last_seed = seed
    return s


def _chunks(start: int, count: int | None, size: int) -> Iterator[list[int]]:
    seed = start
    while count is None or seed < start + count:
        end = seed + size if count is None else min(seed + size, start + count)
        yield list(range(seed, end))
        seed = end


def campaign(seed_start: int = 0, seeds: int | None = None, minutes: float | None = None,
             jobs: int = 1, hashseed: bool = True,
             progress: Callable[[Summary], None] | None = None) -> Summary:
    """Fuzz `seeds` seeds from `seed_start`, or as many as fit in `minutes`, on `jobs`
    processes; then re-run a sample under another PYTHONHASHSEED."""
    t0 = time.time()
    deadline = t0 + minutes * 60 if minutes is not None else None
    total = Summary(first_seed=seed_start, jobs=jobs, last_seed=seed_start - 1)
    chunk = 10
    if jobs <= 1:
        for seeds_ in _chunks(seed_start, seeds, chunk):
            if deadline is not None and time.time() >= deadline:
                break
            total.merge(fuzz_chunk(seeds_, deadline))
            if progress is not None:
                progress(total)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
        with ctx.Pool(jobs) as pool:
            pending: list[Any] = []
            source = _chunks(seed_start, seeds, chunk)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < 2 * jobs and (
                        deadline is None or time.time() < deadline):
                    nxt = next(source, None)
                    if nxt is None:
                        exhausted = True
                        break
                    pending.append(pool.apply_async(fuzz_chunk, (nxt, deadline)))
                if deadline is not None and time.time() >= deadline:
                    exhausted = True
                if not pending:
                    break
                pending[0].wait(0.2)
                done = [p for p in pending if p.ready()]
                pending = [p for p in pending if not p.ready()]
                for p in done:
                    total.merge(p.get())
                if done and progress is not None:
                    progress(total)
    total.seconds = time.time() - t0
    if hashseed and total.digests:
        sample = sorted(total.digests)[:40]
        other = hashseed_digests(sample, other_hashseed())
        total.hashseed_checked = len(sample)
        for seed in sample:
            if other.get(seed) != total.digests[seed]:
                total.anomalies.append(Anomaly(
                    "hash-nondeterminism", "another PYTHONHASHSEED differs",
                    f"seed {seed}: the traced run differs under PYTHONHASHSEED="
                    f"{other_hashseed()}", seed, "traced"))
    total.anomalies.sort(key=lambda a: (a.seed if a.seed is not None else -1, a.kind))
    return total


def distinct(anomalies: Iterable[Anomaly]) -> dict[str, list[Anomaly]]:
    """Anomalies grouped by signature (the first one of each group found first)."""
    groups: dict[str, list[Anomaly]] = {}
    for a in anomalies:
        groups.setdefault(a.signature, []).append(a)
    return groups


if __name__ == "__main__":
    _digest_main(sys.argv[1:])
