"""POSIX message queues as a server, with a client stub.

    q = await MessageQueue.open(t, env, "/q", O_CREAT | O_RDWR, maxmsg=8, msgsize=64)
    await q.send(b"hi", prio=3); data, prio = await q.receive()

A message travels by long IPC both ways (a string item into the server's receive
buffer, and one out of its staging area into the buffer the receiver offers). Messages
come out highest priority first, first in first out within a priority. Errors as
`mq_open`/`mq_send`/`mq_receive`: ENOENT, EEXIST, EINVAL (bad attributes, priority
>= MQ_PRIO_MAX), EMSGSIZE (a message longer than msgsize; a receive buffer shorter
than msgsize), EBADF (a handle not open for that direction), EAGAIN (non-blocking and
full or empty), ETIMEDOUT (timed send or receive), EBUSY (notify while another is
registered).

notify: `await q.notify_wait()` registers for the queue's notification and returns when
it fires (a message arrives in an empty queue and no receiver is waiting), once, as
`mq_notify` with SIGEV_THREAD: call it from a thread of its own.

A blocked sender's message enters the queue only once the sender has been told that
it was sent (the completion reached it), so a sender that dies while blocked leaves no
message behind. A message for a receiver that is gone stays in the queue for the next.
Messages already sent stay when their sender dies, as in POSIX.
"""

from __future__ import annotations

import errno
import heapq
import os
from collections import deque

from ..kernel.abi import NEVER, Timeout
from ..user.context import UserContext
from .framework import (
    BUF_SIZE,
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
    unpack_name,
)
from .semaphore import name_words

MQ_PRIO_MAX = 32768
DEFAULT_MAXMSG = 10
DEFAULT_MSGSIZE = 8192
_NAME = tuple(f"n{i}" for i in range(NAME_WORDS - 1))

OPEN = Op("open", 1, (*_NAME, "flags", "maxmsg", "msgsize"), ("handle", "maxmsg", "msgsize"))
CLOSE = Op("close", 2, ("handle",))
UNLINK = Op("unlink", 3, _NAME)
SEND = Op("send", 4, ("handle", "prio", "nonblock"), send_string=True)
RECEIVE = Op("receive", 5, ("handle", "size", "nonblock"), ("prio",), recv_string=True)
ATTR = Op("attr", 6, ("handle",), ("maxmsg", "msgsize", "curmsgs"))
NOTIFY = Op("notify", 7, ("handle",))
PROTOCOL = Protocol("mq", [OPEN, CLOSE, UNLINK, SEND, RECEIVE, ATTR, NOTIFY])


class Queue:
    __slots__ = ("heap", "maxmsg", "msgsize", "name", "notify", "opens", "receivers",
                 "senders", "seq", "unlinked")

    def __init__(self, name: str, maxmsg: int, msgsize: int) -> None:
        self.name = name
        self.maxmsg = maxmsg
        self.msgsize = msgsize
        self.heap: list[tuple[int, int, bytes]] = []   # (-prio, seq, data)
        self.seq = 0
        self.receivers: deque[Request] = deque()
        self.senders: deque[Request] = deque()
        self.notify: Request | None = None
        self.opens = 0
        self.unlinked = False

    def push(self, prio: int, data: bytes, seq: int | None = None) -> None:
        if seq is None:
            self.seq += 1
            seq = self.seq
        heapq.heappush(self.heap, (-prio, seq, data))


