"""S19: property-based, stateful tests. Hypothesis drives random sequences of system calls,
valid and malformed, from several threads of one `Kernel(check=True)`.

How it works with coroutine threads: every thread's body is an interpreter that pops
commands from its own Python list. The state machine's rules append commands (call, send,
receive, wait, reply, reply_and_wait, sleep with zero / finite / absolute / infinite
timeouts, compute, ex_regs cancel, raw `t.ipc` with malformed tags and flags, bad and
wrong-kind selectors, API misuse, deletion of gates and threads, exit, raise), do what
the host may do (cancel, delete), and advance the kernel by simulated time or by kernel
entries. A thread with nothing to do sleeps forever; the machine wakes it with a host
cancel when it gives it a command.

Checked after every rule (`check=True` checks the kernel's own invariants after every
kernel operation; a `KernelInvariantError` fails the test):
- no Python exception escapes `k.run()`;
- every result is an `IpcError`, and one that the operation can return;
- threads die only as the test intends (deleted, or of the exception it made them raise);
- the message ledger: every message carries a unique id in its first word; it is received
  at most once, only by the thread it was sent to, with the right label and words; a reply
  answers the call it belongs to; a message whose send failed is never received; and at the
  end, when every thread has run what it could, every message whose sender got OK for its
  send phase was received exactly once (unless its receiver was deleted first).
"""

from __future__ import annotations

import itertools
from array import array
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from l4sim import CapRights, IpcError, IpcGate, Kernel, KernelInvariantError, MsgTag, Thread, Timeout
from l4sim.kernel.abi import IpcOp
from l4sim.kernel.states import DEAD, READY, RECEIVE_WAIT, SEND_WAIT, state_name

E = IpcError
SEND_ERRORS = {E.OK, E.SETIMEOUT, E.ENOT_EXISTENT, E.SECANCELED}
ALLOWED: dict[str, set[IpcError]] = {
    "send": SEND_ERRORS,
    "call": SEND_ERRORS | {E.RETIMEOUT, E.RECANCELED, E.REMSGCUT, E.REMAPFAILED},
    "receive": {E.OK, E.RETIMEOUT, E.RECANCELED, E.ENOT_EXISTENT, E.REMSGCUT, E.REMAPFAILED},
    "wait": {E.OK, E.RETIMEOUT, E.RECANCELED, E.REMSGCUT, E.REMAPFAILED},
    "reply": {E.OK, E.ENOT_EXISTENT},
    "reply_and_wait": {E.OK, E.ENOT_EXISTENT, E.RETIMEOUT, E.RECANCELED, E.REMSGCUT, E.REMAPFAILED},
    "sleep": {E.RETIMEOUT, E.RECANCELED},
    "idle": {E.RECANCELED},
    "idle_wait": {E.OK, E.RECANCELED, E.REMSGCUT, E.REMAPFAILED},
    "raw": set(IpcError),
    "ex_regs": {E.OK, E.ENOT_EXISTENT},
    "delete": {E.OK, E.ENOT_EXISTENT},
}


class StatefulDeath(Exception):
    """What a thread raises when the test tells it to die."""


class LivenessError(AssertionError):
    """A receiver waits while a sender it would accept is queued at it (a lost wake-up)."""


@dataclass
class Msg:
    id: int
    kind: str                  # "send", "call", "reply", "raw", "rawcall", "rawreply"
    sender: Interp
    words: tuple[int, ...]
    dest: Thread | None        # where it must arrive (None: it must not arrive anywhere)
    label: int | None          # the label the receiver must see (None: not checked)
    in_reply_to: int | None = None
    outcome: str = "pending"   # "delivered", "not_delivered", "maybe"
    receipts: list[str] = field(default_factory=list)


@dataclass(eq=False)
class Interp:
    index: int
    name: str
    task_index: int
    cmds: list[tuple[Any, ...]] = field(default_factory=list)
    th: Thread = None  # type: ignore[assignment]
    idle: bool = False
    idle_mode: str = "sleep"           # with nothing to do: "sleep" forever, or "wait" openly
    last_call: int | None = None       # id of the last call received (our reply capability)
    results: list[tuple[str, IpcError]] = field(default_factory=list)


def _words_for(msg_id: int, n: int) -> list[int]:
    return [msg_id] + [(msg_id * 0x9E3779B97F4A7C15 + j) & ((1 << 64) - 1) for j in range(1, n)]


