"""The name server: names for gates, so that programs find servers without host wiring.

A server registers its public gate under a name: REGISTER carries the name in words and
a capability to the gate as an object flexpage, which lands in the name server's object
space. LOOKUP maps a capability to the gate (read right: invoke only) into the object
window the client offers. A lookup of a name nobody registered yet waits until it is
registered (`wait=True`, the default, as a program started beside its servers needs)
or fails at once with ENOENT. Every task's environment holds a capability to the name
server (the boot configuration's one piece of wiring).

When a registering client goes away its names stay (a server usually outlives the
connection it registered with); UNREGISTER removes a name, and ENOENT if it is not
there.
"""

from __future__ import annotations

import errno

from ..kernel.abi import CapRights, Fpage, MapItem
from ..user.context import UserContext
from .framework import (
    NAME_WORDS,
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

_NAME = tuple(f"n{i}" for i in range(NAME_WORDS))
REGISTER = Op("register", 1, _NAME)
LOOKUP = Op("lookup", 2, (*_NAME[:-1], "wait"))
UNREGISTER = Op("unregister", 3, _NAME)
LIST = Op("list", 4, (), ("count",))
PROTOCOL = Protocol("names", [REGISTER, LOOKUP, UNREGISTER, LIST])


def _name_words(name: str, n: int) -> list[int]:
    words = pack_name(name)
    if len(words) > n:
        raise PosixError(errno.ENAMETOOLONG, repr(name))
    return words + [0] * (n - len(words))


class NameServer(Server):
    protocol = PROTOCOL
    name = "names"

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[str, int] = {}           # name -> our selector for the gate
        self.waiting: dict[str, list[Request]] = {}

    @handles(REGISTER)
    async def register(self, req: Request) -> Reply:
        sel = self._slot  # the gate capability landed in our object window
        name = unpack_name(req.words)
        if name in self.names:
            await self.t.unmap(Fpage.obj(sel, 0, CapRights.ALL), self_too=True)
            return error(errno.EEXIST)
        self.names[name] = sel
        self._slot = self._alloc_cap()
        for waiter in self.waiting.pop(name, []):
            await self.complete(waiter, self._answer(sel))
        return Reply()

    def _answer(self, sel: int) -> Reply:
        return Reply(items=[MapItem(Fpage.obj(sel, 0, CapRights.R))])

    @handles(LOOKUP)
    async def lookup(self, req: Request) -> Outcome:
        name = unpack_name(req.words)
        sel = self.names.get(name)
        if sel is not None:
            return self._answer(sel)
        if not req.wait:
            return error(errno.ENOENT)
        self.waiting.setdefault(name, []).append(req)
        return self.defer(req)

    @handles(UNREGISTER)
    async def unregister(self, req: Request) -> Reply:
        sel = self.names.pop(unpack_name(req.words), None)
        if sel is None:
            return error(errno.ENOENT)
        await self.t.unmap(Fpage.obj(sel, 0, CapRights.ALL), self_too=True)
        self._free_caps.append(sel)
        return Reply()

    @handles(LIST)
    async def count(self, req: Request) -> Reply:
        return Reply([len(self.names)])

    def on_abandoned(self, req: Request) -> None:
        for waiters in self.waiting.values():
            if req in waiters:
                waiters.remove(req)


async def lookup(t: UserContext, env: Env, name: str, wait: bool = True) -> int:
    """A capability to the gate registered as `name`: its selector in our task."""
    conn = await env.connect(t, "names")
    sel = env.alloc_cap()
    try:
        await LOOKUP.call(conn, *_name_words(name, NAME_WORDS - 1), int(wait),
                          window=Fpage.obj(sel, 0))
    except PosixError:
        env.free_cap(sel)
        raise
    return sel


async def register(t: UserContext, env: Env, name: str, gate_sel: int) -> None:
    """Register the gate `gate_sel` (a selector in our task) as `name`."""
    conn = await env.connect(t, "names")
    await REGISTER.call(conn, *_name_words(name, NAME_WORDS),
                        items=[MapItem(Fpage.obj(gate_sel, 0, CapRights.R))])


async def unregister(t: UserContext, env: Env, name: str) -> None:
    conn = await env.connect(t, "names")
    await UNREGISTER.call(conn, *_name_words(name, NAME_WORDS))
