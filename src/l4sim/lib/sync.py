"""Mutexes and condition variables as a server: the lecture's synchronization thread.

"Worker thread calls synchronization thread before entering; synchronization thread
replies if critical section can be entered; worker thread blocks if critical section
not available; worker thread calls synchronization thread after leaving;
synchronization thread sends reply to next waiting worker thread." That is this
server: LOCK is the call before entering, whose reply waits (a deferred reply) while the
mutex is held; UNLOCK is the call after leaving, and the server then sends the reply
to the next waiting worker (first come, first served).

    m = await Mutex.open(t, env, "m"); c = await Cond.open(t, env, "c")
    await m.lock(); while not ready: await c.wait(m); ...; await m.unlock()

Mutexes are error-checking ones: trylock EBUSY, a second lock by the owner EDEADLK,
unlock by another EPERM, timedlock ETIMEDOUT. A condition wait gives the mutex up and
waits in one step; a signal moves one waiter (a broadcast all) to the mutex, and the
waiter's call returns once it holds the mutex again; a timed condition wait that
expires takes the mutex again before it returns ETIMEDOUT, as POSIX says.

A mutex whose owner goes away (its thread deleted, its connection closed) is unlocked
and passed to the next waiter, as a robust mutex would be (the next owner is not told:
there is no EOWNERDEAD). The server notices by its liveness polls while someone waits.
"""

from __future__ import annotations

import errno
from collections import deque

from ..kernel.abi import NEVER, Timeout
from ..user.context import UserContext
from .framework import (
    NAME_WORDS,
    Conn,
    Connection,
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
    unpack_name,
)
from .semaphore import name_words

_NAME = tuple(f"n{i}" for i in range(NAME_WORDS - 1))
MUTEX = Op("mutex", 1, _NAME, ("handle",))
COND = Op("cond", 2, _NAME, ("handle",))
LOCK = Op("lock", 3, ("handle", "nonblock"))
UNLOCK = Op("unlock", 4, ("handle",))
WAIT = Op("wait", 5, ("cond", "mutex"))
SIGNAL = Op("signal", 6, ("cond", "all"))
PROTOCOL = Protocol("sync", [MUTEX, COND, LOCK, UNLOCK, WAIT, SIGNAL])


