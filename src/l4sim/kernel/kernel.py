"""The kernel object: boot configuration (host API), the CPU loop, timers and scheduling.

`Kernel.run` drives the CPU loop: the only place that calls `coroutine.send()`. Policy
(who runs next) lives in `_pick`, `block`, `preemption_point` and `update_prio`;
the IPC semantics live in `ipc.py`.
"""

from __future__ import annotations

import contextlib
import heapq
import inspect
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from . import diagnose, longipc, states
from .abi import NEVER, Timeout
from .costs import CostProfile
from .costs import profile as get_profile
from .errors import KernelInvariantError, ThreadDeleted, ThreadKilled
from .exceptions import body_with_handler, report_preemption
from .flexpage import release_task, sigma0_roots
from .ipc import ENOT_EXISTENT, SECANCELED, deliver_irq, end_wait, leave_queues, wake_waiter
from .memory import DEFAULT_PT_QUOTA, MappingDatabase, PhysicalMemory
from .objects import DEFAULT_PAGER, Body, DefaultPager, IpcGate, Irq, KernelObject, Task, Thread
from .result import IpcResult
from .sched import INFINITY, Cpu
from .sendq import SenderQueue
from .states import CANCEL, DEAD, IPC_TRANSFER, READY, RECEIVE_WAIT, SEND_WAIT, state_name
from .tracelog import DEFAULT_TRACE_LIMIT, EventLog
from .trap import switch

_STOP = object()  # timer-heap marker: the end of a run(until=...)


def _dead_resume(_: None) -> Thread | None:
    raise RuntimeError("a deleted thread was resumed")


class Event(NamedTuple):
    """One entry of the event record: simulated time, CPU, thread name, event, detail,
    and the thread's tid (names need not be unique)."""

    time: int
    cpu: int
    thread: str
    event: str
    detail: str
    tid: int = 0


class RunResult:
    """How `Kernel.run` ended: `reason` is "done", "deadlock", "until" or "steps".

    `now` is the simulated time in cycles; `blocked` the threads still waiting in IPC,
    `waits` how each of them waits (an idle server's open receive, or a wait that can
    never end), `chains` the wait-for chains among them (`a → b → a` for a deadlock);
    `died` the threads that ended other than by returning, with the reason (for a Python
    exception the reason's `.traceback` holds the user's traceback); `warnings` what
    looked like a mistake (an IPC operation never awaited). `str(result)` explains it all.
    """

    __slots__ = ("reason", "now", "blocked", "died", "steps", "waits", "chains", "warnings",
                 "kernel")

    def __init__(self, reason: str, now: int, blocked: list[Thread],
                 died: list[tuple[Thread, str]], steps: int,
                 kernel: Kernel | None = None, warnings: list[str] | None = None) -> None:
        self.reason = reason
        self.now = now
        self.blocked = blocked
        self.died = died
        self.steps = steps
        self.kernel = kernel
        self.warnings = list(warnings or ())
        self.waits = {t: diagnose.wait_description(t) for t in blocked}
        self.chains = diagnose.wait_for_chains(blocked)

    def explain(self) -> str:
        """Why the run ended, who is blocked and how, who died and where (tracebacks)."""
        mhz = self.kernel.mhz if self.kernel is not None else 0
        at = f" ({self.now / mhz:.3f} µs)" if mhz else ""
        lines = [f"run ended: {self.reason} at {self.now} cycles{at}, {self.steps} kernel entries"]
        for t in self.blocked:
            lines.append(f"  blocked: {t.name} {self.waits[t]}")
        for chain in self.chains:
            lines.append(f"  wait-for: {chain}")
        for t, why in self.died:
            lines.append(f"  died: {t.name}: {why}")
            tb = getattr(why, "traceback", None)
            if tb:
                lines += ["    " + ln for ln in tb.rstrip().splitlines()]
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)

    __str__ = explain

    def _repr_html_(self) -> str:
        """The run report, inline in Jupyter."""
        from ..trace.html import result_html

        return result_html(self)

    def __repr__(self) -> str:
        blocked = ", ".join(f"{t.name}({t.state_name})" for t in self.blocked)
        died = ", ".join(f"{t.name}: {why}" for t, why in self.died)
        return (f"RunResult({self.reason!r}, now={self.now}, blocked=[{blocked}], "
                f"died=[{died}])")


