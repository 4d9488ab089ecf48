"""The server framework: a protocol declared once, a dispatch loop, and client stubs.

Built only on the user API, the way L4 systems build their servers.

**A protocol** is a list of `Op`s: a name, the message label, the names of its
argument words and of its reply words, and whether the request carries a string
(long IPC, the data the server reads from its receive buffer) or expects one back (the
client offers a receive buffer of the size it asks for). The server dispatches on the
label; the client calls the same `Op` object (`await op.call(conn, ...)`), so both
sides read one declaration.

**Connections.** A server has one public gate (label 0), which the name server hands
out, and a pool of connection gates (labels 1, 2, ...), each bound to the server thread
and made by the boot configuration (a Fiasco server would ask a factory). A client
thread opens a connection on the public gate: its OPEN message carries a capability to
the client's own thread (an object flexpage, read right only), and the reply maps one
connection gate from the pool into the client's object space (an object flexpage
received with an object window). From then on every request arrives through that gate:
the label the kernel shows the server (`r.label`) names the connection, which no client
can forge. A connection belongs to one client thread; a thread has at most one request
outstanding on it, so a new request proves that an older unanswered one was abandoned
(its timeout expired or it was cancelled).

**Replies.** A handler returns a `Reply` (words, items, string data, or an error
number) or `DEFER`: the request waits in the server (a semaphore at zero, an empty
pipe, a held lock) and the server completes it later by a direct send to the client's
thread with a zero timeout. The client's `call` is still in its receive phase, closed
on the server thread, so it accepts that send as its reply. Errors travel as POSIX
error numbers: a reply with label `-errno`. The stub raises `PosixError` (an
`OSError` with that errno); IPC failures become EINTR (cancelled), ETIMEDOUT (the
client's receive timeout: timed operations are timed by the client's own call) or
EBADF (no such connection).

**A client that goes away.** Every completion of a deferred request is a zero-timeout
send: it fails when the client thread was deleted (ENOT_EXISTENT) or stopped waiting
(timeout, cancel), and the server then undoes what it would have given (the unit goes
to the next waiter, the message stays queued). A reply that fails the same way runs
the reply's `on_fail`. Resources a client holds while it runs (a lock, a pipe end, a
signal registration) are released when the server finds the client's thread gone:
Fiasco servers learn it from an IRQ the kernel triggers on deletion; the user API has
none, so the server polls, as `ex_regs` on its capability to each client thread
answers ENOT_EXISTENT once the thread is gone. It polls when a connection is opened
and the pool is empty, whenever a request is about to wait, and, while requests wait,
on a timer (every `POLL_CYCLES`, doubling after each poll that found nobody gone, at
most `POLL_ROUNDS` times in a row so that a system that is really stuck still ends).
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..kernel.abi import NEVER, ZERO, CapRights, Fpage, IpcError, MapItem, StringItem, Timeout
from ..kernel.result import IpcResult
from ..user.context import UserContext

OPEN = 0x7F00          # reserved labels: open a connection (public gate), close it
CLOSE = 0x7F01
BUF = 1 << 40          # a server's string receive buffer, in its own space
BUF_SIZE = 64 << 10    # the largest string a request may carry
STAGE = BUF + (1 << 30)  # where a server puts the data of a string reply
CAP_BASE = 64          # selectors from here up are the library's (boot caps stay below)
VA_BASE = 1 << 42      # client-side buffers and mappings the library places
POLL_CYCLES = 20_000   # first liveness poll while requests wait
POLL_ROUNDS = 12       # polls in a row that found nobody gone before polling pauses
NAME_WORDS = 8         # a name: its length, then up to 7 words of UTF-8


class PosixError(OSError):
    """A POSIX error number from a server (or from the IPC to it)."""

    def __init__(self, err: int, what: str = "") -> None:
        super().__init__(err, os.strerror(err) + (f": {what}" if what else ""))


def ipc_errno(error: IpcError) -> int:
    """The error number a failed IPC to a server means to the caller."""
    if error in (IpcError.RETIMEOUT, IpcError.SETIMEOUT):
        return _errno.ETIMEDOUT
    if error in (IpcError.RECANCELED, IpcError.SECANCELED):
        return _errno.EINTR
    if error == IpcError.ENOT_EXISTENT:
        return _errno.EBADF
    if error in (IpcError.SEMSGCUT, IpcError.REMSGCUT):
        return _errno.EMSGSIZE
    return _errno.EIO


def pack_name(name: str) -> list[int]:
    """A name as words: its byte length, then its UTF-8 bytes, 8 per word."""
    raw = name.encode()
    if not raw or len(raw) > 8 * (NAME_WORDS - 1):
        raise PosixError(_errno.ENAMETOOLONG if raw else _errno.EINVAL, repr(name))
    raw += bytes(-len(raw) % 8)
    return [len(name.encode())] + [int.from_bytes(raw[i:i + 8], "little")
                                   for i in range(0, len(raw), 8)]


def unpack_name(words: Sequence[int]) -> str:
    n = words[0]
    raw = b"".join(w.to_bytes(8, "little") for w in words[1:1 + (n + 7) // 8])
    return raw[:n].decode(errors="replace")


# --- the declaration ---------------------------------------------------------------------


class Op:
    """One operation of a protocol: label, argument words, reply words, strings."""

    __slots__ = ("label", "name", "recv_string", "reply_words", "send_string", "words")

    def __init__(self, name: str, label: int, words: Sequence[str] = (),
                 reply_words: Sequence[str] = (), send_string: bool = False,
                 recv_string: bool = False) -> None:
        if not 0 < label < OPEN:
            raise ValueError(f"an operation's label is 1..{OPEN - 1}, got {label}")
        self.name = name
        self.label = label
        self.words = tuple(words)
        self.reply_words = tuple(reply_words)
        self.send_string = send_string
        self.recv_string = recv_string

    async def call(self, conn: Connection, *args: int, data: bytes | None = None,
                   recv: int = 0, timeout: Timeout = NEVER,
                   items: Sequence[MapItem] = (), window: Fpage | None = None) -> Response:
        """Invoke the operation on a connection: the words `args` (as declared), the
        string `data` if the operation sends one, a buffer of `recv` bytes for a string
        reply. Raises PosixError for an error reply or a failed IPC."""
        if len(args) != len(self.words):
            raise TypeError(f"{self.name} takes {len(self.words)} words "
                            f"({', '.join(self.words)}), got {len(args)}")
        return await conn.invoke(self, list(args), data, recv, timeout, items, window)

    def __repr__(self) -> str:
        return f"<Op {self.name} {self.label}>"


class Protocol:
    """A server's operations, declared once for the server and its clients."""

    def __init__(self, name: str, ops: Sequence[Op]) -> None:
        self.name = name
        self.ops = {op.label: op for op in ops}
        if len(self.ops) != len(ops):
            raise ValueError(f"protocol {name}: two operations share a label")

    def __repr__(self) -> str:
        return f"<Protocol {self.name}: {', '.join(op.name for op in self.ops.values())}>"


