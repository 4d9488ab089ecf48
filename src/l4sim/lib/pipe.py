"""Pipes and named FIFOs as a server, with a client stub; the data moves by long IPC.

    r, w = await Pipe.pipe(t, env)                  # or: await Pipe.mkfifo(t, env, "/f")
    await w.write(b"hello"); data = await r.read(100)  #     await Pipe.open(t, env, "/f", O_RDONLY)

A write's bytes arrive as a string item in the server's receive buffer; a read's come
back as a string item out of the server's staging area into the buffer the reader
offers. The semantics are the POSIX ones: a pipe holds PIPE_CAPACITY bytes (64 KiB, as
Linux); writes of at most PIPE_BUF bytes are atomic (all or nothing, never interleaved);
a larger blocking write goes in pieces as room appears; a non-blocking one writes what
fits (EAGAIN if nothing does); a read returns what is there (up to its size), waits
while the pipe is empty and has writers, and returns b"" (end of file) when no writer
is left; a write with no reader left fails with EPIPE (there is no SIGPIPE). Opening a
FIFO for reading waits for a writer and for writing waits for a reader, unless
O_NONBLOCK (then a write-only open without a reader fails with ENXIO). An end can be
handed to another client: `token = await end.share()`, then `await Pipe.adopt(t, env,
token)` there (the fd passing of a fork or a socket); an end in flight counts as open
until it is adopted.

A client that goes away (its thread deleted, its connection closed) has its ends
closed by the server: its readers' pipes see end of file when it was the last writer,
its writers' EPIPE when it was the last reader; its blocked write puts nothing more in.
A reply whose data does not reach its reader puts the bytes back at the front.
"""

from __future__ import annotations

import errno
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
    unpack_name,
)
from .semaphore import name_words

PIPE_BUF = 4096
PIPE_CAPACITY = 65536
READ, WRITE = 0, 1
_NAME = tuple(f"n{i}" for i in range(NAME_WORDS - 1))

PIPE = Op("pipe", 1, (), ("rd", "wr"))
MKFIFO = Op("mkfifo", 2, _NAME)
OPEN = Op("open", 3, (*_NAME, "mode", "nonblock"), ("handle",))
UNLINK = Op("unlink", 4, _NAME)
WRITE_OP = Op("write", 5, ("handle", "nonblock"), ("count",), send_string=True)
READ_OP = Op("read", 6, ("handle", "size", "nonblock"), (), recv_string=True)
CLOSE = Op("close", 7, ("handle",))
SHARE = Op("share", 8, ("handle",), ("token",))
ADOPT = Op("adopt", 9, ("token",), ("handle", "mode"))
PROTOCOL = Protocol("pipe", [PIPE, MKFIFO, OPEN, UNLINK, WRITE_OP, READ_OP, CLOSE, SHARE, ADOPT])


class PipeState:
    __slots__ = ("buf", "ends", "openers", "readers", "writers", "written")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.ends = [0, 0]                       # open read ends, write ends
        self.readers: deque[Request] = deque()   # blocked reads
        self.writers: deque[Request] = deque()   # blocked writes (the rest of their data)
        self.written: dict[int, int] = {}        # id(request) -> bytes of it already in
        self.openers: deque[tuple[Request, int]] = deque()  # FIFO opens waiting


