"""Signals as a server: kill, handlers run in the target by a signal thread.

A process that takes signals has a signal thread (`Signals.thread_body`, started
beside its other threads): it registers the process at the signal server, handing over
a capability to its task (with the delete right: the server is what terminates it),
and then calls NEXT in a loop; the server answers NEXT with the next signal to handle
(lowest number first, as Linux delivers), and the signal thread runs the handler the
process installed for it (`async def handler(t, sig)`, run in the signal thread).

    sigs = Signals()                                   # shared by the task's threads
    proc.thread(sigs.thread_body, name="sig", priority=140)
    await sigs.action(t, env, SIGUSR1, handler)        # or SIG_IGN, SIG_DFL
    await sigs.mask(t, env, SIG_BLOCK, {SIGUSR1}); await Signals.kill(t, env, pid, SIGUSR1)

kill(pid, 0) checks that the process exists (ESRCH); a bad signal number is EINVAL.
A blocked signal stays pending (once: standard signals do not queue) until it is
unblocked; SIGKILL and SIGSTOP cannot be blocked or caught. At delivery an ignored
signal (SIG_IGN, or a default-ignore one: SIGCHLD, SIGURG, SIGWINCH, SIGCONT) is
dropped, a handled one goes to the signal thread, and any other with its default action
terminates the process: the server deletes its task. Setting SIG_IGN drops a pending
signal. As on Linux, a blocked signal is kept pending even if it is ignored.

Differences from POSIX: one mask per process (as in a single-threaded process); the
handler runs in the signal thread, beside the process's other threads, rather than
interrupting one of them (so no EINTR); SIGSTOP/SIGCONT stop nothing; every process may
signal every other. A process whose signal thread is gone (its task deleted) is
forgotten by the server's liveness polls: kill then fails with ESRCH.
"""

from __future__ import annotations

import errno
import signal as _signal
from collections.abc import Awaitable, Callable, Iterable

from ..kernel.abi import CapRights, Fpage, MapItem, Timeout
from ..user.context import UserContext
from .framework import (
    Conn,
    Env,
    Op,
    Outcome,
    PosixError,
    Protocol,
    Reply,
    Request,
    Server,
    error,
    handles,
)

NSIG = 65
SIGKILL, SIGSTOP = int(_signal.SIGKILL), int(_signal.SIGSTOP)
SIG_DFL, SIG_IGN, SIG_HANDLER = 0, 1, 2
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
DEFAULT_IGNORE = frozenset(int(s) for s in (_signal.SIGCHLD, _signal.SIGURG, _signal.SIGWINCH,
                                            _signal.SIGCONT))

REGISTER = Op("register", 1, (), ("pid",))
NEXT = Op("next", 2, ("pid",), ("sig",))
KILL = Op("kill", 3, ("pid", "sig"))
ACTION = Op("action", 4, ("pid", "sig", "disposition"), ("old",))
MASK = Op("mask", 5, ("pid", "how", "set"), ("old",))
PENDING = Op("pending", 6, ("pid",), ("set",))
PROTOCOL = Protocol("signal", [REGISTER, NEXT, KILL, ACTION, MASK, PENDING])


def to_set(mask: int) -> set[int]:
    return {s for s in range(1, NSIG) if mask >> s & 1}


def to_mask(sigs: Iterable[int]) -> int:
    m = 0
    for s in sigs:
        m |= 1 << int(s)
    return m


class Proc:
    __slots__ = ("conn", "disp", "mask", "next", "pending", "pid", "task_sel")

    def __init__(self, pid: int, conn: Conn, task_sel: int) -> None:
        self.pid = pid
        self.conn = conn               # the signal thread's connection
        self.task_sel = task_sel       # our capability to the process's task
        self.mask = 0
        self.pending = 0
        self.disp = [SIG_DFL] * NSIG
        self.next: Request | None = None