class MqServer(Server):
    protocol = PROTOCOL
    name = "mq"

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[str, Queue] = {}
        self._next_handle = 1

    def _handles(self, conn: Conn) -> dict[int, tuple[Queue, int]]:
        h: dict[int, tuple[Queue, int]] = conn.state.setdefault("mqs", {})
        return h

    def _queue(self, req: Request, access: int) -> Queue:
        """The queue a handle names, if open for `access` (0 read, 1 write)."""
        got = self._handles(req.conn).get(req.handle)
        if got is None:
            raise PosixError(errno.EBADF, "not an open queue")
        q, mode = got
        acc = mode & os.O_ACCMODE
        if (access == 0 and acc == os.O_WRONLY) or (access == 1 and acc == os.O_RDONLY):
            raise PosixError(errno.EBADF, "not open for that")
        return q

    @handles(OPEN)
    async def open(self, req: Request) -> Outcome:
        name = unpack_name(req.words)
        flags = req.flags
        q = open_named(self.queues, name, flags)
        if q is None:
            maxmsg = req.maxmsg or DEFAULT_MAXMSG
            msgsize = req.msgsize or DEFAULT_MSGSIZE
            if not 0 < maxmsg <= 65536 or not 0 < msgsize <= BUF_SIZE:
                return error(errno.EINVAL)
            q = self.queues[name] = Queue(name, maxmsg, msgsize)
        q.opens += 1
        handle = self._next_handle
        self._next_handle += 1
        self._handles(req.conn)[handle] = (q, flags)
        return Reply([handle, q.maxmsg, q.msgsize])

    def _release(self, q: Queue) -> None:
        q.opens -= 1
        if q.unlinked and q.opens == 0 and self.queues.get(q.name) is q:
            del self.queues[q.name]

    @handles(CLOSE)
    async def close(self, req: Request) -> Outcome:
        got = self._handles(req.conn).pop(req.handle, None)
        if got is None:
            return error(errno.EBADF)
        q = got[0]
        if q.notify is not None and q.notify.conn is req.conn:
            q.notify = None
        self._release(q)
        return Reply()

    @handles(UNLINK)
    async def unlink(self, req: Request) -> Outcome:
        q = self.queues.pop(unpack_name(req.words), None)
        if q is None:
            return error(errno.ENOENT)
        q.unlinked = True
        return Reply()

    @handles(SEND)
    async def send(self, req: Request) -> Outcome:
        q = self._queue(req, 1)
        if len(req.data) > q.msgsize:
            return error(errno.EMSGSIZE)
        if req.prio >= MQ_PRIO_MAX:
            return error(errno.EINVAL)
        if len(q.heap) >= q.maxmsg:
            if req.nonblock:
                return error(errno.EAGAIN)
            q.senders.append(req)
            req.undo = lambda: q.senders.remove(req) if req in q.senders else None
            return self.defer(req)
        await self._arrive(q, req.prio, req.data)
        return Reply()

    async def _arrive(self, q: Queue, prio: int, data: bytes) -> None:
        """A message is in: to the first receiver still waiting, else into the queue
        (and the notification, if the queue was empty and nobody waited)."""
        while q.receivers:
            if await self.complete(q.receivers.popleft(), Reply([prio], data=data)):
                return
        was_empty = not q.heap
        q.push(prio, data)
        if was_empty and q.notify is not None:
            waiter, q.notify = q.notify, None
            await self.complete(waiter, Reply())

    async def _refill(self, q: Queue) -> None:
        """Room in the queue: the first blocked sender still there gets it."""
        while q.senders and len(q.heap) < q.maxmsg:
            req = q.senders.popleft()
            if await self.complete(req, Reply()):
                await self._arrive(q, req.prio, req.data)

    @handles(RECEIVE)
    async def receive(self, req: Request) -> Outcome:
        q = self._queue(req, 0)
        if req.size < q.msgsize:
            return error(errno.EMSGSIZE)
        if q.heap:
            negprio, seq, data = heapq.heappop(q.heap)

            async def put_back() -> None:
                q.push(-negprio, data, seq)
            await self._refill(q)
            return Reply([-negprio], data=data, on_fail=put_back)
        if req.nonblock:
            return error(errno.EAGAIN)
        q.receivers.append(req)
        req.undo = lambda: q.receivers.remove(req) if req in q.receivers else None
        return self.defer(req)

    @handles(ATTR)
    async def attr(self, req: Request) -> Outcome:
        got = self._handles(req.conn).get(req.handle)
        if got is None:
            return error(errno.EBADF)
        q = got[0]
        return Reply([q.maxmsg, q.msgsize, len(q.heap)])

    @handles(NOTIFY)
    async def notify(self, req: Request) -> Outcome:
        got = self._handles(req.conn).get(req.handle)
        if got is None:
            return error(errno.EBADF)
        q = got[0]
        if q.notify is not None:
            return error(errno.EBUSY)
        q.notify = req

        def forget() -> None:
            if q.notify is req:
                q.notify = None
        req.undo = forget
        return self.defer(req)

    async def on_disconnect(self, conn: Conn) -> None:
        for q, _mode in self._handles(conn).values():
            self._release(q)


class MessageQueue:
    """Client stub of one open message queue (for the thread that opened it)."""

    def __init__(self, conn: Connection, handle: int, flags: int, maxmsg: int,
                 msgsize: int) -> None:
        self.conn = conn
        self.handle = handle
        self.nonblock = bool(flags & os.O_NONBLOCK)
        self.maxmsg = maxmsg
        self.msgsize = msgsize

    @classmethod
    async def open(cls, t: UserContext, env: Env, name: str, flags: int = os.O_RDONLY,
                   maxmsg: int = 0, msgsize: int = 0) -> MessageQueue:
        """mq_open: flags of os.O_RDONLY/O_WRONLY/O_RDWR, O_CREAT, O_EXCL, O_NONBLOCK;
        maxmsg and msgsize when it creates (0: 10 messages of 8192 bytes)."""
        conn = await env.connect(t, "mq")
        r = await OPEN.call(conn, *name_words(name), flags, maxmsg, msgsize)
        return cls(conn, r.handle, flags, r.maxmsg, r.msgsize)

    @staticmethod
    async def unlink(t: UserContext, env: Env, name: str) -> None:
        conn = await env.connect(t, "mq")
        await UNLINK.call(conn, *name_words(name))

    async def send(self, data: bytes, prio: int = 0, timeout: Timeout = NEVER) -> None:
        await SEND.call(self.conn, self.handle, prio, int(self.nonblock), data=data,
                        timeout=timeout)

    async def receive(self, size: int | None = None,
                      timeout: Timeout = NEVER) -> tuple[bytes, int]:
        """(message, priority): the oldest of the highest priority."""
        size = self.msgsize if size is None else size
        r = await RECEIVE.call(self.conn, self.handle, size, int(self.nonblock),
                               recv=size, timeout=timeout)
        return r.data, r.prio

    async def attributes(self) -> tuple[int, int, int]:
        """(maxmsg, msgsize, messages in the queue now)."""
        r = await ATTR.call(self.conn, self.handle)
        return r.maxmsg, r.msgsize, r.curmsgs

    async def notify_wait(self, timeout: Timeout = NEVER) -> None:
        await NOTIFY.call(self.conn, self.handle, timeout=timeout)

    async def close(self) -> None:
        await CLOSE.call(self.conn, self.handle)
