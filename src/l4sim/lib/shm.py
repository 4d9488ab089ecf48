"""POSIX shared memory as a server: objects mapped into the caller's space by flexpages.

    shm = await SharedMemory.open(t, env, "/m", O_CREAT | O_RDWR)
    await shm.truncate(8192); addr = await shm.map(8192); await t.store(addr, b"hi")

The server keeps each object's pages in its own address space (anonymous memory it
got from its pager), in a naturally aligned region of MAX_SIZE bytes per object, and
maps them on with map items: MAP's reply carries the object's pages as the fewest
naturally aligned flexpages, which land in the receive window the client offers (the
client stub picks an aligned free region of its space). Read-only handles map
read-only; a writable mapping of one needs a writable handle (EACCES). The mapping
database remembers that the client's mappings derive from the server's.

unmap: the client revokes its own mapping (`t.unmap(..., self_too=True)`) and tells
the server. unlink removes the name; the object lives on while it is open or mapped,
so a mapping survives an unlink until it is unmapped. When the last handle is closed
and the last mapping unmapped of an unlinked object, the server unmaps the object's
pages from itself, which revokes any mapping still derived from them: that is the
revocation on close. Truncating to a smaller size revokes the pages beyond it from
every client (a later access there faults: on Linux it would be SIGBUS, here the
client's own pager answers the fault).

A client that goes away has its handles closed and its mappings forgotten by the
server; the mappings themselves go with the client's task when the task is deleted.
"""

from __future__ import annotations

import errno
import os

from ..kernel.abi import Fpage, MapItem, Rights
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
    unpack_name,
)
from .semaphore import name_words

PAGE = 4096
MAX_SIZE = 1 << 24             # per object
OBJECTS_BASE = 1 << 44         # the objects' pages, in the server's space
ITEMS_PER_REPLY = 24
_NAME = tuple(f"n{i}" for i in range(NAME_WORDS - 1))

OPEN = Op("open", 1, (*_NAME, "flags"), ("handle", "size"))
TRUNCATE = Op("truncate", 2, ("handle", "size"))
SIZE = Op("size", 3, ("handle",), ("size",))
MAP = Op("map", 4, ("handle", "offset", "length", "write", "at"), ("mapped", "obj"))
UNMAP = Op("unmap", 5, ("obj",))
CLOSE = Op("close", 6, ("handle",))
UNLINK = Op("unlink", 7, _NAME)
PROTOCOL = Protocol("shm", [OPEN, TRUNCATE, SIZE, MAP, UNMAP, CLOSE, UNLINK])


class ShmObject:
    __slots__ = ("base", "id", "maps", "name", "opens", "present", "size", "unlinked")

    def __init__(self, oid: int, name: str) -> None:
        self.id = oid
        self.name = name
        self.base = OBJECTS_BASE + oid * MAX_SIZE
        self.size = 0
        self.opens = 0
        self.maps = 0
        self.present: set[int] = set()   # pages the server has touched (faulted in)
        self.unlinked = False


def chunks(offset: int, length: int, at: int) -> list[tuple[int, int, int]]:
    """(object offset, order, window position) of the fewest naturally aligned pieces
    covering [offset, offset + length), each aligned in the object and in the window."""
    out = []
    while length > 0:
        order = 12
        while (order < 40 and (offset | at) % (1 << (order + 1)) == 0
               and (1 << (order + 1)) <= length):
            order += 1
        out.append((offset, order, at))
        offset += 1 << order
        at += 1 << order
        length -= 1 << order
    return out