class SignalServer(Server):
    protocol = PROTOCOL
    name = "signal"

    def __init__(self) -> None:
        super().__init__()
        self.procs: dict[int, Proc] = {}
        self._next_pid = 100
        self.terminated: list[int] = []

    def _proc(self, pid: int) -> Proc:
        p = self.procs.get(pid)
        if p is None:
            raise PosixError(errno.ESRCH, f"no process {pid}")
        return p

    @staticmethod
    def _check(sig: int, catchable: bool = False) -> None:
        if not 0 < sig < NSIG or (catchable and sig in (SIGKILL, SIGSTOP)):
            raise PosixError(errno.EINVAL, f"signal {sig}")

    @handles(REGISTER)
    async def register(self, req: Request) -> Outcome:
        sel = self._slot   # the task capability landed in our object window
        self._slot = self._alloc_cap()
        pid = self._next_pid
        self._next_pid += 1
        self.procs[pid] = Proc(pid, req.conn, sel)
        req.conn.state["pid"] = pid
        return Reply([pid])

    def _ignored(self, p: Proc, sig: int) -> bool:
        d = p.disp[sig]
        return d == SIG_IGN or (d == SIG_DFL and sig in DEFAULT_IGNORE)

    async def _deliver(self, p: Proc) -> None:
        """Act on every pending signal that is not blocked, lowest number first."""
        while p.pid in self.procs:
            ready = p.pending & ~p.mask
            if not ready:
                return
            sig = (ready & -ready).bit_length() - 1
            if self._ignored(p, sig):
                p.pending &= ~(1 << sig)
                continue
            if p.disp[sig] == SIG_HANDLER:
                if p.next is None:
                    return          # the signal thread is busy: it stays pending
                waiter, p.next = p.next, None
                p.pending &= ~(1 << sig)
                if not await self.complete(waiter, Reply([sig])):
                    p.pending |= 1 << sig
                    return
                continue
            await self._terminate(p)

    async def _terminate(self, p: Proc) -> None:
        self.terminated.append(p.pid)
        del self.procs[p.pid]
        await self.t.delete(p.task_sel)
        await self.t.unmap(Fpage.obj(p.task_sel, 0, CapRights.ALL), self_too=True)

    @handles(NEXT)
    async def next(self, req: Request) -> Outcome:
        p = self._proc(req.pid)
        if p.conn is not req.conn:
            return error(errno.EPERM)
        p.next = req

        def forget() -> None:
            if p.next is req:
                p.next = None
        req.undo = forget
        out = self.defer(req)
        await self._deliver(p)
        return out

    @handles(KILL)
    async def kill(self, req: Request) -> Outcome:
        p = self._proc(req.pid)
        sig = req.sig
        if sig == 0:
            return Reply()
        self._check(sig)
        if sig == SIGKILL:
            await self._terminate(p)
            return Reply()
        if sig == SIGSTOP:
            return Reply()
        if not p.mask >> sig & 1 and self._ignored(p, sig):
            return Reply()
        p.pending |= 1 << sig
        await self._deliver(p)
        return Reply()

    @handles(ACTION)
    async def action(self, req: Request) -> Outcome:
        p = self._proc(req.pid)
        self._check(req.sig, catchable=True)
        if req.disposition not in (SIG_DFL, SIG_IGN, SIG_HANDLER):
            return error(errno.EINVAL)
        old = p.disp[req.sig]
        p.disp[req.sig] = req.disposition
        if self._ignored(p, req.sig):
            p.pending &= ~(1 << req.sig)
        await self._deliver(p)
        return Reply([old])

    @handles(MASK)
    async def mask(self, req: Request) -> Outcome:
        p = self._proc(req.pid)
        old = p.mask
        bits = req.set & ~(1 << SIGKILL | 1 << SIGSTOP | 1)
        if req.how == SIG_BLOCK:
            p.mask |= bits
        elif req.how == SIG_UNBLOCK:
            p.mask &= ~bits
        elif req.how == SIG_SETMASK:
            p.mask = bits
        else:
            return error(errno.EINVAL)
        await self._deliver(p)
        return Reply([old])

    @handles(PENDING)
    async def pending(self, req: Request) -> Outcome:
        return Reply([self._proc(req.pid).pending])

    async def on_disconnect(self, conn: Conn) -> None:
        pid = conn.state.get("pid")
        p = self.procs.get(pid) if isinstance(pid, int) else None
        if p is not None and p.conn is conn:
            del self.procs[p.pid]
            await self.t.unmap(Fpage.obj(p.task_sel, 0, CapRights.ALL), self_too=True)


Handler = Callable[[UserContext, int], Awaitable[None]]


class Signals:
    """A process's signal state on the client side: its pid, its handlers, and the
    body of its signal thread. One per process, shared by its threads."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.handlers: dict[int, Handler] = {}
        self.handled: list[int] = []        # signals the handlers ran for, in order

    async def thread_body(self, t: UserContext, env: Env) -> None:
        """The signal thread: register, then run a handler for each signal."""
        conn = await env.connect(t, "signal")
        r = await REGISTER.call(conn, items=[MapItem(Fpage.obj(env.task_sel, 0, CapRights.ALL))])
        self.pid = r.pid
        while True:
            sig = (await NEXT.call(conn, self.pid)).sig
            self.handled.append(sig)
            handler = self.handlers.get(sig)
            if handler is not None:
                await handler(t, sig)

    async def getpid(self, t: UserContext) -> int:
        """Our pid, once the signal thread has registered (it waits until then)."""
        while self.pid is None:
            await t.sleep(Timeout.us(1))
        return self.pid

    async def action(self, t: UserContext, env: Env, sig: int,
                     handler: Handler | int) -> int:
        """sigaction: a handler (an async function of (t, sig)), SIG_IGN or SIG_DFL;
        returns the old disposition."""
        pid = await self.getpid(t)
        conn = await env.connect(t, "signal")
        if callable(handler):
            self.handlers[sig] = handler
            disp = SIG_HANDLER
        else:
            disp = handler
        return (await ACTION.call(conn, pid, sig, disp)).old

    async def mask(self, t: UserContext, env: Env, how: int, sigs: Iterable[int]) -> set[int]:
        """sigprocmask: SIG_BLOCK, SIG_UNBLOCK or SIG_SETMASK; returns the old mask."""
        pid = await self.getpid(t)
        conn = await env.connect(t, "signal")
        return to_set((await MASK.call(conn, pid, how, to_mask(sigs))).old)

    async def pending(self, t: UserContext, env: Env) -> set[int]:
        pid = await self.getpid(t)
        conn = await env.connect(t, "signal")
        return to_set((await PENDING.call(conn, pid)).set)

    @staticmethod
    async def kill(t: UserContext, env: Env, pid: int, sig: int) -> None:
        conn = await env.connect(t, "signal")
        await KILL.call(conn, pid, sig)