class KernelMachine(RuleBasedStateMachine):
    """Random system calls from several threads against a checked kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.k: Kernel = None  # type: ignore[assignment]
        self.threads: list[Interp] = []
        self.tasks: list[Any] = []
        self.gates: list[IpcGate] = []
        self.sels: list[dict[tuple[Any, ...], int]] = []
        self.msgs: dict[int, Msg] = {}
        self.failures: list[str] = []
        self.may_be_deleted: set[Thread] = set()
        self.may_raise: set[Thread] = set()
        self.runs = 0
        self.ids = itertools.count(1)   # message ids, unique in this kernel
        self.broken = False             # a check failed: teardown must not hide it

    # --- building the system ------------------------------------------------------------

    @initialize(data=st.data())
    def build(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(2, 5), label="threads")
        ntasks = data.draw(st.integers(1, 2), label="tasks")
        cpus = data.draw(st.sampled_from([1, 1, 2, 4]), label="cpus")
        self.k = Kernel(check=True, cpus=cpus)
        self.tasks = [self.k.new_task(f"task{i}") for i in range(ntasks)]
        for i in range(n):
            info = Interp(i, f"t{i}", data.draw(st.integers(0, ntasks - 1), label=f"task of t{i}"),
                          idle_mode=data.draw(st.sampled_from(["sleep", "wait"]),
                                              label=f"idle mode of t{i}"))
            prio = data.draw(st.sampled_from([50, 100, 150]), label=f"priority of t{i}")
            cpu = data.draw(st.integers(0, cpus - 1), label=f"cpu of t{i}")
            info.th = self.tasks[info.task_index].new_thread(
                _interpreter, self, info, name=info.name, priority=prio, cpu=cpu)
            self.threads.append(info)
        ngates = data.draw(st.integers(0, 2), label="gates")
        for g in range(ngates):
            bound = data.draw(st.integers(0, n - 1), label=f"gate{g} thread")
            label = data.draw(st.integers(1, 0xFFFF), label=f"gate{g} label")
            self.gates.append(self.k.new_gate(self.threads[bound].th, label=label))
        for task in self.tasks:
            sels: dict[tuple[Any, ...], int] = {}
            for info in self.threads:
                sels["thread", info.index] = task.add_cap(info.th)
            for g, gate in enumerate(self.gates):
                sels["gate", g] = task.add_cap(gate)
            sels["task",] = task.add_cap(task, CapRights.R)            # wrong kind
            sels["noR",] = task.add_cap(self.threads[0].th, CapRights.W)  # no right to invoke
            self.sels.append(sels)

    # --- commands -------------------------------------------------------------------------

    def _target(self, data: st.DataObject, gates: bool = True) -> tuple[Any, ...]:
        choices = [("thread", i) for i in range(len(self.threads))]
        if gates:
            choices += [("gate", g) for g in range(len(self.gates))] * 2
        bad = [("task",), ("noR",), ("bad", 0), ("bad", -3), ("bad", 4096)]
        return data.draw(st.one_of(st.sampled_from(choices), st.sampled_from(bad))
                         if data.draw(st.integers(0, 9), label="bad target?") == 0
                         else st.sampled_from(choices), label="target")

    @staticmethod
    def _timeout(data: st.DataObject, allow_never: bool = True) -> tuple[Any, ...]:
        kinds = ["zero", "cycles", "cycles", "cycles", "us", "at"] + (["never"] * 8 if allow_never else [])
        kind = data.draw(st.sampled_from(kinds), label="timeout")
        if kind == "cycles":
            return ("cycles", data.draw(st.integers(0, 200_000)))
        if kind == "us":
            return ("us", data.draw(st.integers(1, 30)))
        if kind == "at":
            return ("at", data.draw(st.integers(-2_000, 100_000)))
        return (kind,)

    @staticmethod
    def _nwords(data: st.DataObject) -> int:
        return data.draw(st.sampled_from([1, 1, 2, 3, 4, 8, 63]), label="words")

    COMMANDS = (["call"] * 5 + ["send"] * 3 + ["wait"] * 4 + ["receive"] * 2 + ["reply"] * 2
                + ["reply_and_wait"] * 4 + ["serve"] * 3
                + ["sleep", "compute", "ex_regs", "raw", "raw", "misuse", "delete_gate", "end",
                   "migrate"])

    def _command(self, data: st.DataObject) -> tuple[Any, ...]:
        kind = data.draw(st.sampled_from(self.COMMANDS), label="command")
        if kind == "serve":
            return (kind, data.draw(st.integers(1, 4), label="requests"), self._timeout(data))
        if kind == "end":  # rare: each of these shrinks the system
            kind = data.draw(st.sampled_from(["exit", "raise", "delete_thread"] + ["compute"] * 3))
            if kind == "compute":
                return (kind, 3)
            if kind == "delete_thread":
                return ("delete", ("thread", data.draw(st.integers(0, len(self.threads) - 1))))
            return (kind,)
        if kind == "call":
            rto = self._timeout(data)
            return (kind, self._target(data), next(self.ids), self._nwords(data),
                    self._timeout(data), rto)
        if kind == "send":
            return (kind, self._target(data), next(self.ids), self._nwords(data), self._timeout(data))
        if kind == "receive":
            return (kind, self._target(data, gates=False), self._timeout(data))
        if kind == "wait":
            return (kind, self._timeout(data))
        if kind == "reply":
            return (kind, next(self.ids), self._nwords(data))
        if kind == "reply_and_wait":
            return (kind, next(self.ids), self._nwords(data), self._timeout(data))
        if kind == "sleep":
            return (kind, self._timeout(data, allow_never=False))
        if kind == "compute":
            return (kind, data.draw(st.integers(0, 50_000)))
        if kind == "migrate":  # to another CPU, or from the host (th.migrate) if not running
            return (kind, data.draw(st.integers(0, len(self.k.cpus) - 1), label="to cpu"))
        if kind == "ex_regs":
            return (kind, self._target(data, gates=False), data.draw(st.booleans()))
        if kind == "raw":
            words = data.draw(st.integers(0, 63), label="raw words")
            items = data.draw(st.sampled_from([0, 0, 1, 2, 31, 63]), label="raw items")
            label = data.draw(st.integers(-(1 << 47), (1 << 47) - 1), label="raw label")
            flags = data.draw(st.sampled_from([0, 0x1000, 0x8000]), label="raw tag flags")
            op = data.draw(st.integers(0, 15), label="raw op")
            raw_to = [0, 0x0400, 0x0001, 0x0003, 0x0405, 0x8000, 0x7FFF]
            rcv_to = data.draw(st.sampled_from(raw_to))
            tos = data.draw(st.sampled_from(raw_to)) << 16 | rcv_to
            return (kind, self._target(data), next(self.ids), words, items, label, flags, op, tos)
        if kind == "misuse":
            return (kind, data.draw(st.integers(0, len(MISUSES) - 1)), self._target(data))
        if kind == "delete_gate":
            if not self.gates or data.draw(st.booleans()):
                return ("compute", 1)
            return ("delete", ("gate", data.draw(st.integers(0, len(self.gates) - 1))))
        raise AssertionError(kind)

    def _give(self, info: Interp, cmd: tuple[Any, ...]) -> None:
        info.cmds.append(cmd)
        th = info.th
        if info.idle and th.alive and th.state == RECEIVE_WAIT and th.partner in (th, None):
            self.k.cancel(th)  # wake the idle interpreter

    @rule(data=st.data())
    def give_commands(self, data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 3), label="commands")):
            info = data.draw(st.sampled_from(self.threads), label="thread")
            try:
                self._give(info, self._command(data))
            except KernelInvariantError:
                self.broken = True
                raise

    # --- advancing the kernel and host actions ---------------------------------------------

    def _run(self, **kw: int) -> Any:
        self.runs += 1
        try:
            return self.k.run(**kw)
        except KernelInvariantError:
            self.broken = True
            raise
        except BaseException as exc:  # anything else is a kernel bug
            self.broken = True
            raise AssertionError(f"an exception escaped k.run(): {exc!r}") from exc

    @rule(delta=st.integers(1, 200_000))
    def advance_time(self, delta: int) -> None:
        self._run(until=self.k.now + delta)

    @rule(steps=st.integers(1, 25))
    def advance_steps(self, steps: int) -> None:
        self._run(max_steps=steps)

    @rule(data=st.data())
    def host_cancel(self, data: st.DataObject) -> None:
        info = data.draw(st.sampled_from(self.threads), label="cancel")
        if info.th.alive:
            try:
                self.k.cancel(info.th)
            except BaseException:
                self.broken = True
                raise

    @rule(data=st.data())
    def host_delete(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 5), label="host delete?"):
            return
        if self.gates and data.draw(st.integers(0, 2), label="gate?"):
            gate = data.draw(st.sampled_from(self.gates))
            target: Any = gate if gate.alive else None
        else:
            info = data.draw(st.sampled_from(self.threads), label="delete")
            target = info.th if info.th.alive else None
            if target is not None:
                self.may_be_deleted.add(target)
        if target is not None:
            try:
                self.k.delete(target)
            except BaseException:
                self.broken = True
                raise

    # --- the oracle and the ledger -----------------------------------------------------------

    def sel(self, info: Interp, target: tuple[Any, ...]) -> int:
        if target[0] == "bad":
            return int(target[1])
        return self.sels[info.task_index][target]

    def oracle_dest(self, info: Interp, sel: int) -> tuple[Thread | None, int | None]:
        """Where a send from `info` through selector `sel` must arrive, and with which label."""
        caps = info.th.task.caps
        if not 0 < sel < len(caps):
            return None, None
        cap = caps[sel]
        if cap is None or not cap.rights & CapRights.R:
            return None, None
        obj = cap.obj
        if isinstance(obj, Thread):
            return (obj, info.th.tid) if obj.alive and not obj.state & DEAD else (None, None)
        if isinstance(obj, IpcGate):
            th = obj.thread
            return (th, obj.label) if th is not None and obj.alive and th.alive else (None, None)
        return None, None

    def fail(self, info: Interp, what: str) -> None:
        self.failures.append(f"{info.name} @ {self.k.now}: {what}")

    def note(self, info: Interp, op: str, err: object) -> None:
        if not isinstance(err, IpcError):
            self.fail(info, f"{op} returned a {type(err).__name__} ({err!r}), not an IpcError")
            return
        info.results.append((op, err))
        if err not in ALLOWED[op]:
            self.fail(info, f"{op} returned {err.name}, which it cannot return")

    def new_msg(self, kind: str, sender: Interp, msg_id: int, words: list[int],
                dest: Thread | None, label: int | None, in_reply_to: int | None = None) -> Msg:
        m = Msg(msg_id, kind, sender, tuple(words), dest, label, in_reply_to)
        self.msgs[msg_id] = m
        return m

    def settle(self, info: Interp, m: Msg, outcome: str) -> None:
        m.outcome = outcome
        if outcome == "not_delivered" and m.receipts:
            self.fail(info, f"message {m.id} ({m.kind}) failed for its sender but was received "
                            f"by {m.receipts}")

    def receive(self, info: Interp, op: str, r: Any, call_msg: Msg | None = None) -> None:
        """A receive phase delivered `r.words` to `info`: book it in the ledger."""
        words = r.words
        if not words:  # a raw message of no words: nothing to book
            return
        m = self.msgs.get(words[0])
        if m is None:
            self.fail(info, f"{op} received words {words[:3]}... that nobody sent")
            return
        m.receipts.append(info.name)
        if len(m.receipts) > 1:
            self.fail(info, f"message {m.id} ({m.kind} from {m.sender.name}) delivered twice: "
                            f"{m.receipts}")
        if tuple(words) != m.words:
            self.fail(info, f"message {m.id} arrived with words {words[:4]}..., sent {m.words[:4]}...")
        if m.outcome == "not_delivered":
            self.fail(info, f"message {m.id} arrived, but its send failed")
        if m.dest is not info.th:
            where = m.dest.name if m.dest is not None else "nowhere (its destination was invalid)"
            self.fail(info, f"message {m.id} ({m.kind} from {m.sender.name}) arrived here, "
                            f"but had to arrive {where}")
        if m.label is not None and r.label != m.label:
            self.fail(info, f"message {m.id} arrived with label {r.label:#x}, expected {m.label:#x}")
        if m.kind in ("call", "rawcall"):
            info.last_call = m.id
        if call_msg is not None:
            # The result of a call: it comes from the thread the call went to.
            if m.sender.th is not call_msg.dest:
                self.fail(info, f"call {call_msg.id} got message {m.id} from {m.sender.name}, "
                                f"not from the thread it called")
            if m.kind == "reply" and m.in_reply_to != call_msg.id:
                self.fail(info, f"call {call_msg.id} got reply {m.id}, which answers "
                                f"{m.in_reply_to}")

    def reply_dest(self, info: Interp) -> tuple[Thread | None, int | None]:
        if info.last_call is None:
            return None, None
        return self.msgs[info.last_call].sender.th, info.th.tid

    # --- checks after every rule ----------------------------------------------------------

    def _bad(self, exc: BaseException) -> BaseException:
        self.broken = True
        return exc

    @invariant()
    def no_failures(self) -> None:
        if self.failures:
            raise self._bad(AssertionError("\n".join(self.failures)))

    @invariant()
    def deaths_are_expected(self) -> None:
        if self.k is None:
            return
        for th, why in self.k.died:
            if why == "deleted" and th in self.may_be_deleted:
                continue
            if why.startswith("StatefulDeath") and th in self.may_raise:
                continue
            raise self._bad(AssertionError(f"{th.name} died unexpectedly: {why}"))
        for info in self.threads:
            th = info.th
            if th.state & DEAD and not th.returned and th.exit_reason is None:
                raise self._bad(AssertionError(f"{th.name} is dead but neither returned nor died"))
            if th.returned and th.result != "exit":
                raise self._bad(AssertionError(f"{th.name} returned {th.result!r} unexpectedly"))

    @invariant()
    def liveness(self) -> None:
        if self.k is None:
            return
        for info in self.threads:
            th = info.th
            if th.state != RECEIVE_WAIT or not th.sendq:
                continue
            p = th.partner
            if p is None:
                raise self._bad(LivenessError(
                    f"{th.name} waits openly while {len(th.sendq)} senders are queued at it: "
                    f"{[s.name for s in th.sendq]}"))
            if p is not th and p.state == SEND_WAIT and p.partner is th:
                raise self._bad(LivenessError(f"{th.name} waits for {p.name}, which is queued at it"))

    def teardown(self) -> None:
        try:
            if self.k is not None and not self.broken:  # else: report what stopped the example
                self._final_checks()
        finally:
            for info in self.threads:  # end the coroutines of threads still blocked (or never run)
                coro = getattr(info.th, "coro", None)
                if coro is not None:
                    coro.close()

    def _final_checks(self) -> None:
        # Let every thread run what it can, so that every delivered message is booked.
        res = self._run(max_steps=100_000)
        self.no_failures()
        self.deaths_are_expected()
        for info in self.threads:
            th = info.th
            if th.alive and th.state & READY and not th.state & DEAD:
                raise AssertionError(f"{th.name} is still {state_name(th.state)} after the "
                                     f"kernel had nothing left to do: {res!r}")
        for m in self.msgs.values():
            if m.outcome != "delivered":
                continue
            if len(m.receipts) == 1:
                continue
            dest = m.dest
            if not m.receipts and dest is not None and (not dest.alive or dest.state & DEAD):
                continue  # delivered, but its receiver was deleted before it ran
            raise AssertionError(
                f"message {m.id} ({m.kind} from {m.sender.name} to "
                f"{dest.name if dest else None}) was delivered by the sender's account, "
                f"received {len(m.receipts)} times: {m.receipts}")


# --- the interpreter: a thread body -------------------------------------------------------



def _timeout(t: Any, spec: tuple[Any, ...]) -> Timeout:
    kind = spec[0]
    if kind == "never":
        return Timeout.never()
    if kind == "zero":
        return Timeout.zero()
    if kind == "cycles":
        return Timeout.cycles(spec[1])
    if kind == "us":
        return Timeout.us(spec[1])
    return Timeout.at(max(0, t.now + spec[1]))


MISUSES: list[tuple[str, Any, tuple[type[BaseException], ...]]] = [
    ("word too large", lambda t, s: t.call(s, words=[1 << 64]), (OverflowError,)),
    ("negative word", lambda t, s: t.send(s, words=[-1]), (OverflowError,)),
    ("negative word among others", lambda t, s: t.call(s, words=[1, 2, -5]), (OverflowError,)),
    ("selector not an int", lambda t, s: t.call("x"), (TypeError,)),
    ("timeout not a Timeout", lambda t, s: t.sleep(5), (TypeError,)),
    ("negative timeout", lambda t, s: t.send(s, send_timeout=Timeout.us(-1)), (ValueError,)),
    ("64 words", lambda t, s: t.call(s, words=[1] * 64), (ValueError,)),
    ("label too large", lambda t, s: t.send(s, words=[1], label=1 << 50), (OverflowError,)),
    ("raw flags", lambda t, s: t.ipc(s, 0, 16), (ValueError,)),
    ("raw timeouts", lambda t, s: t.ipc(s, 0, 1, 1 << 32), (ValueError,)),
    ("raw tag type", lambda t, s: t.ipc(s, "tag", 1), (TypeError,)),
    ("words and tag", lambda t, s: t.call(s, words=[1], tag=MsgTag(words=1)), (ValueError,)),
]


async def _interpreter(t: Any, m: KernelMachine, info: Interp) -> str:
    while True:
        if not info.cmds:
            info.idle = True
            if info.idle_mode == "sleep":
                r = await t.sleep(Timeout.never())
                info.idle = False
                m.note(info, "idle", r.error)
            else:
                info.idle = True
                r = await t.wait()
                info.idle = False
                m.note(info, "idle_wait", r.error)
                if r.error in (E.OK, E.REMSGCUT, E.REMAPFAILED):
                    m.receive(info, "idle_wait", r)
            continue
        cmd = info.cmds.pop(0)
        if cmd[0] == "exit":
            return "exit"
        await _execute(t, m, info, cmd)


async def _execute(t: Any, m: KernelMachine, info: Interp, cmd: tuple[Any, ...],
                   out: list[Any] | None = None) -> None:
    kind = cmd[0]
    if kind == "call":
        _, target, msg_id, n, sto, rto = cmd
        sel = m.sel(info, target)
        dest, label = m.oracle_dest(info, sel)
        words = _words_for(msg_id, n)
        msg = m.new_msg("call", info, msg_id, words, dest, label)
        r = await t.call(sel, words=words, send_timeout=_timeout(t, sto),
                         receive_timeout=_timeout(t, rto))
        m.note(info, "call", r.error)
        err = r.error
        if err in (E.OK, E.REMSGCUT, E.REMAPFAILED):  # the reply (or what came instead) may be cut
            m.settle(info, msg, "delivered")
            m.receive(info, "call", r, call_msg=msg)
        elif err in (E.RETIMEOUT, E.RECANCELED):
            m.settle(info, msg, "delivered")
        elif err == E.ENOT_EXISTENT and dest is not None:
            m.settle(info, msg, "maybe")  # the send phase, or the callee deleted before its reply
        else:
            m.settle(info, msg, "not_delivered")
    elif kind == "send":
        _, target, msg_id, n, sto = cmd
        sel = m.sel(info, target)
        dest, label = m.oracle_dest(info, sel)
        words = _words_for(msg_id, n)
        msg = m.new_msg("send", info, msg_id, words, dest, label)
        r = await t.send(sel, words=words, send_timeout=_timeout(t, sto))
        m.note(info, "send", r.error)
        if r.words:
            m.fail(info, f"a send returned words {r.words}")
        m.settle(info, msg, "delivered" if r.ok else "not_delivered")
    elif kind in ("receive", "wait"):
        if kind == "receive":
            r = await t.receive(m.sel(info, cmd[1]), receive_timeout=_timeout(t, cmd[2]))
        else:
            r = await t.wait(receive_timeout=_timeout(t, cmd[1]))
        m.note(info, kind, r.error)
        if r.error in (E.OK, E.REMSGCUT, E.REMAPFAILED):
            m.receive(info, kind, r)
        elif r.words:
            m.fail(info, f"{kind} failed with {r.error.name} but returned words")
    elif kind in ("reply", "reply_and_wait"):
        msg_id, n = cmd[1], cmd[2]
        dest, label = m.reply_dest(info)
        words = _words_for(msg_id, n)
        msg = m.new_msg("reply", info, msg_id, words, dest, label, in_reply_to=info.last_call)
        info.last_call = None  # the reply capability is one-shot, even if the reply fails
        if kind == "reply":
            r = await t.reply(words=words)
        else:
            r = await t.reply_and_wait(words=words, receive_timeout=_timeout(t, cmd[3]))
        m.note(info, kind, r.error)
        if out is not None:
            out.append(r)
        err = r.error
        if err == E.OK or err & 1:   # the reply went out (the error is of the receive phase)
            m.settle(info, msg, "delivered")
            if dest is None:
                m.fail(info, f"{kind} {msg_id} succeeded without a reply capability")
            if kind == "reply_and_wait" and err in (E.OK, E.REMSGCUT, E.REMAPFAILED):
                m.receive(info, kind, r)
        else:
            m.settle(info, msg, "not_delivered")
    elif kind == "serve":
        # A server loop: wait, then reply_and_wait for each further request, then reply.
        r = await t.wait(receive_timeout=_timeout(t, cmd[2]))
        m.note(info, "wait", r.error)
        if r.error in (E.OK, E.REMSGCUT, E.REMAPFAILED):
            m.receive(info, "wait", r)
        for _ in range(cmd[1]):
            if not r.ok:
                return
            msg_id = next(m.ids)
            await _execute(t, m, info, ("reply_and_wait", msg_id, 1 + msg_id % 4, cmd[2]), out := [])
            r = out[0]
        if r.ok:
            await _execute(t, m, info, ("reply", next(m.ids), 2))
    elif kind == "sleep":
        r = await t.sleep(_timeout(t, cmd[1]))
        m.note(info, "sleep", r.error)
    elif kind == "compute":
        await t.compute(cmd[1])
    elif kind == "migrate":
        await t.migrate(cmd[1])
    elif kind == "ex_regs":
        err = await t.ex_regs(m.sel(info, cmd[1]), cancel=cmd[2])
        m.note(info, "ex_regs", err)
    elif kind == "delete":
        target = cmd[1]
        if target[0] == "thread":
            m.may_be_deleted.add(m.threads[target[1]].th)
        err = await t.delete(m.sel(info, target))
        m.note(info, "delete", err)
    elif kind == "raise":
        m.may_raise.add(info.th)
        raise StatefulDeath("told to die")
    elif kind == "misuse":
        what, fn, errors = MISUSES[cmd[1]]
        # Misuse raises in the user code that makes the call or awaits it (S14).
        try:
            await fn(t, m.sel(info, cmd[2]))
        except errors:
            return
        except Exception as exc:
            m.fail(info, f"misuse {what!r} raised {exc!r}, expected {errors}")
            return
        m.fail(info, f"misuse {what!r} raised nothing")
    elif kind == "raw":
        _, target, msg_id, n, items, label, flags, op, tos = cmd
        sel = m.sel(info, target)
        sends = bool(op & IpcOp.SEND)
        is_reply = sends and bool(op & IpcOp.REPLY)
        is_call = sends and not is_reply and op & IpcOp.RECEIVE and not op & IpcOp.OPEN_WAIT
        fits = n + 2 * items <= 63
        if is_reply:
            dest, rlabel = m.reply_dest(info)
            in_reply_to = info.last_call
            if fits:
                info.last_call = None
        else:
            dest, rlabel = m.oracle_dest(info, sel)
            in_reply_to = None
        if not sends or not fits:
            dest = None  # nothing may arrive anywhere
        words = _words_for(msg_id, n) if n else []
        msg = None
        if words:
            kind_name = "rawreply" if is_reply else "rawcall" if is_call else "raw"
            msg = m.new_msg(kind_name, info, msg_id, words, dest, rlabel, in_reply_to)
            t.utcb.mr[:n] = array("Q", words)
        tag = (label << 16 | flags | items << 6 | n) & ((1 << 64) - 1)
        r = await t.ipc(sel, tag, op, tos)
        m.note(info, "raw", r.error)
        if not fits and sends and r.error == E.OK:
            m.fail(info, f"a raw send of a tag whose items run beyond the MRs ({n} words, "
                         f"{items} items) succeeded")
        if msg is not None:
            m.settle(info, msg, "maybe" if sends else "not_delivered")
        if r.words:
            m.receive(info, "raw", r, call_msg=msg if is_call and msg is not None else None)
    else:  # pragma: no cover
        m.fail(info, f"unknown command {cmd}")


# --- the tests ------------------------------------------------------------------------------

FAST = settings(max_examples=400, stateful_step_count=30, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_random_system_calls_keep_the_kernel_sound() -> None:
    """Random system calls (valid and malformed) from several threads, any priorities,
    on one, two or four CPUs with migrations between them, advanced by simulated time and
    by kernel entries."""
    run_state_machine_as_test(KernelMachine, settings=FAST)


# --- regressions: minimal programs for the bugs the machine found ----------------------------


def _two_threads(body_a, body_b, *, prio_a: int = 100, prio_b: int = 100,  # type: ignore[no-untyped-def]
                 check: bool = True) -> tuple[Kernel, Thread, Thread]:
    """Thread a (selector 1) and thread b (selector 2) in one task; each body gets the
    other's selector."""
    k = Kernel(check=check)
    task = k.new_task("t")
    a = task.new_thread(body_a, 2, name="a", priority=prio_a)
    b = task.new_thread(body_b, 1, name="b", priority=prio_b)
    return k, a, b