class PipeServer(Server):
    protocol = PROTOCOL
    name = "pipe"

    def __init__(self) -> None:
        super().__init__()
        self.fifos: dict[str, PipeState] = {}
        self.tokens: dict[int, tuple[PipeState, int]] = {}
        self._next = 1

    def _fds(self, conn: Conn) -> dict[int, tuple[PipeState, int]]:
        fds: dict[int, tuple[PipeState, int]] = conn.state.setdefault("fds", {})
        return fds

    def _new_fd(self, conn: Conn, p: PipeState, mode: int, counted: bool = False) -> int:
        h = self._next
        self._next += 1
        self._fds(conn)[h] = (p, mode)
        if not counted:
            p.ends[mode] += 1
        return h

    def _end(self, req: Request, mode: int) -> PipeState:
        got = self._fds(req.conn).get(req.handle)
        if got is None or got[1] != mode:
            raise PosixError(errno.EBADF, "not an open end for that")
        return got[0]

    @handles(PIPE)
    async def pipe(self, req: Request) -> Outcome:
        p = PipeState()
        return Reply([self._new_fd(req.conn, p, READ), self._new_fd(req.conn, p, WRITE)])

    @handles(MKFIFO)
    async def mkfifo(self, req: Request) -> Outcome:
        name = unpack_name(req.words)
        if name in self.fifos:
            return error(errno.EEXIST)
        self.fifos[name] = PipeState()
        return Reply()

    @handles(UNLINK)
    async def unlink(self, req: Request) -> Outcome:
        if self.fifos.pop(unpack_name(req.words), None) is None:
            return error(errno.ENOENT)
        return Reply()

    @handles(OPEN)
    async def open(self, req: Request) -> Outcome:
        p = self.fifos.get(unpack_name(req.words))
        if p is None:
            return error(errno.ENOENT)
        mode = req.mode
        if mode not in (READ, WRITE):
            return error(errno.EINVAL)
        other = 1 - mode
        if p.ends[other] == 0 and not any(m == other for _, m in p.openers):
            if req.nonblock:
                if mode == WRITE:
                    return error(errno.ENXIO)
                return Reply([self._new_fd(req.conn, p, mode)])
            p.openers.append((req, mode))
            req.undo = lambda: p.openers.remove((req, mode)) if (req, mode) in p.openers else None
            return self.defer(req)
        handle = self._new_fd(req.conn, p, mode)
        # Opens of the other side waiting for us complete now.
        for waiter, wmode in list(p.openers):
            if wmode == other:
                p.openers.remove((waiter, wmode))
                h = self._new_fd(waiter.conn, p, wmode)
                if not await self.complete(waiter, Reply([h])):
                    await self._close(waiter.conn, h)
        return Reply([handle])

    @handles(WRITE_OP)
    async def write(self, req: Request) -> Outcome:
        p = self._end(req, WRITE)
        data = req.data
        if not data:
            return Reply([0])   # as Linux: an empty write writes nothing and checks nothing
        if p.ends[READ] == 0:
            return error(errno.EPIPE)
        room = PIPE_CAPACITY - len(p.buf)
        if p.writers:
            room = 0  # blocked writers go first
        n = len(data)
        if n <= room:
            p.buf += data
            await self._feed_readers(p)
            return Reply([n])
        if req.nonblock:
            if n <= PIPE_BUF or room == 0:
                return error(errno.EAGAIN)
            p.buf += data[:room]
            await self._feed_readers(p)
            return Reply([room])
        done = 0
        if n > PIPE_BUF and room:
            p.buf += data[:room]
            done = room
        p.written[id(req)] = done
        p.writers.append(req)
        req.undo = lambda: self._forget_writer(p, req)
        if done:
            await self._feed_readers(p)
        return self.defer(req)

    def _forget_writer(self, p: PipeState, req: Request) -> None:
        if req in p.writers:
            p.writers.remove(req)
        p.written.pop(id(req), None)

    async def _feed_readers(self, p: PipeState) -> None:
        """Data (or end of file) for blocked readers, then room for blocked writers."""
        while p.readers and (p.buf or p.ends[WRITE] == 0):
            req = p.readers.popleft()
            chunk = bytes(p.buf[:req.size])
            del p.buf[:len(chunk)]
            if not await self.complete(req, Reply(data=chunk)):
                p.buf[:0] = chunk   # it never arrived: back to the front
        await self._feed_writers(p)

    async def _feed_writers(self, p: PipeState) -> None:
        progressed = False
        while p.writers:
            req = p.writers[0]
            data, done = req.data, p.written[id(req)]
            room = PIPE_CAPACITY - len(p.buf)
            rest = len(data) - done
            if p.ends[READ] == 0:
                p.writers.popleft()
                p.written.pop(id(req), None)
                await self.complete(req, Reply([done]) if done else Reply(errno=errno.EPIPE))
                continue
            if len(data) <= PIPE_BUF:
                if rest > room:
                    break
                p.writers.popleft()
                p.written.pop(id(req), None)
                if await self.complete(req, Reply([len(data)])):
                    p.buf += data       # in only once its writer knows
                    progressed = True
                continue
            take = min(room, rest)
            if take == 0:
                break
            p.buf += data[done:done + take]
            progressed = True
            p.written[id(req)] = done + take
            if done + take == len(data):
                p.writers.popleft()
                p.written.pop(id(req), None)
                await self.complete(req, Reply([len(data)]))
        if progressed and p.readers:
            await self._feed_readers(p)

    @handles(READ_OP)
    async def read(self, req: Request) -> Outcome:
        p = self._end(req, READ)
        size = min(req.size, BUF_SIZE)
        if p.buf:
            chunk = bytes(p.buf[:size])
            del p.buf[:len(chunk)]

            async def put_back() -> None:
                p.buf[:0] = chunk
            await self._feed_writers(p)
            return Reply(data=chunk, on_fail=put_back)
        if p.ends[WRITE] == 0 or size == 0:
            return Reply(data=b"")
        if req.nonblock:
            return error(errno.EAGAIN)
        p.readers.append(req)
        req.undo = lambda: p.readers.remove(req) if req in p.readers else None
        return self.defer(req)

    async def _close(self, conn: Conn, handle: int) -> bool:
        got = self._fds(conn).pop(handle, None)
        if got is None:
            return False
        p, mode = got
        p.ends[mode] -= 1
        if p.ends[mode] == 0:
            if mode == WRITE:
                await self._feed_readers(p)     # end of file for blocked readers
            else:
                await self._feed_writers(p)     # EPIPE for blocked writers
        return True

    @handles(CLOSE)
    async def close(self, req: Request) -> Outcome:
        return Reply() if await self._close(req.conn, req.handle) else error(errno.EBADF)

    @handles(SHARE)
    async def share(self, req: Request) -> Outcome:
        got = self._fds(req.conn).get(req.handle)
        if got is None:
            return error(errno.EBADF)
        token = self._next
        self._next += 1
        self.tokens[token] = got
        got[0].ends[got[1]] += 1   # an end in flight keeps the pipe open, as a passed fd
        return Reply([token])

    @handles(ADOPT)
    async def adopt(self, req: Request) -> Outcome:
        got = self.tokens.pop(req.token, None)
        if got is None:
            return error(errno.EBADF)
        p, mode = got
        return Reply([self._new_fd(req.conn, p, mode, counted=True), mode])

    async def on_disconnect(self, conn: Conn) -> None:
        for handle in list(self._fds(conn)):
            await self._close(conn, handle)