class Response:
    """What a successful call returned: the reply words and the string data, if any."""

    __slots__ = ("data", "op", "words")

    def __init__(self, op: Op, words: tuple[int, ...], data: bytes) -> None:
        self.op = op
        self.words = words
        self.data = data

    def __getattr__(self, name: str) -> int:
        try:
            return self.words[self.op.reply_words.index(name)]
        except (ValueError, IndexError):
            raise AttributeError(name) from None


# --- the client side ---------------------------------------------------------------------


class Env:
    """What the boot configuration gives a task, as L4Re's environment: a capability to
    the name server (and to the task itself), and the allocators of capability
    selectors and of address space for the library. Threads of one task share it."""

    def __init__(self, names_sel: int, task_sel: int = 0) -> None:
        self.names_sel = names_sel
        self.task_sel = task_sel
        self._next_cap = CAP_BASE
        self._free_caps: list[int] = []
        self._next_va = VA_BASE
        self.servers: dict[str, int] = {}           # server name -> public gate selector
        self.conns: dict[tuple[int, str], Connection] = {}

    def alloc_cap(self) -> int:
        if self._free_caps:
            return self._free_caps.pop()
        sel = self._next_cap
        self._next_cap += 1
        return sel

    def free_cap(self, sel: int) -> None:
        self._free_caps.append(sel)

    def alloc_va(self, size: int) -> int:
        """A naturally aligned region of at least `size` bytes (a power of two >= 4 KiB)."""
        size = max(4096, 1 << (size - 1).bit_length())
        base = (self._next_va + size - 1) & ~(size - 1)
        self._next_va = base + size
        return base

    async def connect(self, t: UserContext, server: str, wait: bool = True) -> Connection:
        """This thread's connection to `server` (found through the name server), opened
        on first use."""
        key = (t.tid, server)
        conn = self.conns.get(key)
        if conn is not None:
            return conn
        if server == "names":
            public = self.names_sel
        else:
            public = self.servers.get(server, 0)
            if not public:
                from .names import lookup  # the name server is a client of the framework too
                public = await lookup(t, self, server, wait=wait)
                self.servers[server] = public
        conn = await open_connection(t, self, public, server)
        self.conns[key] = conn
        return conn