def test_thread_ending_with_a_reply_capability_drops_the_inherited_priority() -> None:
    async def server(t, other):  # type: ignore[no-untyped-def]
        await t.wait()
        return "ends without replying"

    async def client(t, srv):  # type: ignore[no-untyped-def]
        return (await t.call(srv, words=[1])).error

    k, srv, cli = _two_threads(server, client, prio_a=50, prio_b=200)
    res = k.run()
    assert cli.result == IpcError.ENOT_EXISTENT
    assert srv.prio == srv.priority == 50
    assert res.reason == "done"


def test_run_until_never_moves_the_clock_back() -> None:
    async def sleeper(t, other):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.never())

    k, a, _ = _two_threads(sleeper, sleeper)
    k.run(max_steps=1)            # a sleeps; b is stopped at its kernel entry
    before = k.now
    k.run(until=before + 1)       # b's entry charges more than one cycle
    assert k.now >= before + 1
    k.cancel(a)
    k.run()                       # the next check compares with the time b's entry saw


def test_call_with_expired_receive_timeout_leaves_no_reply_capability() -> None:
    async def server(t, cli):  # type: ignore[no-untyped-def]
        r = await t.receive(cli)
        return r.words, (await t.reply(words=[1])).error

    async def client(t, srv):  # type: ignore[no-untyped-def]
        return (await t.call(srv, words=[5], receive_timeout=Timeout.zero())).error

    k, srv, cli = _two_threads(server, client)
    k.run()
    assert cli.result == IpcError.RETIMEOUT          # the send went, the reply cannot wait
    assert srv.result == ((5,), IpcError.ENOT_EXISTENT)


