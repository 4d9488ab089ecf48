"""The kernel object: boot configuration (host API), the CPU loop, timers and scheduling.

`Kernel.run` drives the CPU loop: the only place that calls `coroutine.send()`. Policy
(who runs next) lives in `_pick`, `block`, `preemption_point` and `update_prio`;
the IPC semantics live in `ipc.py`.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

from . import diagnose, irq, states
from .abi import Timeout
from .boot import boot_servers
from .chooser import Chooser, Schedule, ScheduleError
from .costs import CostProfile
from .costs import profile as get_profile
from .errors import KernelInvariantError, ThreadDeleted, ThreadKilled
from .exceptions import body_with_handler, report_preemption
from .flexpage import sigma0_roots
from .invariants import check_touched
from .ipc import expire
from .lifecycle import delete_object, end_thread, foreign_await, thread_ended
from .memory import DEFAULT_PT_QUOTA, MappingDatabase, PhysicalMemory
from .objects import DEFAULT_PAGER, Body, DefaultPager, IpcGate, Irq, KernelObject, Task, Thread
from .pagershortcut import DefaultServers
from .sched import INFINITY, STOP, Cpu, dead_entry, migrate
from .states import (
    DEAD,
    DRQ_WAIT,
    IPC_TRANSFER,
    LOCK_WAIT,
    READY,
    RECEIVE_WAIT,
    SEND_WAIT,
    state_name,
)
from .tracelog import DEFAULT_TRACE_LIMIT, EventLog

BOOT_CPU = 0  # the index of the boot CPU


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

    __slots__ = ("_reason", "now", "_blocked", "died", "steps", "_waits", "_chains",
                 "warnings", "kernel", "__weakref__")

    def __init__(self, reason: str | None, now: int, blocked: list[Thread] | None,
                 died: list[tuple[Thread, str]], steps: int,
                 kernel: Kernel | None = None, warnings: list[str] | None = None) -> None:
        # `reason` None ("done" or "deadlock") and `blocked` None are found from the
        # kernel's threads when first read: a run beside a million blocked threads
        # costs nothing per run for them. The kernel settles them (`settle`) before
        # anything changes its threads, so they describe the end of this run.
        self._reason = reason
        self.now = now
        self._blocked = blocked
        self.died = died
        self.steps = steps
        self.kernel = kernel
        self.warnings = list(warnings or ())
        self._waits: dict[Thread, str] | None = None
        self._chains: list[str] | None = None

    def settle(self) -> None:
        """Find what was left open: the reason, the blocked threads, their waits."""
        if self._blocked is None or self._reason is None:
            k = self.kernel
            assert k is not None
            if self._blocked is None:
                self._blocked = k.blocked_threads()
            if self._reason is None:
                self._reason = k._end_reason()
        if self._waits is None:
            self._waits = {t: diagnose.wait_description(t) for t in self._blocked}
            self._chains = diagnose.wait_for_chains(self._blocked)

    @property
    def reason(self) -> str:
        if self._reason is None:
            self.settle()
        assert self._reason is not None
        return self._reason

    @property
    def blocked(self) -> list[Thread]:
        if self._blocked is None:
            self.settle()
        assert self._blocked is not None
        return self._blocked

    @property
    def waits(self) -> dict[Thread, str]:
        if self._waits is None:
            self.settle()
        assert self._waits is not None
        return self._waits

    @property
    def chains(self) -> list[str]:
        if self._chains is None:
            self.settle()
        assert self._chains is not None
        return self._chains

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
                 transfer: str = "symmetric", seed: int = 0, check: bool | Literal["full"] = False,
                 trace: bool = False, priority_inheritance: bool = True,
                 timeslice: int | None = None, frequency_mhz: int = 2663,
                 fastpath: bool = True, trace_limit: int | None = DEFAULT_TRACE_LIMIT,
                 schedule: str | Iterable[tuple[str, int]] | None = None,
                 chooser: Chooser | None = None, quantum: int | None = None,
                 helping: bool = True) -> None:
        if not isinstance(cpus, int) or not 1 <= cpus <= 64:
            raise ValueError(f"cpus must be an int in 1..64, got {cpus!r}")
        if check not in (False, True, "full"):
            raise ValueError(f"check must be False, True (incremental) or 'full', got {check!r}")
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
        self.plain = not check and not trace  # neither: the IPC paths inline what they record
        self.priority_inheritance = priority_inheritance
        self.helping = helping  # a deleter waiting for a transfer lock lends the copier its time
        self.timeslice = timeslice if timeslice is not None else 10_000 * frequency_mhz  # 10 ms
        if self.timeslice <= 0:
            raise ValueError("timeslice must be positive")
        self.costs = get_profile(profile)
        self.ipc_costs = [self.costs.ipc_cost(n) for n in range(64)]
        # Every timing-dependent decision asks the chooser: the seeded policy, a replay of
        # `schedule`, or an explorer's own.
        if chooser is not None and schedule is not None:
            raise ValueError("give a schedule or a chooser, not both")
        self.chooser = chooser if chooser is not None else Chooser(seed, schedule)
        # The fast path sets state words directly; checked or traced runs take the general
        # path, and so do runs whose chooser preempts at preemption points. With several
        # CPUs it takes IPCs between threads of one CPU; other CPUs' steps may come between
        # its switch and the resume (`sched.resumed_quietly`), and the page-fault shortcut
        # stays a uniprocessor's (`pagershortcut.serve_fault`).
        self.fastpath = fastpath and not check and not trace and not self.chooser.preempts
        # Several CPUs: the CPU that runs the current step (a wake-up of a thread on
        # another one is an inter-processor interrupt), and how far a CPU may compute
        # ahead of the others' next step (default 10 us), which keeps the clocks close.
        self.executing: Cpu | None = None
        self.quantum = INFINITY if cpus == 1 else (quantum or 10 * frequency_mhz)
        self.cpus = [Cpu(self, i, expire, report_preemption) for i in range(cpus)]
        for c in self.cpus:
            c.ipc_costs = self.ipc_costs
        # The boot CPU: where host code acts when no step is running (Fiasco routes
        # device interrupts to it too); with one CPU, that CPU.
        self.boot_cpu = self.cpus[BOOT_CPU]
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
        # The boot servers as the page-fault shortcut sees them (pagershortcut.py).
        self.default_servers: DefaultServers | None = None
        self.stepping = False  # in `step()`: every step shows, so no shortcut may merge them
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
        self.dead_timers = 0  # cancelled entries still in the CPUs' timer heaps
        # Threads made ready and events armed, on any CPU: only these bring a CPU's next
        # step earlier (`_loop`'s `go_on` keeps the others' first step until one happens).
        self.queued = 0
        # Incremental checking: what the operations touched since the last check, and
        # whether the next check must be a full one (after capability or memory work).
        self.touched: set[Thread] = set()
        self.touched_tasks: set[Task] = set()
        self.check_all = True
        self.checks_since_full = 0
        # The thread a blocking IPC switched to, checked then: if nothing was touched
        # since, the CPU loop's check of the same switch is skipped.
        self.checked_switch: Thread | None = None
        self._open_result: weakref.ref[RunResult] | None = None  # see settle_result
        self.stop: str | None = None  # why the run ends, once decided
        self._running = False
        self._last_check_times = [0] * cpus

    # --- host API: building the system ------------------------------------------------

    @property
    def schedule(self) -> Schedule:
        """The choices this kernel's runs made so far (`str()` prints them as
        `Kernel(schedule=...)` and `l4sim run --schedule` take them back)."""
        return self.chooser.made

    @property
    def entries(self) -> int:
        """Steps so far: kernel entries (system calls and timer interrupts) and, with
        several CPUs, the step boundaries where a computing CPU lets the others catch up."""
        return sum(c.entries for c in self.cpus)

    def out_of_steps(self) -> bool:
        """Has this run made every step `run(max_steps=)` allows? (The limit is read
        first: `entries` sums every CPU's count.)"""
        return self.entry_limit < INFINITY and self.entries >= self.entry_limit

    @property
    def now(self) -> int:
        """Simulated time in cycles (`k.cycles_to_us(k.now)` in µs): the latest CPU clock."""
        cpus = self.cpus
        return self.boot_cpu.now if len(cpus) == 1 else max(c.now for c in cpus)

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

        self.settle_result()  # before the threads change
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
            task = self._root_task = self.new_task("sigma0")
            sigma0_roots(self, task)
            self._sigma0 = boot_servers().start_sigma0(self, task)
        return self._sigma0

    @property
    def anon_pager(self) -> Thread:
        """The anonymous-memory pager: zero-filled pages from sigma0, for every thread
        created without an explicit pager."""
        if self._anon_pager is None:
            servers = boot_servers()
            self._anon_pager = servers.start_anon_pager(self, self.sigma0)
            self.default_servers = servers.default_servers(self, self._anon_pager)
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

    def trigger(self, source: Irq) -> None:
        """Raise an interrupt from host code (`irq.trigger()`: a device, a test)."""
        self.settle_result()  # before the threads change
        irq.trigger(self, source)
        self.after_host_op()

    def new_irq(self, name: str | None = None) -> Irq:
        """A software-triggerable interrupt source (host-level setup)."""
        self._irq_count += 1
        return Irq(self, name or f"irq{self._irq_count}")

    def at(self, cycles: int | Timeout, callback: Callable[[], Any]) -> None:
        """Run `callback()` (host code) at simulated time `cycles` (an int of cycles, or a
        Timeout: `Timeout.us(5)` is 5 µs from now), at the first preemption point at or
        after it, on the event's home CPU (`host_cpu`)."""
        when = self._time("a time", cycles)
        if when is None:
            return  # never
        cycles = when
        if not callable(callback):
            raise TypeError("callback must be callable")
        if self.check:
            user_callback = callback

            def callback() -> Any:
                self.check_all = True  # host code may change anything: check it all
                return user_callback()

        self.host_cpu().push_event([cycles, self.next_seq(), None, callback])

    def host_cpu(self) -> Cpu:
        """The home CPU of a host event: the CPU running the current step when one runs
        (a device called from a thread, or from an event's callback, interrupts the CPU
        that started it: its effects stay causal there), else the boot CPU. Its
        callback's wake-ups of threads on other CPUs go by IPI."""
        return self.executing or self.boot_cpu

    def delete(self, obj: KernelObject) -> None:
        """Delete a thread, task or gate from host code (as a task holding D would)."""
        if not isinstance(obj, KernelObject):
            raise TypeError(f"delete needs a kernel object, got {type(obj).__name__}")
        self.settle_result()  # before the threads change
        if not obj.alive:
            raise ValueError(f"{obj!r} has already been deleted")
        delete_object(self, obj)

    def migrate(self, th: Thread, cpu: int) -> None:
        """Give `th` the affinity `cpu` (host code; `th.migrate(cpu)`)."""
        if not isinstance(th, Thread):
            raise TypeError(f"migrate needs a Thread, got {type(th).__name__}")
        self.settle_result()  # before the threads change
        target = self.cpu_of(cpu)
        if th.state & DEAD:
            raise ValueError(f"{th!r} is dead")
        if th.cpu.current is th:
            raise RuntimeError(f"{th.name} is running: it moves itself with await t.migrate(cpu)")
        migrate(th, target)
        self.after_host_op()

    def cpu_of(self, cpu: object) -> Cpu:
        """The CPU numbered `cpu` (misuse raises)."""
        if type(cpu) is not int or not 0 <= cpu < len(self.cpus):
            raise ValueError(f"cpu must be an int in 0..{len(self.cpus) - 1}, got {cpu!r}")
        return self.cpus[cpu]

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
        self.settle_result()  # before the threads change
        cancel_ipc(self, thread)
        self.after_host_op()

    # --- running ----------------------------------------------------------------------

    def run(self, until: int | Timeout | None = None,
            max_steps: int | None = None) -> RunResult:
        """Run until no thread can run again, simulated time `until` (cycles, or a Timeout:
        `until=Timeout.us(500)` is 500 µs from now; `k.us(n)` converts), or `max_steps`
        more steps (`k.entries`: system calls, timer interrupts, and with several CPUs
        the step boundaries of computing CPUs). Can be called again to
        go on."""
        if self._running:
            raise RuntimeError("Kernel.run() is not reentrant")
        self.settle_result()
        if until is not None:
            until = self._time("until", until)
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps <= 0):
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        self.stop = None
        stop_entries = []
        if until is not None:
            if until <= min(c.now for c in self.cpus):
                return self._result("until")
            for c in self.cpus:  # (a step that computes past `until` stops there)
                stop_entries.append([until, self.next_seq(), None, STOP])
                c.push_event(stop_entries[-1])
        self.entry_limit = self.entries + max_steps if max_steps is not None else INFINITY
        if max_steps is not None:
            self._set_fast(False)  # the fast path does not look at the step limit
        self._running = True
        unawaited = warnings._warn_unawaited_coroutine  # type: ignore[attr-defined]
        warnings._warn_unawaited_coroutine = (  # type: ignore[attr-defined]
            diagnose.forgotten_await_hook(self, unawaited))
        try:
            if len(self.cpus) == 1:
                self._loop(self.boot_cpu)  # the only CPU: its loop is the whole run
            else:
                self._run_cpus(until)
        finally:
            warnings._warn_unawaited_coroutine = unawaited  # type: ignore[attr-defined]
            self._running = False
            self.entry_limit = INFINITY
            if max_steps is not None:
                self._set_fast(self.fastpath)
            for entry in stop_entries:
                if entry[3] is not None:  # (not fired: it stays in the heap, dead)
                    entry[3] = None
                    dead_entry(self)
        if self.stop == "until" and until is not None:
            for c in self.cpus:
                c.now = max(c.now, until)  # idle up to the end of the run (never back)
        if self.check:
            self.check_invariants()  # the full check ends every checked run
        if self.stop is None:  # done or deadlock (which one is found when read)
            self.chooser.finish()  # a replayed schedule must have been used up
        return self._result(self.stop)

    def _set_fast(self, on: bool) -> None:
        for th in self.threads.values():
            th.user.fast = on and not th.state & DEAD

    def _result(self, reason: str | None) -> RunResult:
        """The result of a run that ended for `reason` (None: done or deadlock, found
        when read). What it leaves open is settled before the threads change again."""
        self.settle_result()
        result = RunResult(reason, self.now, None, list(self.died), self.entries, self,
                           self.warnings)
        self._open_result = weakref.ref(result)
        return result

    def settle_result(self) -> None:
        """Settle the last run's result if it is still held (its reason, blocked threads
        and waits describe the end of that run): before the threads change again."""
        ref = self._open_result
        if ref is not None:
            self._open_result = None
            result = ref()
            if result is not None:
                result.settle()

    def blocked_threads(self) -> list[Thread]:
        """The threads waiting in IPC (or for a lock, or for a remote handshake)."""
        return [t for t in self.threads.values()
                if t.state & (SEND_WAIT | RECEIVE_WAIT | LOCK_WAIT | DRQ_WAIT)]

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

    def step(self) -> Thread | None:
        """Run one atomic step: resume one thread's chain until it yields (kernel code up
        to a preemption point, or a piece of user computation, which ends at the latest
        at the timer interrupt of its timeslice's end), then decide who runs next on its
        CPU. Returns the thread that ran, or None when no thread can run (see
        `peek`). `run` is a loop over steps; `step` lets a test or a debugger drive it."""
        if self._running:
            raise RuntimeError("Kernel.step() inside a run")
        self.settle_result()
        # From now on the host may make threads ready between two steps, as another CPU
        # would: a thread resumed after a switch no longer returns from its IPC without
        # looking for one above it (`Cpu.alone`).
        self.boot_cpu.alone = False
        cpu = self._next_cpu()
        if cpu is None:
            return None
        self.stop = None
        self._running = True
        self.stepping = True
        try:
            while True:
                if len(self.cpus) > 1:
                    self.executing = cpu
                ran = self._loop(cpu, 1)
                if ran is not None or self.stop is not None:
                    return ran
                # With several CPUs a CPU idles to its next event only once per step: when
                # that event readied no thread of its own (a host event, an IPI), the step
                # goes on with the CPU that is first now, as a run would.
                cpu = self._next_cpu()
                if cpu is None:
                    return None
        finally:
            self._running = False
            self.stepping = False
            self.executing = None

    def peek(self) -> tuple[int, int] | None:
        """When and where the next step happens: (simulated time in cycles, CPU index),
        or None when no thread can ever run again."""
        cpu = self._next_cpu()
        if cpu is None:
            return None
        return cpu.step_time(), cpu.index

    def _next_cpu(self) -> Cpu | None:
        """The CPU whose next step comes first (None: nothing can run). Steps go in the
        order of the CPUs' clocks; CPUs due at the same time are the chooser's choice."""
        if self.chooser.preempts:
            times = [(cpu.step_time(), cpu) for cpu in self.cpus]
            when = min(t for t, _ in times)
            if when >= INFINITY:
                return None
            # The explorer may let any CPU whose clock is within a quantum of the earliest
            # step first: real CPUs' speeds vary that much. Option 0 is the earliest.
            near = sorted((t, c.index) for t, c in times if t < when + self.quantum)
            best = [self.cpus[i] for _, i in near]
        else:
            when = INFINITY
            first: Cpu | None = None  # the CPU whose step comes first (None: no step)
            tied: list[Cpu] | None = None  # ... with those due at the same time, in CPU order
            for cpu in self.cpus:
                t = cpu.step_time()
                if t < when:
                    when, first, tied = t, cpu, None
                elif t == when and first is not None:
                    if tied is None:
                        tied = [first]
                    tied.append(cpu)
            if first is None:
                return None
            if tied is None:
                return first  # (no list and no choice in the common case)
            best = tied
        return best[self.chooser.choose("c", len(best), best)] if len(best) > 1 else best[0]

    def _run_cpus(self, until: int | None) -> None:
        """Several CPUs: one step at a time, on the CPU whose clock is earliest."""
        # A CPU that is still strictly first after its step takes the next one without
        # coming back here (`_loop`'s `go_on`): the same steps in the same order, without
        # the choice of a CPU per step. Not for an exploring chooser, whose choice of the
        # CPU is one of the decisions it explores.
        go_on = not self.chooser.preempts
        try:
            while self.stop is None:
                cpu = self._next_cpu()
                if cpu is None:
                    break
                if until is not None and cpu.step_time() >= until:
                    self.stop = "until"
                    break
                self.executing = cpu
                self._loop(cpu, 1, until, go_on)
        finally:
            self.executing = None

    def _first_other_step(self, cpu: Cpu, until: int | None) -> int:
        """When the first step of a CPU other than `cpu` begins, or `until` if that is
        earlier: `cpu` steps next (`_next_cpu`, `_run_cpus`) while its clock is before."""
        first = INFINITY if until is None else until
        for c in self.cpus:
            if c is not cpu:
                t = c.step_time()
                if t < first:
                    first = t
        return first

    def _loop(self, cpu: Cpu, budget: int = INFINITY, until: int | None = None,
              go_on: bool = False) -> Thread | None:
        """The CPU loop: resume the current thread's chain until it switches, then let the
        scheduler decide; at most `budget` steps (a finite budget takes every decision
        through `Cpu.schedule`), or with `go_on` (several CPUs) as many as leave this
        CPU's clock strictly before every other CPU's next step and `until`. Returns the
        thread that ran first.

        The chain yields the thread to switch to directly (after a rendezvous) or None
        (let the scheduler pick): the decision the IPC path recorded. Per switch the loop
        only moves the timeslice accounting and charges the switch; `Cpu.schedule` makes
        every other decision, off the common path. Between two `step()`s the decision is
        kept in `cpu.action`."""
        costs = self.costs
        same_space = costs.thread_switch
        other_space = costs.thread_switch + costs.space_switch
        plain = not self.trace and (budget == INFINITY or go_on)
        check = self.check
        th = cpu.action
        cpu.action = None
        if th is not None and th.state & DEAD:
            th = None  # deleted between two steps
        if th is None:
            th = cpu.pick(first=True)
            last = cpu.last  # the thread that ran when the previous run() stopped
            if th is not None and last is not None and th is not last:
                cpu.now += same_space if th.task is last.task else other_space
                self.record(th, "switch", f"from {last.name}")
        first = th
        if th is None:
            return None
        quick = plain and not check  # (the common case's test, made once)
        seen = -1  # (`go_on`: `self.queued` when `bound`, the others' first step, was found)
        bound = 0
        while True:
            cpu.current = th
            cpu.slice_end = cpu.now + th.slice_left
            try:
                nxt = th.resume(None)
            except StopIteration as stop:
                thread_ended(self, th, stop.value, None)
                nxt = None
            except ThreadDeleted:
                nxt = None
            except ThreadKilled as killed:
                if not th.state & DEAD:
                    end_thread(self, th, killed.reason)
                nxt = None
            except (KernelInvariantError, ScheduleError):
                raise  # the kernel's own failure, or a replayed schedule that does not fit
            except Exception as exc:  # a user thread's exception: that thread dies, not the run
                thread_ended(self, th, None, exc)
                nxt = None
            now = cpu.now
            th.slice_left = cpu.slice_end - now
            if (nxt is not None and now < cpu.next_event
                    and (quick or (plain and nxt is self.checked_switch and not self.touched
                                   and not self.check_all and not self.touched_tasks))):
                # The decision of the common case, inlined: nothing is due, so the
                # partner of the rendezvous runs next (the IPC path checked priorities;
                # checked, the IPC path checked this switch and nothing changed since).
                cpu.now = now + (same_space if nxt.task is th.task else other_space)
                th = nxt
                if go_on:
                    if seen != self.queued:
                        seen = self.queued
                        bound = self._first_other_step(cpu, until)
                    if self.stop is not None or cpu.now >= bound:
                        cpu.current = None  # (as the step's end below leaves it)
                        cpu.action = nxt
                        break
                continue
            if nxt is None and th.state == READY and th.rq_prio < 0 and th.cpu is cpu:
                foreign_await(self, th)  # it yielded to the loop without a kernel path
            cpu.current = None  # it switched away: an event may wake it again now
            nxt = cpu.schedule(nxt)
            if nxt is None:
                cpu.last = th
                break
            if nxt is not th:
                cpu.now += same_space if nxt.task is th.task else other_space
                if self.trace:
                    self.record(nxt, "switch", f"from {th.name}")
            if check and (nxt is not self.checked_switch or self.touched
                               or self.check_all or self.touched_tasks):
                self.check_touched(incoming=nxt)
                self.checked_switch = nxt
            th = nxt
            budget -= 1
            if not budget:
                if go_on and self.stop is None:
                    if seen != self.queued:
                        seen = self.queued
                        bound = self._first_other_step(cpu, until)
                    if cpu.now < bound:
                        budget = 1
                        continue
                cpu.action = nxt
                break
        return first

    # --- state and trace -----------------------------------------------------------------

    def next_seq(self) -> int:
        """The next number of this kernel's sequence (orders timer entries due together)."""
        self._seq += 1
        return self._seq

    def set_state(self, th: Thread, new: int) -> None:
        """The one function through which a state word changes."""
        old = th.state
        if self.check:
            self.touched.add(th)
            if (old, new) not in states.ALLOWED:
                raise KernelInvariantError(
                    "declared transitions",
                    f"{th.name}: {state_name(old)} -> {state_name(new)} is not declared")
            cov = states.coverage
            if cov is not None:
                cov.add((old, new))
        th.state = new
        if self.trace:
            cpu = self.executing or th.cpu  # the CPU that made the change, at its time
            self.events.append(Event(cpu.now, cpu.index, th.name, "state", state_name(new),
                                     th.tid))

    def record(self, th: Thread, event: str, detail: str = "") -> None:
        """Append an event when tracing. Callers test `k.trace` first where the detail is
        an f-string: formatting it costs more than the work it describes."""
        if self.trace:
            cpu = self.executing or th.cpu
            self.events.append(Event(cpu.now, cpu.index, th.name, event, detail, th.tid))

    def after_host_op(self) -> None:
        if self.check:
            if self._running:
                self.check_all = True  # (a host callback in a run: the next check is full)
            else:
                self.check_invariants()

    def check_invariants(self, incoming: Thread | None = None,
                         blocking: Thread | None = None) -> None:
        """Verify every invariant over the whole kernel."""
        from .invariants import check

        check(self, incoming, blocking)

    def check_touched(self, incoming: Thread | None = None,
                      blocking: Thread | None = None) -> None:
        """Verify the invariants of what the operations since the last check touched (all
        of them with check="full"), after every kernel operation of a checked run."""
        check_touched(self, incoming, blocking)

    def touch(self, obj: Thread | Task) -> None:
        """Mark `obj` for the next incremental check (an operation changed it)."""
        if isinstance(obj, Task):
            self.touched_tasks.add(obj)
        else:
            self.touched.add(obj)