class Connection:
    """A client thread's connection to one server: the gate it was given."""

    def __init__(self, t: UserContext, env: Env, server: str, gate: int) -> None:
        self.t = t
        self.env = env
        self.server = server
        self.gate = gate
        self.scratch = env.alloc_va(BUF_SIZE)  # where this thread's strings go and land

    async def invoke(self, op: Op, words: list[int], data: bytes | None, recv: int,
                     timeout: Timeout, items: Sequence[MapItem] = (),
                     window: Fpage | None = None) -> Response:
        t = self.t
        sitems: list[MapItem | StringItem] = list(items)
        if op.send_string:
            payload = data or b""
            if len(payload) > BUF_SIZE:
                raise PosixError(_errno.EMSGSIZE, f"{len(payload)} bytes")
            if payload:
                await t.store(self.scratch, payload)
            sitems.append(StringItem(self.scratch, len(payload)))
        buffers = [(self.scratch, min(recv, BUF_SIZE))] if op.recv_string else None
        r = await t.call(self.gate, words=words, label=op.label, items=sitems,
                         receive_timeout=timeout, window=window, buffers=buffers)
        return await self.decode(op, r)

    async def decode(self, op: Op, r: IpcResult) -> Response:
        if not r.ok:
            raise PosixError(ipc_errno(r.error), f"{self.server}.{op.name}")
        if r.tag.label < 0:
            raise PosixError(-r.tag.label, f"{self.server}.{op.name}")
        got = b""
        if op.recv_string and r.string_bytes and r.string_bytes[0]:
            got = await self.t.load(self.scratch, r.string_bytes[0])
        return Response(op, r.words, got)

    async def close(self) -> None:
        """Close the connection: the server releases what this thread held there."""
        t = self.t
        self.env.conns.pop((t.tid, self.server), None)
        r = await t.call(self.gate, label=CLOSE)
        if r.ok and r.tag.label < 0:
            raise PosixError(-r.tag.label, f"{self.server}.close")


async def open_connection(t: UserContext, env: Env, public: int, server: str) -> Connection:
    """OPEN on a server's public gate: our thread capability goes to the server, a
    connection gate comes back (an object flexpage into a selector we chose)."""
    sel = env.alloc_cap()
    r = await t.call(public, label=OPEN,
                     items=[MapItem(Fpage.obj(t.self_sel, 0, CapRights.R))],
                     window=Fpage.obj(sel, 0))
    if not r.ok or r.tag.label < 0:
        env.free_cap(sel)
        raise PosixError(-r.tag.label if r.ok else ipc_errno(r.error), f"open {server}")
    return Connection(t, env, server, sel)