class MutexState:
    __slots__ = ("name", "owner", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.owner: Conn | None = None
        self.waiters: deque[Request] = deque()


class CondState:
    __slots__ = ("name", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiters: deque[tuple[Request, MutexState]] = deque()


class SyncServer(Server):
    protocol = PROTOCOL
    name = "sync"

    def __init__(self) -> None:
        super().__init__()
        self.mutexes: dict[str, MutexState] = {}
        self.conds: dict[str, CondState] = {}
        self.objects: list[MutexState | CondState] = []   # handle - 1 -> object
        self.handoffs = 0   # mutexes passed to a waiter by UNLOCK: the lecture's "reply to next"

    def _obj(self, handle: int) -> MutexState | CondState:
        if not 0 < handle <= len(self.objects):
            raise PosixError(errno.EINVAL, "no such mutex or condition variable")
        return self.objects[handle - 1]

    def _mutex(self, handle: int) -> MutexState:
        m = self._obj(handle)
        if not isinstance(m, MutexState):
            raise PosixError(errno.EINVAL, "not a mutex")
        return m

    def _cond(self, handle: int) -> CondState:
        c = self._obj(handle)
        if not isinstance(c, CondState):
            raise PosixError(errno.EINVAL, "not a condition variable")
        return c

    @handles(MUTEX)
    async def mutex(self, req: Request) -> Outcome:
        name = unpack_name(req.words)
        if name not in self.mutexes:
            self.mutexes[name] = MutexState(name)
            self.objects.append(self.mutexes[name])
        return Reply([self.objects.index(self.mutexes[name]) + 1])

    @handles(COND)
    async def cond(self, req: Request) -> Outcome:
        name = unpack_name(req.words)
        if name not in self.conds:
            self.conds[name] = CondState(name)
            self.objects.append(self.conds[name])
        return Reply([self.objects.index(self.conds[name]) + 1])

    def _held(self, conn: Conn) -> set[int]:
        held: set[int] = conn.state.setdefault("held", set())
        return held

    def _take(self, m: MutexState, conn: Conn) -> None:
        m.owner = conn
        self._held(conn).add(id(m))

    def _queue(self, m: MutexState, req: Request) -> None:
        m.waiters.append(req)
        req.undo = lambda: m.waiters.remove(req) if req in m.waiters else None

    @handles(LOCK)
    async def lock(self, req: Request) -> Outcome:
        m = self._mutex(req.handle)
        if m.owner is None:
            self._take(m, req.conn)

            async def unlock_again() -> None:
                await self._release(m)
            return Reply(on_fail=unlock_again)
        if m.owner is req.conn:
            return error(errno.EDEADLK)
        if req.nonblock:
            return error(errno.EBUSY)
        self._queue(m, req)
        return self.defer(req)

    async def _release(self, m: MutexState) -> None:
        """Unlock `m`: to the first waiter still waiting, or free."""
        if m.owner is not None:
            self._held(m.owner).discard(id(m))
        m.owner = None
        while m.waiters:
            req = m.waiters.popleft()
            self._take(m, req.conn)
            if await self.complete(req, Reply()):
                self.handoffs += 1
                return
            self._held(req.conn).discard(id(m))
            m.owner = None

    @handles(UNLOCK)
    async def unlock(self, req: Request) -> Outcome:
        m = self._mutex(req.handle)
        if m.owner is not req.conn:
            return error(errno.EPERM)
        await self._release(m)
        return Reply()

    @handles(WAIT)
    async def wait(self, req: Request) -> Outcome:
        c, m = self._cond(req.cond), self._mutex(req.mutex)
        if m.owner is not req.conn:
            return error(errno.EPERM)
        c.waiters.append((req, m))
        req.undo = lambda: self._forget(c, m, req)
        await self._release(m)
        return self.defer(req)

    def _forget(self, c: CondState, m: MutexState, req: Request) -> None:
        if (req, m) in c.waiters:
            c.waiters.remove((req, m))
        if req in m.waiters:
            m.waiters.remove(req)

    @handles(SIGNAL)
    async def signal(self, req: Request) -> Outcome:
        c = self._cond(req.cond)
        n = len(c.waiters) if req.all else min(1, len(c.waiters))
        for _ in range(n):
            waiter, m = c.waiters.popleft()
            m.waiters.append(waiter)      # it returns once it holds the mutex again
            if m.owner is None:
                await self._release(m)
        return Reply()

    async def on_disconnect(self, conn: Conn) -> None:
        held = self._held(conn)
        for m in list(self.mutexes.values()):
            if id(m) in held and m.owner is conn:
                await self._release(m)


class Mutex:
    """Client stub of one mutex, for the calling thread."""

    def __init__(self, conn: Connection, handle: int) -> None:
        self.conn = conn
        self.handle = handle

    @classmethod
    async def open(cls, t: UserContext, env: Env, name: str) -> Mutex:
        """The mutex called `name`, made on first use."""
        conn = await env.connect(t, "sync")
        return cls(conn, (await MUTEX.call(conn, *name_words(name))).handle)

    async def lock(self, timeout: Timeout = NEVER) -> None:
        await LOCK.call(self.conn, self.handle, 0, timeout=timeout)

    async def trylock(self) -> None:
        await LOCK.call(self.conn, self.handle, 1)

    async def unlock(self) -> None:
        await UNLOCK.call(self.conn, self.handle)


class Cond:
    """Client stub of one condition variable."""

    def __init__(self, conn: Connection, handle: int) -> None:
        self.conn = conn
        self.handle = handle

    @classmethod
    async def open(cls, t: UserContext, env: Env, name: str) -> Cond:
        conn = await env.connect(t, "sync")
        return cls(conn, (await COND.call(conn, *name_words(name))).handle)

    async def wait(self, mutex: Mutex, timeout: Timeout = NEVER) -> None:
        """Give `mutex` up and wait for a signal; hold it again on return (also when
        the timeout expires: then ETIMEDOUT)."""
        try:
            await WAIT.call(self.conn, self.handle, mutex.handle, timeout=timeout)
        except PosixError as exc:
            if exc.errno in (errno.ETIMEDOUT, errno.EINTR):
                await mutex.lock()
            raise

    async def signal(self) -> None:
        await SIGNAL.call(self.conn, self.handle, 0)

    async def broadcast(self) -> None:
        await SIGNAL.call(self.conn, self.handle, 1)
