"""The server framework on its own: a protocol declared once, a server of handlers, a
client calling the same declaration; errors as errno; deferred replies; closing."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from l4sim import Timeout
from l4sim.lib.boot import System
from l4sim.lib.framework import (
    DEFER,
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
    pack_name,
    unpack_name,
)
from posix_helpers import errno_of, kernel

ADD = Op("add", 1, ("n",), ("total", "calls"))
TAKE = Op("take", 2, ("n",))           # waits until the total reaches n
ECHO = Op("echo", 3, (), send_string=True, recv_string=True)
NOPE = Op("nope", 4)                   # declared, no handler
COUNTER = Protocol("counter", [ADD, TAKE, ECHO, NOPE])


class CounterServer(Server):
    protocol = COUNTER

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.takers: list[Request] = []

    @handles(ADD)
    async def add(self, req: Request) -> Outcome:
        if req.n == 0:
            return error(errno.EINVAL)
        self.total += req.n
        req.conn.state["calls"] = req.conn.state.get("calls", 0) + 1
        for taker in [tk for tk in self.takers if tk.n <= self.total]:
            self.takers.remove(taker)
            self.total -= taker.n
            await self.complete(taker, Reply([taker.n]))
        return Reply([self.total, req.conn.state["calls"]])

    @handles(TAKE)
    async def take(self, req: Request) -> Outcome:
        if req.n <= self.total:
            self.total -= req.n
            return Reply([req.n])
        self.takers.append(req)
        req.undo = lambda: self.takers.remove(req)
        return self.defer(req)

    @handles(ECHO)
    async def echo(self, req: Request) -> Outcome:
        return Reply(data=req.data[::-1])


def test_protocol_declared_once_serves_and_calls() -> None:
    out: dict[str, Any] = {}

    async def adder(t: Any, env: Env) -> None:
        conn = await env.connect(t, "counter")
        r = await ADD.call(conn, 5)
        out["first"] = (r.total, r.calls)
        out["zero"] = await errno_of(ADD.call(conn, 0))
        out["nope"] = await errno_of(NOPE.call(conn))
        out["echo"] = (await ECHO.call(conn, data=b"hello", recv=16)).data
        with pytest.raises(TypeError):
            await ADD.call(conn)
        await t.sleep(Timeout.us(50))
        r = await ADD.call(conn, 10)             # completes the waiting taker
        out["second"] = (r.total, r.calls)
        await conn.close()
        out["closed"] = await errno_of(ADD.call(conn, 1))

    async def taker(t: Any, env: Env) -> None:
        conn = await env.connect(t, "counter")
        out["timed out"] = await errno_of(TAKE.call(conn, 100, timeout=Timeout.us(10)))
        out["took"] = (await TAKE.call(conn, 12)).words
        out["took at"] = t.now

    k = kernel()
    system = System(k, [])
    system.start(CounterServer(), "counter")
    system.process("adder").thread(adder, name="adder")
    system.process("taker").thread(taker, name="taker")
    result = k.run()
    assert result.reason == "done" and not result.died, result
    assert out == {"first": (5, 1), "zero": errno.EINVAL, "nope": errno.ENOSYS,
                   "echo": b"olleh", "second": (3, 2), "closed": errno.EBADF,
                   "timed out": errno.ETIMEDOUT, "took": (12,), "took at": out["took at"]}
    assert system.servers["counter"].stats["opened"] == 2


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError):
        Op("bad", 0)
    with pytest.raises(ValueError):
        Protocol("p", [Op("a", 1), Op("b", 1)])

    class Wrong(Server):
        protocol = Protocol("p", [Op("a", 1)])

        @handles(Op("b", 2))
        async def b(self, req: Request) -> Outcome:
            return DEFER

    with pytest.raises(ValueError):
        Wrong()


def test_names_pack_and_errors() -> None:
    assert unpack_name(pack_name("/queue-1")) == "/queue-1"
    with pytest.raises(PosixError) as exc:
        pack_name("x" * 100)
    assert exc.value.errno == errno.ENAMETOOLONG
    assert isinstance(exc.value, OSError)