# --- the server side ---------------------------------------------------------------------


class Conn:
    """The server's record of one connection."""

    __slots__ = ("gate_sel", "id", "pending", "state", "thread_sel")

    def __init__(self, cid: int, gate_sel: int, thread_sel: int) -> None:
        self.id = cid
        self.gate_sel = gate_sel          # the server's capability to the connection gate
        self.thread_sel = thread_sel      # the server's capability to the client thread
        self.pending: Request | None = None
        self.state: dict[str, Any] = {}   # what the server keeps per connection

    def __repr__(self) -> str:
        return f"<Conn {self.id}>"


class Request:
    """A request as the handler sees it."""

    __slots__ = ("conn", "data", "op", "undo", "words")

    def __init__(self, conn: Conn, op: Op, words: tuple[int, ...], data: bytes) -> None:
        self.conn = conn
        self.op = op
        self.words = words
        self.data = data
        self.undo: Callable[[], None] | None = None  # run if the request is abandoned

    def __getattr__(self, name: str) -> int:
        try:
            return self.words[self.op.words.index(name)]
        except (ValueError, IndexError):
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"<Request {self.op.name} {self.words} on {self.conn}>"


class Reply:
    """A handler's answer: words, typed items, string data, or an error number."""

    __slots__ = ("after", "data", "errno", "items", "on_fail", "words")

    def __init__(self, words: Sequence[int] = (), *, errno: int = 0,
                 items: Sequence[MapItem] = (), data: bytes | None = None,
                 on_fail: Callable[[], Awaitable[None]] | None = None,
                 after: Callable[[], Awaitable[None]] | None = None) -> None:
        self.words = list(words)
        self.errno = errno
        self.items = list(items)
        self.data = data
        self.on_fail = on_fail   # the reply did not reach the client: undo
        self.after = after       # to do once the reply is out (e.g. revoke)


class _Deferred:
    def __repr__(self) -> str:
        return "DEFER"


DEFER = _Deferred()
Outcome = Reply | _Deferred
H = TypeVar("H", bound=Callable[..., Awaitable[Outcome]])


def handles(op: Op) -> Callable[[H], H]:
    """Mark a server method as the handler of `op`."""
    def mark(fn: H) -> H:
        fn._l4sim_op = op  # type: ignore[attr-defined]
        return fn
    return mark


def error(err: int) -> Reply:
    return Reply(errno=err)


N = TypeVar("N")


def open_named(table: dict[str, N], name: str, flags: int) -> N | None:
    """The POSIX rule for opening a named object: the one in `table`, or None when the
    caller is to create it (O_CREAT). EEXIST for O_CREAT | O_EXCL on one that exists,
    ENOENT without O_CREAT on one that does not (raised, as a handler's error)."""
    obj = table.get(name)
    if obj is not None:
        if flags & os.O_CREAT and flags & os.O_EXCL:
            raise PosixError(_errno.EEXIST, f"{name} exists")
        return obj
    if not flags & os.O_CREAT:
        raise PosixError(_errno.ENOENT, f"no {name}")
    return None