class Pipe:
    """Client stub of one end of a pipe or FIFO (for the thread that holds it)."""

    def __init__(self, conn: Connection, handle: int, mode: int, nonblock: bool = False) -> None:
        self.conn = conn
        self.handle = handle
        self.mode = mode
        self.nonblock = nonblock

    @classmethod
    async def pipe(cls, t: UserContext, env: Env) -> tuple[Pipe, Pipe]:
        """(read end, write end) of a new pipe."""
        conn = await env.connect(t, "pipe")
        r = await PIPE.call(conn)
        return cls(conn, r.rd, READ), cls(conn, r.wr, WRITE)

    @staticmethod
    async def mkfifo(t: UserContext, env: Env, name: str) -> None:
        conn = await env.connect(t, "pipe")
        await MKFIFO.call(conn, *name_words(name))

    @staticmethod
    async def unlink(t: UserContext, env: Env, name: str) -> None:
        conn = await env.connect(t, "pipe")
        await UNLINK.call(conn, *name_words(name))

    @classmethod
    async def open(cls, t: UserContext, env: Env, name: str, flags: int) -> Pipe:
        """Open a FIFO: os.O_RDONLY or os.O_WRONLY, with os.O_NONBLOCK or not."""
        conn = await env.connect(t, "pipe")
        mode = WRITE if flags & os.O_ACCMODE == os.O_WRONLY else READ
        nonblock = bool(flags & os.O_NONBLOCK)
        r = await OPEN.call(conn, *name_words(name), mode, int(nonblock))
        return cls(conn, r.handle, mode, nonblock)

    @classmethod
    async def adopt(cls, t: UserContext, env: Env, token: int) -> Pipe:
        conn = await env.connect(t, "pipe")
        r = await ADOPT.call(conn, token)
        return cls(conn, r.handle, r.mode)

    async def share(self) -> int:
        """A token another client adopts to hold this end too."""
        return (await SHARE.call(self.conn, self.handle)).token

    async def write(self, data: bytes, timeout: Timeout = NEVER) -> int:
        """Write `data`; bytes written (all of them, when blocking)."""
        if len(data) <= BUF_SIZE:
            return (await WRITE_OP.call(self.conn, self.handle, int(self.nonblock),
                                        data=data, timeout=timeout)).count
        done = 0
        for at in range(0, len(data), BUF_SIZE):
            part = data[at:at + BUF_SIZE]
            n = (await WRITE_OP.call(self.conn, self.handle, int(self.nonblock), data=part,
                                     timeout=timeout)).count
            done += n
            if n < len(part):
                break
        return done

    async def read(self, size: int, timeout: Timeout = NEVER) -> bytes:
        """Up to `size` bytes; b"" at end of file."""
        size = min(size, BUF_SIZE)
        return (await READ_OP.call(self.conn, self.handle, size, int(self.nonblock),
                                   recv=size, timeout=timeout)).data

    async def close(self) -> None:
        await CLOSE.call(self.conn, self.handle)