class Kernel:
    """An emulated L4 kernel. Build the system on it (tasks, threads, gates, capabilities),
    then `run()` it. Its options are listed in docs/api.md."""

    def __init__(self, cpus: int = 1, memory: int = 64 << 20,
                 profile: str | CostProfile = "core2-sysenter", copy: str = "window",
                 transfer: str = "symmetric", seed: int = 0, check: bool = False,
                 trace: bool = False, priority_inheritance: bool = True,
                 timeslice: int | None = None, frequency_mhz: int = 2663,
                 fastpath: bool = True, trace_limit: int | None = DEFAULT_TRACE_LIMIT) -> None:
        if cpus != 1:
            raise ValueError("l4sim runs one CPU until the multiprocessor part lands")
        if copy not in ("window", "kernel-buffer"):
            raise ValueError(f"copy must be 'window' or 'kernel-buffer', got {copy!r}")
        if transfer not in ("symmetric", "sender-driven"):
            raise ValueError(f"transfer must be 'symmetric' or 'sender-driven', got {transfer!r}")
        if not isinstance(frequency_mhz, int) or frequency_mhz <= 0:
            raise ValueError(f"frequency_mhz must be a positive int, got {frequency_mhz!r}")
        if memory <= 0 or memory % 4096:
            raise ValueError(f"memory must be a positive multiple of 4 KiB, got {memory}")
        self.mhz = frequency_mhz
        self.memory = memory
        self.copy = copy
        self.transfer = transfer
        self.seed = seed
        self.check = check
        self.trace = trace
        self.priority_inheritance = priority_inheritance
        self.timeslice = timeslice if timeslice is not None else 10_000 * frequency_mhz  # 10 ms
        if self.timeslice <= 0:
            raise ValueError("timeslice must be positive")
        self.costs = get_profile(profile)
        self.ipc_costs = [self.costs.ipc_cost(n) for n in range(64)]
        # The fast path sets state words directly; checked or traced runs take the general path.
        self.fastpath = fastpath and not check and not trace
        self.cpus = [Cpu(i) for i in range(cpus)]
        for c in self.cpus:
            c.ipc_costs = self.ipc_costs
        self.tasks: list[Task] = []
        self.threads: dict[int, Thread] = {}
        self.gates: list[IpcGate] = []
        # Threads in a closed receive on a partner that are not that partner's
        # reply_caller (which finds the rest): told ENOT_EXISTENT when it ends.
        self.waiters: dict[Thread, dict[Thread, None]] = {}
        self._irq_count = 0
        self.phys = PhysicalMemory(memory)
        self._sigma0: Thread | None = None
        self._root_task: Task | None = None  # sigma0's: it holds the roots of the mapping database
        self._anon_pager: Thread | None = None
        self._code_files: list[str] = []       # code locations: file index << 32 | line
        self._code_index: dict[str, int] = {}
        # With trace_limit, a ring holding the last trace_limit..2*trace_limit events.
        self.events: list[Event] = EventLog(trace_limit) if trace and trace_limit else []
        self.died: list[tuple[Thread, str]] = []
        self.warnings: list[str] = []  # mistakes seen in user code (a missing await)
        self.entry_limit = INFINITY
        self._next_tid = 1
        self._next_task = 1
        self._seq = 0
        self._stop: str | None = None
        self._running = False
        self._last_check_time = 0

    # --- host API: building the system ------------------------------------------------

    @property
    def entries(self) -> int:
        """Kernel entries (system calls) so far."""
        return sum(c.entries for c in self.cpus)

    @property
    def now(self) -> int:
        """Simulated time in cycles (`k.cycles_to_us(k.now)` in µs)."""
        return self.cpus[0].now

    def us(self, n: float) -> int:
        """`n` microseconds of simulated time in cycles, at this kernel's clock (`k.mhz`)."""
        if isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0:
            raise TypeError(f"k.us takes a non-negative number of microseconds, got {n!r}")
        return round(n * self.mhz)

    def ms(self, n: float) -> int:
        """`n` milliseconds of simulated time in cycles."""
        return self.us(n * 1000)

    def cycles_to_us(self, cycles: int) -> float:
        """Simulated cycles in microseconds."""
        return cycles / self.mhz

    def _time(self, what: str, value: int | Timeout) -> int | None:
        """A point in time given as cycles or as a Timeout (relative to now); None: never."""
        if isinstance(value, Timeout):
            return value.deadline(self.now, self.mhz)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < INFINITY:
            raise ValueError(f"{what} is a non-negative int of cycles (k.us(n) converts "
                             f"microseconds) or a Timeout, got {value!r}")
        return value

    def new_task(self, name: str | None = None, pt_quota: int = DEFAULT_PT_QUOTA) -> Task:
        """A new task: an empty address space and object space. `pt_quota` bounds the
        bytes of page tables its mappings may use (a map beyond it fails)."""
        if not isinstance(pt_quota, int) or pt_quota < 4096:
            raise ValueError(f"pt_quota is a number of bytes >= 4096, got {pt_quota!r}")
        task = Task(self, name or f"task{self._next_task}", self._next_task, pt_quota)
        self._next_task += 1
        self.tasks.append(task)
        self.after_host_op()
        return task

    def new_thread(self, task: Task, body: Body, args: tuple[Any, ...], *, name: str | None,
                   priority: int, cpu: int, pager: Thread | DefaultPager | None,
                   exc_handler: Thread | None, preempter: Thread | None = None) -> Thread:
        from ..user.context import UserContext

        if not task.alive:
            raise ValueError(f"{task!r} has been deleted")
        if not inspect.iscoroutinefunction(body):
            raise TypeError(f"a thread body must be an 'async def' function, got {body!r}")
        if not isinstance(priority, int) or not 0 <= priority <= 255:
            raise ValueError(f"priority must be an int in 0..255, got {priority!r}")
        if not isinstance(cpu, int) or not 0 <= cpu < len(self.cpus):
            raise ValueError(f"cpu must be in 0..{len(self.cpus) - 1}, got {cpu!r}")
        default_pager = pager is DEFAULT_PAGER
        if isinstance(pager, DefaultPager):
            pager = None
        for role, other in (("pager", pager), ("exc_handler", exc_handler),
                            ("preempter", preempter)):
            if other is not None and not isinstance(other, Thread):
                raise TypeError(f"{role} must be a Thread or None, got {type(other).__name__}")
        tid = self._next_tid
        self._next_tid += 1
        th = Thread(self, task, tid, name or f"thread{tid}", body, args, priority, self.cpus[cpu])
        th.pager = pager
        th.pager_default = default_pager
        th.exc_handler = exc_handler
        task.threads.append(th)
        self.threads[tid] = th
        th.self_sel = task.add_cap(th)
        if pager is not None:
            th.pager_sel = task.add_cap(pager)
        th.preempter = preempter
        th.user = UserContext(self, th)
        th.coro = (body(th.user, *args) if exc_handler is None
                   else body_with_handler(self, th, body, args))
        th.resume = th.coro.send
        self.set_state(th, READY)
        th.cpu.enqueue_back(th)
        self.after_host_op()
        return th

    def new_gate(self, thread: Thread, label: int = 0, name: str | None = None) -> IpcGate:
        """An IPC gate bound to `thread`; senders through it are seen with `label`."""
        if not isinstance(thread, Thread):
            raise TypeError(f"a gate is bound to a Thread, got {type(thread).__name__}")
        if thread.state & DEAD:
            raise ValueError(f"{thread!r} is dead")
        if not isinstance(label, int) or not -(1 << 47) <= label < (1 << 47):
            raise ValueError(f"a gate label is a 48-bit signed int, got {label!r}")
        gate = IpcGate(self, thread, label, name or f"gate{len(self.gates) + 1}")
        self.gates.append(gate)
        thread.gates.append(gate)
        return gate

    def _sigma0_task(self) -> Task | None:
        return self._root_task

    @property
    def mapdb(self) -> MappingDatabase:
        """The mapping database, for reading: `k.mapdb.dump()`."""
        return MappingDatabase(self)

    # --- boot servers: made on first use, so that programs without memory pay nothing

    @property
    def sigma0(self) -> Thread:
        """The root pager: owns all physical memory and I/O ports, maps them 1:1 on request."""
        if self._sigma0 is None:
            from ..lib.sigma0 import sigma0_body

            task = self._root_task = self.new_task("sigma0")
            sigma0_roots(self, task)
            self._sigma0 = task.new_thread(sigma0_body, self.memory, name="sigma0",
                                           priority=254, pager=None)
        return self._sigma0

    @property
    def anon_pager(self) -> Thread:
        """The anonymous-memory pager: zero-filled pages from sigma0, for every thread
        created without an explicit pager."""
        if self._anon_pager is None:
            from ..lib.anon_pager import anon_pager_body

            sigma0 = self.sigma0
            task = self.new_task("anon-pager")
            sel = task.add_cap(sigma0)
            self._anon_pager = task.new_thread(anon_pager_body, sel, name="anon-pager",
                                               priority=250, pager=sigma0)
        return self._anon_pager

    def default_pager(self) -> Thread | None:
        """The pager of a thread created without one: the anonymous-memory pager, made on
        the first fault; None when it cannot be made any more (sigma0 was deleted first)."""
        if self._anon_pager is None and self._sigma0 is not None and not self._sigma0.alive:
            return None
        return self.anon_pager

    def code_ip(self, filename: str, line: int) -> int:
        """Encode a Python code location as an instruction pointer, deterministically:
        the file's index in this kernel's registry << 32 | the line number."""
        index = self._code_index.get(filename)
        if index is None:
            index = self._code_index[filename] = len(self._code_files)
            self._code_files.append(filename)
        return index << 32 | (line & 0xFFFFFFFF)

    def code_location(self, ip: int) -> str:
        """Decode an instruction pointer made by `code_ip` as "file:line"."""
        index, line = ip >> 32, ip & 0xFFFFFFFF
        if not 0 <= index < len(self._code_files):
            raise ValueError(f"{ip:#x} is not a code location of this kernel")
        return f"{self._code_files[index]}:{line}"

    def new_irq(self, name: str | None = None) -> Irq:
        """A software-triggerable interrupt source (host-level setup)."""
        self._irq_count += 1
        return Irq(self, name or f"irq{self._irq_count}")

    def at(self, cycles: int | Timeout, callback: Callable[[], Any]) -> None:
        """Run `callback()` (host code) at simulated time `cycles` (an int of cycles, or a
        Timeout: `Timeout.us(5)` is 5 µs from now), at the first preemption point at or
        after it."""
        when = self._time("a time", cycles)
        if when is None:
            return  # never
        cycles = when
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._push_event(self.cpus[0], [cycles, self._next_seq(), None, callback])

    def delete(self, obj: KernelObject) -> None:
        """Delete a thread, task or gate from host code (as a task holding D would)."""
        if not isinstance(obj, KernelObject):
            raise TypeError(f"delete needs a kernel object, got {type(obj).__name__}")
        if not obj.alive:
            raise ValueError(f"{obj!r} has already been deleted")
        self.delete_object(obj)

    def _repr_html_(self) -> str:
        """The run report of this kernel (threads, trace, mapping database), inline in
        Jupyter."""
        from ..trace.html import kernel_html

        return kernel_html(self)

    def cancel(self, thread: Thread) -> None:
        """ex_regs(cancel) from host code: end `thread`'s IPC wait (no effect otherwise)."""
        from .ipc import cancel_ipc

        if not isinstance(thread, Thread):
            raise TypeError(f"cancel needs a Thread, got {type(thread).__name__}")
        cancel_ipc(self, thread)
        self.after_host_op()

    # --- running ----------------------------------------------------------------------

    def run(self, until: int | Timeout | None = None,
            max_steps: int | None = None) -> RunResult:
        """Run until no thread can run again, simulated time `until` (cycles, or a Timeout:
        `until=Timeout.us(500)` is 500 µs from now; `k.us(n)` converts), or `max_steps`
        more kernel entries (system calls and timer interrupts). Can be called again to
        go on."""
        if self._running:
            raise RuntimeError("Kernel.run() is not reentrant")
        cpu = self.cpus[0]
        if until is not None:
            until = self._time("until", until)
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps <= 0):
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        self._stop = None
        stop_entry = None
        if until is not None:
            if until <= cpu.now:
                return self._result("until")
            stop_entry = [until, self._next_seq(), None, _STOP]
            self._push_event(cpu, stop_entry)
        self.entry_limit = self.entries + max_steps if max_steps is not None else INFINITY
        if max_steps is not None:
            self._set_fast(False)  # the fast path does not look at the step limit
        self._running = True
        unawaited = warnings._warn_unawaited_coroutine  # type: ignore[attr-defined]
        warnings._warn_unawaited_coroutine = (  # type: ignore[attr-defined]
            diagnose.forgotten_await_hook(self, unawaited))
        try:
            self._loop(cpu)
        finally:
            warnings._warn_unawaited_coroutine = unawaited  # type: ignore[attr-defined]
            self._running = False
            self.entry_limit = INFINITY
            if max_steps is not None:
                self._set_fast(self.fastpath)
            if stop_entry is not None:
                stop_entry[3] = None
        if self._stop == "until" and until is not None and cpu.now < until:
            cpu.now = until  # idle up to the end of the run (time never goes back)
        reason = self._stop or self._end_reason()
        return self._result(reason)

    def _set_fast(self, on: bool) -> None:
        for th in self.threads.values():
            th.user.fast = on and not th.state & DEAD

    def _result(self, reason: str) -> RunResult:
        blocked = [t for t in self.threads.values() if t.state & (SEND_WAIT | RECEIVE_WAIT)]
        return RunResult(reason, self.now, blocked, list(self.died), self.entries, self,
                         self.warnings)

    def _end_reason(self) -> str:
        """Nothing can run: a deadlock if someone waits for a partner that is not idle."""
        for t in self.threads.values():
            if t.state == SEND_WAIT:
                return "deadlock"
            if t.state == RECEIVE_WAIT and type(t.partner) is Thread and t.partner is not t:
                return "deadlock"  # a call's reply wait or a closed receive from a thread
            if t.state & IPC_TRANSFER:
                return "deadlock"  # in a transfer whose copier waits forever
        return "done"

    def _loop(self, cpu: Cpu) -> None:
        """The CPU loop: resume the current thread's chain until it switches, then pick.

        The chain yields the thread to switch to directly (after a rendezvous) or None
        (let the scheduler pick). Per switch the loop only moves the timeslice
        accounting and charges the switch; everything else is off the common path."""
        costs = self.costs
        same_space = costs.thread_switch
        other_space = costs.thread_switch + costs.space_switch
        plain = not (self.check or self.trace)
        th = self._pick(cpu)
        last = cpu.last  # the thread that ran when the previous run() stopped
        if th is not None and last is not None and th is not last:
            cpu.now += same_space if th.task is last.task else other_space
            self.record(th, "switch", f"from {last.name}")
        while th is not None:
            cpu.current = th
            cpu.slice_end = cpu.now + th.slice_left
            try:
                nxt = th.resume(None)
            except StopIteration as stop:
                self._thread_ended(th, stop.value, None)
                nxt = None
            except ThreadDeleted:
                nxt = None
            except ThreadKilled as killed:
                if not th.state & DEAD:
                    self._end_thread(th, killed.reason)
                nxt = None
            except KernelInvariantError:
                raise
            except Exception as exc:  # a user thread's exception: that thread dies, not the run
                self._thread_ended(th, None, exc)
                nxt = None
            now = cpu.now
            th.slice_left = cpu.slice_end - now
            if nxt is not None and plain and now < cpu.next_event:
                # Direct switch to the partner of a rendezvous.
                cpu.now = now + (same_space if nxt.task is th.task else other_space)
                th = nxt
                continue
            if nxt is None and th.state == READY and th.rq_prio < 0:
                self._foreign_await(th)  # it yielded to the loop without a kernel path
            cpu.current = None  # it switched away: an event may wake it again now
            if now >= cpu.next_event:
                self._process_events(cpu)
                if nxt is not None and nxt.state & DEAD:
                    nxt = None  # an event deleted the partner we were switching to
                elif nxt is not None and (self._stop is not None
                                          or cpu.bitmap >> (nxt.prio + 1)):
                    self.make_ready(nxt)
                    nxt = None
            if nxt is None:
                nxt = self._pick(cpu)
                if nxt is None:
                    cpu.last = th
                    break
            if nxt is not th:
                cpu.now += same_space if nxt.task is th.task else other_space
                if self.trace:
                    self.record(nxt, "switch", f"from {th.name}")
            if self.check:
                self.check_invariants(incoming=nxt)
            th = nxt

    def _pick(self, cpu: Cpu) -> Thread | None:
        """Scheduler: the highest-priority ready thread; when none, idle to the next event."""
        while True:
            if cpu.now >= cpu.next_event:
                self._process_events(cpu)
            if self._stop is not None:
                return None
            th = cpu.pop_highest()
            if th is not None:
                return th
            if cpu.next_event == INFINITY or not self._anything_pending(cpu):
                return None  # no thread can ever run again: done or deadlock, not "until"
            cpu.now = cpu.next_event  # idle until the next timer or host event

    @staticmethod
    def _anything_pending(cpu: Cpu) -> bool:
        """Is a timer or host event pending, other than the end of this run?"""
        return any(e[2] is not None or (e[3] is not None and e[3] is not _STOP)
                   for e in cpu.timers)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _push_event(self, cpu: Cpu, entry: list[Any]) -> None:
        heapq.heappush(cpu.timers, entry)
        if entry[0] < cpu.next_event:
            cpu.next_event = entry[0]

    def _process_events(self, cpu: Cpu) -> None:
        """Fire every timer and host event due by now (timer interrupt)."""
        from .ipc import expire

        heap = cpu.timers
        ticked = False
        while heap and heap[0][0] <= cpu.now:
            entry = heapq.heappop(heap)
            th, callback = entry[2], entry[3]
            if th is not None:
                self.record(th, "timeout", f"at {entry[0]}")
                if not ticked:  # the timer interrupt: a kernel entry, tick accounting, exit
                    cpu.now += self.costs.timer_tick
                    cpu.entries += 1
                    ticked = True
                expire(self, th)
            elif callback is _STOP:
                self._stop = "until"
            elif callback is not None:
                callback()
        while heap and heap[0][2] is None and heap[0][3] is None:
            heapq.heappop(heap)
        cpu.next_event = heap[0][0] if heap else INFINITY
        if self.entries >= self.entry_limit and self._stop is None:
            self._stop = "steps"

    # --- kernel entry and exit ----------------------------------------------------------

    async def enter(self, th: Thread, cost: int = 0) -> None:
        """Kernel entry: count it, charge it; stop first if the step limit is reached.
        A dead thread enters no more: its chain (a `finally:` block run while it is closed
        or unwound) is unwound instead."""
        if th.state & DEAD:
            raise ThreadDeleted
        while self.entry_limit < INFINITY and self.entries >= self.entry_limit:
            if self._stop is None:
                self._stop = "steps"
            th.cpu.enqueue_front(th)
            await switch(None)
        th.cpu.entries += 1
        th.cpu.now += cost or self.ipc_costs[0]

    async def leave(self, th: Thread, result: IpcResult) -> IpcResult:
        """Kernel exit: check the invariants; a preemption point if something is due."""
        if self.check:
            self.check_invariants()
        if self.trace and result.error:
            self.record(th, "error", result.error.name)  # each side's error, in the trace
        cpu = th.cpu
        now = cpu.now
        if now >= cpu.slice_end or now >= cpu.next_event or cpu.bitmap >> (th.prio + 1):
            await self.preemption_point(th)
        return result

    async def preemption_point(self, th: Thread) -> None:
        """Timer interrupt and rescheduling: fire due events, then give the CPU to a
        higher-priority thread (we stay at the front of our priority) or, at the end of
        our timeslice, to the next one of our priority (we go to the back)."""
        cpu = th.cpu
        while True:
            if cpu.now >= cpu.next_event:
                self._process_events(cpu)
            if th.state & DEAD:
                raise ThreadDeleted
            if self._stop is not None or cpu.bitmap >> (th.prio + 1):
                if self._stop is None and th.preempter is not None:
                    report_preemption(self, th)
                cpu.enqueue_front(th)
                await switch(None)
                continue
            if cpu.now >= cpu.slice_end:
                cpu.now += self.costs.timer_tick  # the tick that ends the timeslice
                cpu.slice_end = cpu.now + self.timeslice
                cpu.entries += 1  # the timer interrupt is a kernel entry: a step
                if self.entries >= self.entry_limit:
                    self._stop = "steps"
                if cpu.bitmap >> th.prio:
                    self.record(th, "timeslice", "expired")
                    if th.preempter is not None:
                        report_preemption(self, th)
                    cpu.enqueue_back(th)
                    await switch(None)
                    continue
                if self._stop is not None:
                    continue
            return

    async def compute(self, th: Thread, cycles: int) -> None:
        """User computation of `cycles`, preemptible at any simulated time inside."""
        if th.state & DEAD:
            raise ThreadDeleted  # a dead thread's chain being unwound computes nothing
        cpu = th.cpu
        while True:
            room = min(cpu.slice_end, cpu.next_event) - cpu.now
            if cycles < room:
                cpu.now += cycles
                return
            step = int(room) if room > 0 else 0
            cpu.now += step
            cycles -= step
            await self.preemption_point(th)
            if cycles == 0:
                return

    async def block(self, th: Thread, woken: Thread | None) -> None:
        """`th` has blocked in IPC: switch directly to the partner it woke unless a ready
        thread has a strictly higher priority; otherwise let the scheduler pick."""
        cpu = th.cpu
        nxt = None
        if woken is not None:
            if woken.cpu is cpu and not cpu.bitmap >> (woken.prio + 1):
                nxt = woken
            else:
                self.make_ready(woken)
        if self.check:
            self.check_invariants(incoming=nxt, blocking=th)
        await switch(nxt)

    def make_ready(self, th: Thread) -> None:
        """Put a thread that became ready at the back of its priority."""
        if th.rq_prio < 0 and th.cpu.current is not th:
            th.cpu.enqueue_back(th)

    def wake_nonblocking(self, th: Thread, woken: Thread) -> None:
        """The current thread goes on; the woken partner queues (a strictly higher one
        preempts at the kernel exit)."""
        self.make_ready(woken)

    # --- state, timers, priorities -----------------------------------------------------

    def set_state(self, th: Thread, new: int) -> None:
        """The one function through which a state word changes."""
        old = th.state
        if self.check:
            if (old, new) not in states.ALLOWED:
                raise KernelInvariantError(
                    "declared transitions",
                    f"{th.name}: {state_name(old)} -> {state_name(new)} is not declared")
            cov = states.coverage
            if cov is not None:
                cov.add((old, new))
        th.state = new
        if self.trace:
            self.events.append(Event(th.cpu.now, th.cpu.index, th.name, "state", state_name(new),
                                     th.tid))

    def record(self, th: Thread, event: str, detail: str = "") -> None:
        """Append an event when tracing. Callers test `k.trace` first where the detail is
        an f-string: formatting it costs more than the work it describes."""
        if self.trace:
            self.events.append(Event(th.cpu.now, th.cpu.index, th.name, event, detail, th.tid))

    def deadline_of(self, timeout: Timeout, th: Thread) -> int | None:
        if timeout is NEVER:
            return None
        deadline = timeout.deadline(th.cpu.now, self.mhz)
        return deadline if deadline is not None and deadline < INFINITY else None

    def arm_timer(self, th: Thread, deadline: int) -> None:
        entry = [deadline, self._next_seq(), th, None]
        th.timer = entry
        self._push_event(th.cpu, entry)

    def cancel_timer(self, th: Thread) -> None:
        entry = th.timer
        if entry is not None:
            entry[2] = None
            th.timer = None

    def costs_transfer(self, cpu: Cpu, words: int) -> None:
        cpu.now += self.ipc_costs[words] - self.ipc_costs[0]

    def update_prio(self, th: Thread) -> None:
        """Priority inheritance: a thread runs at the highest priority of itself, the
        senders queued at it (it is needed to reach them) and the caller whose reply it
        holds (it works for it); the change passes along call chains, stopping at a cycle."""
        seen: set[Thread] = set()
        t: Thread | None = th
        while t is not None and t not in seen:
            seen.add(t)
            new = t.priority
            if self.priority_inheritance:
                q = t.sendq
                if q:
                    top = q.top_thread_prio()
                    if top > new:
                        new = top
                c = t.reply_caller
                if c is not None and c.prio > new and c.state == RECEIVE_WAIT and c.partner is t:
                    new = c.prio
            if new == t.prio:
                return
            t.prio = new
            if t.rq_prio >= 0:
                t.cpu.dequeue(t)
                t.cpu.enqueue_back(t)
            p = t.partner
            if t.state == SEND_WAIT and isinstance(p, Thread) and p.sendq is not None:
                # (not when `t` is being torn down: it has left its queue already)
                p.sendq.remove(t)
                p.sendq.enqueue(t, new)
                t = p
            elif t.state == RECEIVE_WAIT and isinstance(p, Thread) and p.reply_caller is t:
                t = p
            else:
                return

    # --- interrupts -----------------------------------------------------------------

    def irq_trigger(self, irq: Irq) -> None:
        """The source fires: deliver to its thread if that waits for it, else queue the
        IRQ in its sender queue at priority 255; masked, unbound or already pending, the
        trigger only sets (or coalesces into) the pending bit."""
        if irq.pending or irq.masked or irq.thread is None:
            irq.pending = True
            return
        th = irq.thread
        if th.state == RECEIVE_WAIT and (th.partner is None or th.partner is irq):
            deliver_irq(self, irq, th)
            wake_waiter(self, th)
            return
        irq.pending = True
        irq.queued = True
        q = th.sendq
        if q is None:
            q = th.sendq = SenderQueue()
        q.enqueue(irq, 255)  # kernel senders queue at the top priority
        self.record(th, "irq", f"{irq.name} queued")

    def irq_unmask(self, irq: Irq) -> None:
        """Enable the source again; a trigger held while it was masked is delivered now."""
        if not irq.masked:
            return
        irq.masked = False
        if irq.pending and not irq.queued:
            irq.pending = False
            self.irq_trigger(irq)

    def irq_bind(self, irq: Irq, th: Thread, label: int) -> None:
        """Attach `th` to the IRQ with `label`; a pending trigger is delivered now."""
        if irq.thread is not None:
            self.irq_detach(irq)
        irq.thread = th
        irq.label = label
        th.irqs.append(irq)
        if irq.pending and not irq.masked:
            irq.pending = False
            self.irq_trigger(irq)

    def irq_detach(self, irq: Irq) -> None:
        """Detach the IRQ from its thread; a queued delivery goes back to pending."""
        th = irq.thread
        if th is None:
            return
        if irq.queued:
            assert th.sendq is not None
            th.sendq.remove(irq)
            irq.queued = False
        th.irqs.remove(irq)
        irq.thread = None

    # --- deletion and the end of threads --------------------------------------------------

    def set_reply_cap(self, holder: Thread, caller: Thread) -> None:
        """`holder` received a call from `caller`: it now holds the one-shot reply
        capability to it. A previous caller still waiting keeps waiting, without one
        (found through the waiter index) and no longer lends its priority."""
        old = holder.reply_caller
        holder.reply_caller = caller
        if old is not None and old is not caller:
            if old.state == RECEIVE_WAIT and old.partner is holder:
                self.waiters.setdefault(holder, {})[old] = None
            if holder.prio != holder.priority:
                self.update_prio(holder)

    def add_waiter(self, partner: Thread, waiter: Thread) -> None:
        """`waiter` waits in a closed receive on `partner` without holding its reply
        capability: remember it, so that `partner`'s end can tell it."""
        if partner.reply_caller is not waiter:
            self.waiters.setdefault(partner, {})[waiter] = None

    def forget_waiter(self, partner: Thread, waiter: Thread) -> None:
        ws = self.waiters.get(partner)
        if ws is not None:
            ws.pop(waiter, None)
            if not ws:
                del self.waiters[partner]

    def after_host_op(self) -> None:
        if self.check and not self._running:
            self.check_invariants()

    def _thread_ended(self, th: Thread, value: Any, exc: BaseException | None) -> None:
        if th.state & DEAD:
            return  # killed already: its chain only finished unwinding
        if exc is None:
            th.result = value
            th.returned = True
            self._end_thread(th, None)
        else:
            self._end_thread(th, diagnose.exception_reason(exc))

    def _foreign_await(self, th: Thread) -> None:
        """`th` awaited something that is not an l4sim operation: it dies of it."""
        coro = th.coro
        where = diagnose.suspended_at(coro)
        self._end_thread(th, f"{where}: {diagnose.FOREIGN_AWAIT}" if where
                         else diagnose.FOREIGN_AWAIT)
        if coro is not None:
            th.coro = None
            th.resume = _dead_resume
            with contextlib.suppress(BaseException):
                coro.close()

    def _end_thread(self, th: Thread, reason: str | None) -> None:
        """A thread ends (returned, died or deleted): leave every queue, tell every partner."""
        if th.xfer is not None:
            longipc.thread_ends(self, th)
        if th.state & (SEND_WAIT | RECEIVE_WAIT):
            partner = leave_queues(self, th)
            # (a thread sending to itself is its own partner: nothing to pass on)
            if partner is not None and partner is not th and partner.prio != partner.priority:
                self.update_prio(partner)
        if th.timer is not None:
            self.cancel_timer(th)
        if th.rq_prio >= 0:
            th.cpu.dequeue(th)
        for irq in list(th.irqs):  # its interrupts stay pending until bound again
            self.irq_detach(irq)
        q = th.sendq
        if q:
            for s in list(q):  # senders queued at a dying receiver end SECANCELED
                if isinstance(s, Thread):
                    end_wait(self, s, SECANCELED, READY | CANCEL)
        waiting = dict(self.waiters.pop(th, {}))
        if th.reply_caller is not None:
            waiting[th.reply_caller] = None
        for other in sorted(waiting, key=lambda w: w.tid):
            if other.state == RECEIVE_WAIT and other.partner is th:
                other.wake_error = ENOT_EXISTENT  # its reply (or closed) partner is gone
                wake_waiter(self, other)
        th.reply_caller = None
        th.partner = None
        th.prio = th.priority  # nobody lends priority to a dead thread
        for gate in th.gates:
            gate.thread = None
        th.gates.clear()
        self.set_state(th, DEAD)
        if th.user is not None:
            th.user.fast = False  # the fast path must not run for it either
        self.record(th, "end", reason or "returned")
        th.exit_reason = reason
        if reason is not None:
            self.died.append((th, reason))

    def kill(self, th: Thread, reason: str) -> BaseException:
        """End the running thread `th` now (a fault nobody resolves, an exception nobody
        handles) and return the exception that unwinds its chain: dead from here on, it
        can make no system call while its `finally:` blocks run. A thread already dead
        (its chain being closed) is only unwound."""
        if th.state & DEAD:
            return ThreadDeleted()
        self._end_thread(th, reason)
        return ThreadKilled(reason)

    def delete_object(self, obj: KernelObject) -> None:
        """Delete a thread, task or gate: no reference to it is left anywhere."""
        if isinstance(obj, Task):
            release_task(obj)
            # The calling thread (if it is in this task) goes last: it unwinds after.
            for th in sorted(obj.threads, key=lambda t: t.cpu.current is t):
                if th.alive:
                    if th.xfer is not None:
                        th.xfer.abort = longipc.SEABORTED  # a task goes at once, lock or not
                        th.xfer.locked = False
                    self.delete_object(th)
            obj.caps.clear()
            obj.caps.append(None)
            self.tasks.remove(obj)
        elif isinstance(obj, Thread):
            if obj.xfer is not None and longipc.defer_delete(self, obj):
                return  # locked in a long IPC: deleted when the copier releases the lock
            if not obj.state & DEAD:
                self._end_thread(obj, "deleted")
            elif obj.exit_reason is None and not obj.returned:
                self.died.append((obj, "deleted"))
            self.threads.pop(obj.tid, None)
            coro = obj.coro
            obj.coro = None
            obj.resume = _dead_resume
            if coro is not None and obj.cpu.current is not obj:
                # Closing runs the body's `finally:` blocks; a system call there raises
                # ThreadDeleted (`enter`), so the dead thread does nothing in the kernel.
                try:
                    coro.close()
                except KernelInvariantError:
                    raise
                except (Exception, ThreadDeleted, ThreadKilled):  # user code misbehaving
                    pass
        elif isinstance(obj, Irq):
            if obj.thread is not None:
                self.irq_detach(obj)
            obj.pending = False
            for th in list(self.threads.values()):
                if th.state == RECEIVE_WAIT and th.partner is obj:  # a closed receive on it
                    end_wait(self, th, ENOT_EXISTENT, READY | CANCEL)
        elif isinstance(obj, IpcGate):
            bound = obj.thread
            if bound is not None:
                if bound.sendq:
                    for sender in list(bound.sendq):
                        if isinstance(sender, Thread) and sender.snd_gate is obj:
                            end_wait(self, sender, ENOT_EXISTENT, READY | CANCEL)
                bound.gates.remove(obj)
            obj.thread = None
            self.gates.remove(obj)
        obj.alive = False
        for task, sel in obj.cap_refs:
            caps = task.caps
            if sel < len(caps):
                cap = caps[sel]
                if cap is not None and cap.obj is obj:
                    caps[sel] = None
        obj.cap_refs.clear()

    def check_invariants(self, incoming: Thread | None = None,
                         blocking: Thread | None = None) -> None:
        from .invariants import check

        check(self, incoming, blocking)