class ShmServer(Server):
    protocol = PROTOCOL
    name = "shm"

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, ShmObject] = {}
        self.by_id: dict[int, ShmObject] = {}
        self._next_id = 0
        self._next_handle = 1

    def _fds(self, conn: Conn) -> dict[int, tuple[ShmObject, int]]:
        fds: dict[int, tuple[ShmObject, int]] = conn.state.setdefault("fds", {})
        return fds

    def _maps(self, conn: Conn) -> list[int]:
        maps: list[int] = conn.state.setdefault("maps", [])
        return maps

    def _fd(self, req: Request) -> tuple[ShmObject, int]:
        got = self._fds(req.conn).get(req.handle)
        if got is None:
            raise PosixError(errno.EBADF, "not an open shared memory object")
        return got

    @handles(OPEN)
    async def open(self, req: Request) -> Outcome:
        name = unpack_name(req.words)
        obj = open_named(self.objects, name, req.flags)
        if obj is None:
            obj = ShmObject(self._next_id, name)
            self._next_id += 1
            self.objects[name] = obj
            self.by_id[obj.id] = obj
        obj.opens += 1
        handle = self._next_handle
        self._next_handle += 1
        self._fds(req.conn)[handle] = (obj, req.flags)
        return Reply([handle, obj.size])

    @handles(TRUNCATE)
    async def truncate(self, req: Request) -> Outcome:
        obj, flags = self._fd(req)
        if flags & os.O_ACCMODE == os.O_RDONLY or req.size > MAX_SIZE:
            return error(errno.EINVAL)
        new = (req.size + PAGE - 1) // PAGE * PAGE
        old = (obj.size + PAGE - 1) // PAGE * PAGE
        if new < old:   # revoke the pages beyond the new end, from everyone
            for off, order, _ in chunks(new, old - new, new):
                await self.t.unmap(Fpage.mem(obj.base + off, order, Rights.RWX), self_too=True)
            obj.present = {p for p in obj.present if p < new}
        elif req.size < obj.size and req.size % PAGE:
            await self.t.store(obj.base + req.size, bytes(PAGE - req.size % PAGE))
        obj.size = req.size
        return Reply()

    @handles(SIZE)
    async def size(self, req: Request) -> Outcome:
        return Reply([self._fd(req)[0].size])

    @handles(MAP)
    async def map(self, req: Request) -> Outcome:
        obj, flags = self._fd(req)
        if req.write and flags & os.O_ACCMODE == os.O_RDONLY:
            return error(errno.EACCES)
        if (req.offset % PAGE or req.length == 0 or req.length % PAGE
                or req.offset + req.length > (obj.size + PAGE - 1) // PAGE * PAGE):
            return error(errno.EINVAL)
        pieces = chunks(req.offset, req.length, req.at)[:ITEMS_PER_REPLY]
        items = []
        mapped = 0
        rights = Rights.RW if req.write else Rights.R
        for off, order, at in pieces:
            for page in range(off, off + (1 << order), PAGE):
                if page not in obj.present:
                    await self.t.load(obj.base + page, 1)   # fault it in from our pager
                    obj.present.add(page)
            items.append(MapItem(Fpage.mem(obj.base + off, order, rights), send_base=at))
            mapped += 1 << order
        if req.at == 0:   # the first reply of one map: count the mapping once
            obj.maps += 1
            self._maps(req.conn).append(obj.id)

        async def forget() -> None:
            if req.at == 0:
                self._unmapped(req.conn, obj)
        return Reply([mapped, obj.id], items=items, on_fail=forget)

    def _unmapped(self, conn: Conn, obj: ShmObject) -> None:
        maps = self._maps(conn)
        if obj.id in maps:
            maps.remove(obj.id)
            obj.maps -= 1

    async def _maybe_free(self, obj: ShmObject) -> None:
        if obj.unlinked and obj.opens == 0 and obj.maps == 0 and obj.id in self.by_id:
            del self.by_id[obj.id]
            if obj.present:
                await self.t.unmap(Fpage.mem(obj.base, MAX_SIZE.bit_length() - 1, Rights.RWX),
                                   self_too=True)
            obj.present.clear()

    @handles(UNMAP)
    async def unmap(self, req: Request) -> Outcome:
        obj = self.by_id.get(req.obj)
        if obj is None or obj.id not in self._maps(req.conn):
            return error(errno.EINVAL)
        self._unmapped(req.conn, obj)
        await self._maybe_free(obj)
        return Reply()

    @handles(CLOSE)
    async def close(self, req: Request) -> Outcome:
        got = self._fds(req.conn).pop(req.handle, None)
        if got is None:
            return error(errno.EBADF)
        got[0].opens -= 1
        await self._maybe_free(got[0])
        return Reply()

    @handles(UNLINK)
    async def unlink(self, req: Request) -> Outcome:
        obj = self.objects.pop(unpack_name(req.words), None)
        if obj is None:
            return error(errno.ENOENT)
        obj.unlinked = True
        await self._maybe_free(obj)
        return Reply()

    async def on_disconnect(self, conn: Conn) -> None:
        for obj, _flags in self._fds(conn).values():
            obj.opens -= 1
        for oid in list(self._maps(conn)):
            mapped = self.by_id.get(oid)
            if mapped is not None:
                self._unmapped(conn, mapped)
        for each in list(self.by_id.values()):
            await self._maybe_free(each)


class Mapping:
    """A mapping of a shared memory object in the client's space."""

    def __init__(self, shm: SharedMemory, addr: int, length: int, order: int, obj: int) -> None:
        self.shm = shm
        self.addr = addr
        self.length = length
        self.order = order
        self.obj = obj

    async def unmap(self) -> None:
        """munmap: revoke our mapping, and tell the server."""
        t = self.shm.conn.t
        await t.unmap(Fpage.mem(self.addr, self.order, Rights.RWX), self_too=True)
        await UNMAP.call(self.shm.conn, self.obj)


class SharedMemory:
    """Client stub of one open shared memory object."""

    def __init__(self, conn: Connection, handle: int, flags: int) -> None:
        self.conn = conn
        self.handle = handle
        self.flags = flags

    @classmethod
    async def open(cls, t: UserContext, env: Env, name: str,
                   flags: int = os.O_RDONLY) -> SharedMemory:
        """shm_open: os.O_RDONLY or os.O_RDWR, with os.O_CREAT and os.O_EXCL."""
        conn = await env.connect(t, "shm")
        r = await OPEN.call(conn, *name_words(name), flags)
        return cls(conn, r.handle, flags)

    @staticmethod
    async def unlink(t: UserContext, env: Env, name: str) -> None:
        conn = await env.connect(t, "shm")
        await UNLINK.call(conn, *name_words(name))

    async def truncate(self, size: int) -> None:
        await TRUNCATE.call(self.conn, self.handle, size)

    async def size(self) -> int:
        return (await SIZE.call(self.conn, self.handle)).size

    async def map(self, length: int, offset: int = 0, write: bool = True) -> Mapping:
        """mmap (MAP_SHARED): `length` bytes from `offset`, at an address the stub picks
        (a region of the caller's space aligned to its size)."""
        if length <= 0:
            raise PosixError(errno.EINVAL, "length")
        length = (length + PAGE - 1) // PAGE * PAGE
        order = max(12, (length - 1).bit_length())
        addr = self.conn.env.alloc_va(1 << order)
        window = Fpage.mem(addr, order)
        done = 0
        obj = -1
        while done < length:
            r = await MAP.call(self.conn, self.handle, offset + done, length - done, int(write),
                               done, window=window)
            done += r.mapped
            obj = r.obj
        return Mapping(self, addr, length, order, obj)

    async def close(self) -> None:
        await CLOSE.call(self.conn, self.handle)
