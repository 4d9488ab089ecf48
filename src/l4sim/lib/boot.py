"""Booting a POSIX-like system: the host-side configuration, as a root task would do it.

`System(k)` starts the name server and the servers asked for, each in its own task with
its public gate, a pool of connection gates and a capability to the name server; every
server registers its public gate under its name when it starts. `system.process(name)`
makes a task with an environment (`Env`): a capability to the name server and to the
task itself. Its threads run `body(t, env, *args)` and find every server by name.

    k = Kernel()
    system = System(k)                       # names, sem, sync, mq, pipe, shm, signal
    app = system.process("app")
    app.thread(main)                         # async def main(t, env): ...
    k.run()
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ..kernel.abi import CapRights
from ..kernel.kernel import Kernel
from ..kernel.objects import Task, Thread
from ..user.context import UserContext
from .framework import Env, Server
from .names import NameServer, register

SERVER_PRIORITY = 150
POOL = 16


_MODULES = {"sem": "semaphore.SemServer", "sync": "sync.SyncServer", "mq": "mqueue.MqServer",
            "pipe": "pipe.PipeServer", "shm": "shm.ShmServer", "signal": "signals.SignalServer"}


def server_class(name: str) -> Callable[[], Server]:
    """The server class of one of the library's servers, by its name."""
    import importlib
    module, cls = _MODULES[name].split(".")
    found: Callable[[], Server] = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    return found


ALL_SERVERS = ("sem", "sync", "mq", "pipe", "shm", "signal")


class Process:
    """A task with an environment; `thread` starts `body(t, env, *args)` in it."""

    def __init__(self, system: System, task: Task, env: Env) -> None:
        self.system = system
        self.task = task
        self.env = env

    def thread(self, body: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: str | None = None,
               priority: int = 100, cpu: int = 0, **kw: Any) -> Thread:
        return self.task.new_thread(body, self.env, *args, name=name, priority=priority,
                                    cpu=cpu, **kw)


class System:
    """The name server and the POSIX servers, each in its own task. `pool`: connection
    gates per server (client threads connected at once); `cpus`: the servers are spread
    over these CPUs (default: CPU 0)."""

    def __init__(self, k: Kernel, servers: Sequence[str] = ALL_SERVERS, *,
                 priority: int = SERVER_PRIORITY, pool: int = POOL, names_pool: int = 64,
                 cpus: Sequence[int] | None = None) -> None:
        self.k = k
        self.pool = pool
        self.priority = priority
        self.servers: dict[str, Server] = {}
        self.threads: dict[str, Thread] = {}
        self._cpus = list(cpus) if cpus else [0]
        names = NameServer()
        task = k.new_task("names")
        self.pool = names_pool   # every server and client thread connects to the names
        self._start(names, task, None, cpu=self._cpus[0])
        self.pool = pool
        self.names_gate = self._public
        for i, name in enumerate(servers):
            self.start(server_class(name)(), name, cpu=self._cpus[(i + 1) % len(self._cpus)])

    def _start(self, server: Server, task: Task, env: Env | None, cpu: int) -> Thread:
        k = self.k
        holder: list[Thread] = []

        async def body(t: UserContext) -> None:
            reg = None
            if env is not None:
                async def reg_fn(t: UserContext) -> None:
                    await register(t, env, server.name, public_sel)
                reg = reg_fn
            await server.serve(t, gates, reg)

        th = task.new_thread(body, name=server.name, priority=self.priority, cpu=cpu)
        holder.append(th)
        public = k.new_gate(th, label=0, name=f"{server.name}-public")
        public_sel = task.add_cap(public)
        gates = []
        for i in range(1, self.pool + 1):
            gate = k.new_gate(th, label=i, name=f"{server.name}-{i}")
            gates.append((i, task.add_cap(gate)))
        self._public = public
        self.servers[server.name] = server
        self.threads[server.name] = th
        return th

    def start(self, server: Server, name: str | None = None, cpu: int = 0) -> Thread:
        """Start another server (any `Server`) in its own task; it registers as `name`."""
        if name is not None:
            server.name = name
        task = self.k.new_task(server.name)
        env = Env(task.add_cap(self.names_gate), task.add_cap(task))
        return self._start(server, task, env, cpu)

    def process(self, name: str) -> Process:
        task = self.k.new_task(name)
        env = Env(task.add_cap(self.names_gate), task.add_cap(task, CapRights.ALL))
        return Process(self, task, env)