def test_reply_and_wait_takes_a_sender_queued_meanwhile() -> None:
    """Found by the liveness check: reply_and_wait must take a sender that queued while the
    server worked, not wait beside it forever."""
    k = Kernel(check=True)
    ts, tc = k.new_task("s"), k.new_task("c")

    async def server(t):  # type: ignore[no-untyped-def]
        r = await t.wait()
        while True:
            await t.compute(10_000)
            r = await t.reply_and_wait(words=[r.words[0] + 100])

    async def client(t, d, x, delay):  # type: ignore[no-untyped-def]
        if delay:
            await t.sleep(Timeout.cycles(delay))
        r = await t.call(d, words=[x])
        return r.error, r.words

    s = ts.new_thread(server, name="srv")
    d = tc.add_cap(s)
    a = tc.new_thread(client, d, 1, 0, name="A")
    b = tc.new_thread(client, d, 2, 3_000, name="B", priority=150)  # queues during the compute
    res = k.run()
    assert a.result == (IpcError.OK, (101,))
    assert b.result == (IpcError.OK, (102,))
    assert res.reason == "done"


def test_call_to_a_waiting_lower_priority_server_lends_priority() -> None:
    """Found by the machine with mixed priorities: the general path must lend the caller's
    priority to a server that was already waiting."""
    seen = []

    async def server(t, other):  # type: ignore[no-untyped-def]
        await t.wait()
        seen.append(srv.prio)
        await t.reply(words=[5])

    async def client(t, s):  # type: ignore[no-untyped-def]
        await t.sleep(Timeout.us(1))
        return (await t.call(s, words=[1])).error

    k, srv, cli = _two_threads(server, client, prio_a=50, prio_b=200)
    k.run()
    assert cli.result == IpcError.OK
    assert seen == [200]
    assert srv.prio == 50


