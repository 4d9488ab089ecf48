"""Counting semaphores (POSIX named semaphores) as a server, with a client stub.

    sem = await Semaphore.open(t, env, "/s", O_CREAT, 1)
    await sem.wait(); ...; await sem.post()

wait, trywait (EAGAIN), timedwait (ETIMEDOUT: the client's call times out), post
(EOVERFLOW beyond SEM_VALUE_MAX), value (0 while threads wait, as Linux reports), close,
unlink (the semaphore lives on for those that have it open). Errors as `sem_open`:
ENOENT, EEXIST (O_CREAT | O_EXCL), EINVAL (value above SEM_VALUE_MAX, a bad handle).

Waiters are woken first come, first served. A post hands the unit to the first waiter
still waiting: the completion is a zero-timeout send, and a waiter whose thread is gone
or that stopped waiting (timed out, cancelled) is skipped, so no unit goes to it. A
successful wait whose reply does not reach its client (it was deleted meanwhile) gives
the unit back. A unit taken by a client that later dies is not given back: as in
POSIX, a semaphore has no owner.
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
    open_named,
    pack_name,
    unpack_name,
)

SEM_VALUE_MAX = 2**31 - 1
_NAME = tuple(f"n{i}" for i in range(NAME_WORDS - 1))

OPEN = Op("open", 1, (*_NAME, "flags", "value"), ("handle",))
CLOSE = Op("close", 2, ("handle",))
UNLINK = Op("unlink", 3, _NAME)
WAIT = Op("wait", 4, ("handle", "nonblock"))
POST = Op("post", 5, ("handle",))
VALUE = Op("value", 6, ("handle",), ("value",))
PROTOCOL = Protocol("sem", [OPEN, CLOSE, UNLINK, WAIT, POST, VALUE])


def name_words(name: str) -> list[int]:
    words = pack_name(name)
    if len(words) > NAME_WORDS - 1:
        raise PosixError(errno.ENAMETOOLONG, repr(name))
    return words + [0] * (NAME_WORDS - 1 - len(words))


class Sem:
    __slots__ = ("name", "opens", "unlinked", "value", "waiters")

    def __init__(self, name: str, value: int) -> None:
        self.name = name
        self.value = value
        self.waiters: deque[Request] = deque()
        self.opens = 0
        self.unlinked = False


class SemServer(Server):
    protocol = PROTOCOL
    name = "sem"

    def __init__(self) -> None:
        super().__init__()
        self.sems: dict[str, Sem] = {}
        self._next_handle = 1

    def _handles(self, conn: Conn) -> dict[int, Sem]:
        h: dict[int, Sem] = conn.state.setdefault("sems", {})
        return h

    def _sem(self, req: Request) -> Sem:
        sem = self._handles(req.conn).get(req.handle)
        if sem is None:
            raise PosixError(errno.EINVAL, "not an open semaphore")
        return sem

    @handles(OPEN)
    async def open(self, req: Request) -> Outcome:
        name = unpack_name(req.words)
        sem = open_named(self.sems, name, req.flags)
        if sem is None:
            if req.value > SEM_VALUE_MAX:
                return error(errno.EINVAL)
            sem = self.sems[name] = Sem(name, req.value)
        sem.opens += 1
        handle = self._next_handle
        self._next_handle += 1
        self._handles(req.conn)[handle] = sem
        return Reply([handle])

    def _release(self, sem: Sem) -> None:
        sem.opens -= 1
        if sem.unlinked and sem.opens == 0 and self.sems.get(sem.name) is sem:
            del self.sems[sem.name]

    @handles(CLOSE)
    async def close(self, req: Request) -> Outcome:
        sem = self._handles(req.conn).pop(req.handle, None)
        if sem is None:
            return error(errno.EINVAL)
        self._release(sem)
        return Reply()

    @handles(UNLINK)
    async def unlink(self, req: Request) -> Outcome:
        sem = self.sems.pop(unpack_name(req.words), None)
        if sem is None:
            return error(errno.ENOENT)
        sem.unlinked = True
        return Reply()

    @handles(WAIT)
    async def wait(self, req: Request) -> Outcome:
        sem = self._sem(req)
        if sem.value > 0:
            sem.value -= 1

            async def give_back() -> None:
                await self._give(sem)
            return Reply(on_fail=give_back)
        if req.nonblock:
            return error(errno.EAGAIN)
        sem.waiters.append(req)
        req.undo = lambda: sem.waiters.remove(req) if req in sem.waiters else None
        return self.defer(req)

    async def _give(self, sem: Sem) -> None:
        """One unit: to the first waiter still waiting, else to the count."""
        while sem.waiters:
            if await self.complete(sem.waiters.popleft(), Reply()):
                return
        sem.value += 1

    @handles(POST)
    async def post(self, req: Request) -> Outcome:
        sem = self._sem(req)
        if sem.value >= SEM_VALUE_MAX:
            return error(errno.EOVERFLOW)
        await self._give(sem)
        return Reply()

    @handles(VALUE)
    async def value(self, req: Request) -> Outcome:
        return Reply([self._sem(req).value])

    async def on_disconnect(self, conn: Conn) -> None:
        for sem in self._handles(conn).values():
            self._release(sem)


class Semaphore:
    """The client stub of one open semaphore (for the thread that opened it)."""

    def __init__(self, conn: Connection, handle: int, name: str) -> None:
        self.conn = conn
        self.handle = handle
        self.name = name

    @classmethod
    async def open(cls, t: UserContext, env: Env, name: str, flags: int = 0,
                   value: int = 0) -> Semaphore:
        """sem_open: `flags` of os.O_CREAT and os.O_EXCL; `value` when it creates."""
        conn = await env.connect(t, "sem")
        r = await OPEN.call(conn, *name_words(name), flags, value)
        return cls(conn, r.handle, name)

    @staticmethod
    async def unlink(t: UserContext, env: Env, name: str) -> None:
        conn = await env.connect(t, "sem")
        await UNLINK.call(conn, *name_words(name))

    async def wait(self, timeout: Timeout = NEVER) -> None:
        """Take a unit, waiting for one; with a timeout, ETIMEDOUT when it expires."""
        await WAIT.call(self.conn, self.handle, 0, timeout=timeout)

    async def timedwait(self, timeout: Timeout) -> None:
        await WAIT.call(self.conn, self.handle, 0, timeout=timeout)

    async def trywait(self) -> None:
        """Take a unit if there is one, else EAGAIN."""
        await WAIT.call(self.conn, self.handle, 1)

    async def post(self) -> None:
        await POST.call(self.conn, self.handle)

    async def value(self) -> int:
        return (await VALUE.call(self.conn, self.handle)).value

    async def close(self) -> None:
        await CLOSE.call(self.conn, self.handle)