class Server:
    """A server: its protocol and its handlers (methods marked with `@handles(op)`).

    The boot configuration gives it `gates`: (label, selector of the gate in the
    server's task) for each connection gate; `serve` is the thread body."""

    protocol: Protocol
    name: str = "server"

    def __init__(self) -> None:
        self.handlers: dict[int, Callable[[Request], Awaitable[Outcome]]] = {}
        for attr in dir(type(self)):
            fn = getattr(self, attr, None)
            op = getattr(fn, "_l4sim_op", None)
            if op is not None and callable(fn):
                if op.label not in self.protocol.ops:
                    raise ValueError(f"{type(self).__name__}.{attr} handles {op!r}, "
                                     f"not in {self.protocol!r}")
                self.handlers[op.label] = fn
        self.conns: dict[int, Conn] = {}
        self.free_gates: list[tuple[int, int]] = []
        self._t: UserContext | None = None
        self._next_cap = CAP_BASE
        self._free_caps: list[int] = []
        self._slot = 0
        self._br_slot = -1         # the slot the BRs' object window names now
        self._strings = any(op.send_string for op in self.protocol.ops.values())
        self.deferred = 0          # requests waiting in this server
        self._poll_rounds = 0
        self.stats: dict[str, int] = {"opened": 0, "closed": 0, "reaped": 0, "abandoned": 0}

    # --- hooks for a concrete server --------------------------------------------------

    async def on_disconnect(self, conn: Conn) -> None:
        """The connection closed, or its client is gone: release what it held."""

    def on_abandoned(self, req: Request) -> None:
        """A waiting request whose client stopped waiting (or is gone)."""
        if req.undo is not None:
            req.undo()

    # --- what handlers use --------------------------------------------------------------

    @property
    def t(self) -> UserContext:
        assert self._t is not None, "the server is not running"
        return self._t

    def defer(self, req: Request) -> _Deferred:
        """Keep `req` waiting; complete it later with `complete`."""
        req.conn.pending = req
        self.deferred += 1
        self._poll_rounds = 0
        return DEFER

    async def complete(self, req: Request, reply: Reply) -> bool:
        """Answer a waiting request: a zero-timeout send to its client's thread. False
        (and the reply's `on_fail`) if the client stopped waiting or is gone."""
        conn = req.conn
        if conn.pending is not req:
            return False
        conn.pending = None
        self.deferred -= 1
        items = await self._items_of(reply)
        r = await self.t.send(conn.thread_sel, words=reply.words, label=-reply.errno,
                              items=items, send_timeout=ZERO)
        if not r.ok:
            self.stats["abandoned"] += 1
            if reply.on_fail is not None:
                await reply.on_fail()
            return False
        if reply.after is not None:
            await reply.after()
        return True

    async def alive(self, conn: Conn) -> bool:
        """Whether the client thread of `conn` still exists (an ex_regs probe)."""
        return await self.t.ex_regs(conn.thread_sel) == IpcError.OK

    async def reap(self) -> int:
        """Close every connection whose client thread is gone; how many were."""
        gone = [c for c in list(self.conns.values()) if not await self.alive(c)]
        for conn in gone:
            self.stats["reaped"] += 1
            await self._drop(conn)
        return len(gone)

    # --- the loop ---------------------------------------------------------------------

    def _alloc_cap(self) -> int:
        if self._free_caps:
            return self._free_caps.pop()
        sel = self._next_cap
        self._next_cap += 1
        return sel

    def _receive_timeout(self) -> Timeout:
        if self.deferred and self._poll_rounds < POLL_ROUNDS:
            return Timeout.cycles(POLL_CYCLES << self._poll_rounds)
        return NEVER

    async def _items_of(self, reply: Reply) -> list[MapItem | StringItem]:
        items: list[MapItem | StringItem] = list(reply.items)
        if reply.data is not None:
            if reply.data:
                await self.t.store(STAGE, reply.data)
            items.append(StringItem(STAGE, len(reply.data)))
        return items

    async def _drop(self, conn: Conn) -> None:
        """Forget a connection: its waiting request, its resources, its gate (revoked
        from the client and back to the pool), our capability to its thread."""
        t = self.t
        if conn.pending is not None:
            req, conn.pending = conn.pending, None
            self.deferred -= 1
            self.on_abandoned(req)
        await self.on_disconnect(conn)
        del self.conns[conn.id]
        await t.unmap(Fpage.obj(conn.gate_sel, 0, CapRights.ALL))
        await t.unmap(Fpage.obj(conn.thread_sel, 0, CapRights.ALL), self_too=True)
        self._free_caps.append(conn.thread_sel)
        self.free_gates.append((conn.id, conn.gate_sel))
        self.stats["closed"] += 1

    async def _open(self, r: IpcResult) -> Reply:
        if r.tag.items != 1:
            return error(_errno.EINVAL)
        if not self.free_gates:
            await self.reap()
        if not self.free_gates:
            # The client's capability landed in our slot: take it back out.
            await self.t.unmap(Fpage.obj(self._slot, 0, CapRights.ALL), self_too=True)
            return error(_errno.EMFILE)
        cid, gate_sel = self.free_gates.pop()
        conn = Conn(cid, gate_sel, self._slot)
        self._slot = self._alloc_cap()
        self.conns[cid] = conn
        self.stats["opened"] += 1
        return Reply(items=[MapItem(Fpage.obj(gate_sel, 0, CapRights.R))])

    async def _dispatch(self, r: IpcResult) -> Outcome:
        label, op_label = r.label, r.tag.label
        if r.tag.items:
            self._br_slot = -1   # a received item or string changes the BRs: set them again
        if label == 0:
            return await self._open(r) if op_label == OPEN else error(_errno.EBADF)
        conn = self.conns.get(label)
        if conn is None:
            return error(_errno.EBADF)
        if conn.pending is not None:   # a new request: the old one was abandoned
            req, conn.pending = conn.pending, None
            self.deferred -= 1
            self.stats["abandoned"] += 1
            self.on_abandoned(req)
        if op_label == CLOSE:
            async def close() -> None:
                await self._drop(conn)
            return Reply(after=close)
        op = self.protocol.ops.get(op_label)
        handler = self.handlers.get(op_label)
        if op is None or handler is None:
            return error(_errno.ENOSYS)
        data = b""
        if op.send_string and r.string_bytes and r.string_bytes[0]:
            data = await self.t.load(BUF, r.string_bytes[0])
        try:
            return await handler(Request(conn, op, r.words, data))
        except PosixError as exc:
            return error(exc.errno or _errno.EIO)

    def _receive_regs(self) -> tuple[Fpage | None, list[tuple[int, int]] | None]:
        """The object window (our next free slot) and the string buffer, when the BRs do
        not hold them already: BRs stay until changed, and a receive that sets none
        can take the kernel's fast path. A protocol whose requests carry strings sets
        them on every receive: a fast-path receive woken by a long IPC reports no
        `string_bytes` (a kernel bug worked around here)."""
        if self._br_slot == self._slot and not self._strings:
            return None, None
        self._br_slot = self._slot
        return Fpage.obj(self._slot, 0), [(BUF, BUF_SIZE)]

    async def _wait(self) -> IpcResult:
        window, buffers = self._receive_regs()
        return await self.t.wait(receive_timeout=self._receive_timeout(), window=window,
                                 buffers=buffers)

    async def serve(self, t: UserContext, gates: Sequence[tuple[int, int]],
                    register: Callable[[UserContext], Awaitable[None]] | None = None) -> None:
        """The thread body: (register at the name server, then) receive, dispatch,
        reply, forever."""
        self._t = t
        self.free_gates = list(reversed(gates))
        self._slot = self._alloc_cap()
        if register is not None:
            await register(t)       # (its calls set our BRs: they are set again below)
        self._br_slot = -1
        r = await self._wait()
        while True:
            if not r.ok:
                if r.error == IpcError.RETIMEOUT:
                    self._poll_rounds = 0 if await self.reap() else self._poll_rounds + 1
                r = await self._wait()
                continue
            out = await self._dispatch(r)
            if isinstance(out, _Deferred):
                r = await self._wait()
                continue
            items = await self._items_of(out)
            if out.after is not None or out.on_fail is not None:
                sent = await t.reply(words=out.words, label=-out.errno, items=items)
                if not sent.ok and out.on_fail is not None:
                    await out.on_fail()
                if out.after is not None:
                    await out.after()
                r = await self._wait()
                continue
            window, buffers = self._receive_regs()
            r = await t.reply_and_wait(words=out.words, label=-out.errno, items=items,
                                       receive_timeout=self._receive_timeout(),
                                       window=window, buffers=buffers)