def test_replaced_reply_capability_drops_the_old_callers_priority() -> None:
    async def server(t):  # type: ignore[no-untyped-def]
        await t.wait()          # c1's call: holds c1's reply capability, runs at 100
        await t.wait()          # c2's call: the reply capability now names c2 (prio 50)
        await t.sleep(Timeout.never())

    async def client(t, s):  # type: ignore[no-untyped-def]
        return (await t.call(s, words=[1])).error

    k = Kernel(check=True)
    task = k.new_task("a")
    srv = task.new_thread(server, name="srv", priority=50)
    task.new_thread(client, 1, name="c1", priority=100)
    task.new_thread(client, 1, name="c2", priority=50)
    k.run()
    assert srv.reply_caller is not None and srv.reply_caller.name == "c2"
    assert srv.prio == 50


def test_caller_whose_reply_capability_was_replaced_learns_of_the_servers_end() -> None:
    async def server(t):  # type: ignore[no-untyped-def]
        await t.wait()          # c1's call: the reply capability names c1
        await t.wait()          # c2's call replaces it; c1 still waits for a reply
        await t.sleep(Timeout.never())

    async def client(t, s):  # type: ignore[no-untyped-def]
        return (await t.call(s, words=[1])).error

    k = Kernel(check=True)
    task = k.new_task("a")
    srv = task.new_thread(server, name="srv")
    c1 = task.new_thread(client, 1, name="c1")
    c2 = task.new_thread(client, 1, name="c2")
    assert k.run().reason == "deadlock"      # c1 and c2 wait for replies that never come
    k.delete(srv)
    res = k.run()
    assert (c1.result, c2.result) == (IpcError.ENOT_EXISTENT, IpcError.ENOT_EXISTENT)
    assert res.reason == "done"
