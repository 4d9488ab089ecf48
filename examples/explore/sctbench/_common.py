"""What the SCTBench ports share: the C program as a `Program` (one task; main() and the
threads it creates with pthread_create/pthread_join as IPC), shared words in l4sim
memory, and pthread mutexes and condition variables as a lock server (the lecture's
synchronization thread).

Shared variables live in the application task's memory, at `word(i)`; threads read and
write them with `await t.load_word` / `await t.store_word`, which the explorer sees (and
may preempt at), unlike Python objects. Negative C ints are stored as 64-bit two's
complement: `signed()` reads them back.

The lock server runs in a task of its own at a priority above the application's, so a
lock operation is one atomic step for the application threads: the explorer interleaves
the callers, not the server. A caller whose LOCK finds the mutex held (or who waits on a
condition) gets no reply yet; the server answers it later with a zero-timeout send to
its thread, which its `call` is still waiting for (a deferred reply: a server has only
the implicit reply capability of its last caller). Waiters are served first come, first
served. No timeouts: a program that deadlocks leaves its threads blocked in calls to an
idle server, which the kernel reports as a deadlock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from l4sim import IpcError, Kernel, Timeout

BASE = 0x10000           # first shared word of the application task
OBJECTS = 0x20000        # the words of the mutexes and condition variables
APP_PRIO = 100           # the threads the explorer interleaves
SERVER_PRIO = 200        # the lock server: above the application, so its steps are atomic

LOCK, UNLOCK, WAIT, SIGNAL, BROADCAST = 1, 2, 3, 4, 5
_OPS = {LOCK: "lock", UNLOCK: "unlock", WAIT: "cond_wait", SIGNAL: "signal",
        BROADCAST: "broadcast"}

Body = Callable[..., Coroutine[Any, Any, Any]]


def word(i: int) -> int:
    """The address of shared word `i`."""
    return BASE + 8 * i


def signed(v: int) -> int:
    """A 64-bit word read back as a signed C int."""
    return v - (1 << 64) if v >= 1 << 63 else v


def unsigned(v: int) -> int:
    """A (possibly negative) int as the 64-bit word that stores it."""
    return v & ((1 << 64) - 1)


def read_word(k: Kernel, task: Any, addr: int) -> int:
    """Host side (check()): the word at `addr` in `task`'s memory; 0 where no thread
    ever touched the page (anonymous memory is zeroed on first touch)."""
    m = task.space.lookup(addr)
    if m is None:
        return 0
    at = m.phys + addr - m.base
    return int.from_bytes(bytes(k.phys.view[at:at + 8]), "little")


async def _server(t: Any, caps: dict[int, int]) -> None:
    """The lock server. `caps` maps a client's tid (the label its direct IPC arrives
    with) to this task's capability for it (for the deferred reply)."""
    owner: dict[int, int] = {}                            # mutex -> tid holding it
    queued: dict[int, deque[int]] = {}                    # mutex -> tids waiting for it
    sleeping: dict[int, deque[tuple[int, int]]] = {}      # cond -> (tid, its mutex)
    r = await t.wait()
    while True:
        who, op = r.label, r.tag.label
        wake: list[int] = []
        answer: int | None = 0                            # None: the reply is deferred

        if not r.ok:
            answer = 1
        elif op == LOCK:
            m = r.words[0]
            if m not in owner:
                owner[m] = who
            elif owner[m] == who:
                answer = 1                                # relock by the owner: EDEADLK
            else:
                queued.setdefault(m, deque()).append(who)
                answer = None
        elif op == UNLOCK:
            m = r.words[0]
            if owner.get(m) != who:
                answer = 1                                # not the owner: EPERM
            else:
                _release(owner, queued, m, wake)
        elif op == WAIT:
            c, m = r.words[0], r.words[1]
            if owner.get(m) != who:
                answer = 1
            else:
                sleeping.setdefault(c, deque()).append((who, m))
                _release(owner, queued, m, wake)
                answer = None
        elif op in (SIGNAL, BROADCAST):
            c = r.words[0]
            q = sleeping.get(c, deque())
            for _ in range(len(q) if op == BROADCAST else min(1, len(q))):
                tid, m = q.popleft()                      # back to contending for m
                if m in owner:
                    queued.setdefault(m, deque()).append(tid)
                else:
                    owner[m] = tid
                    wake.append(tid)
        else:
            answer = 1
        for tid in wake:     # ready, behind the threads already ready
            await t.send(caps[tid], words=[0], send_timeout=Timeout.zero())
        # Reply and wait in one step: the kernel switches straight back to the caller,
        # which goes on as a thread that did not block would (no yield at every lock).
        r = await (t.reply_and_wait(words=[answer]) if answer is not None else t.wait())


def _release(owner: dict[int, int], queued: dict[int, deque[int]], m: int,
             wake: list[int]) -> None:
    """Unlock `m`: hand it to its first waiter (whose LOCK or WAIT then returns)."""
    q = queued.get(m)
    if q:
        owner[m] = q.popleft()
        wake.append(owner[m])
    else:
        owner.pop(m, None)


class Sync:
    """pthread mutexes and condition variables for the threads of one task.

    `sync = Sync(k, task)`; threads made with `sync.thread(...)` (so the server can
    answer them later); in a body: `await sync.lock(t, M)`, `await sync.unlock(t, M)`,
    `await sync.wait(t, C, M)`, `await sync.signal(t, C)`. Mutexes and condition
    variables are plain numbers chosen by the program (no init call needed)."""

    def __init__(self, k: Kernel, task: Any) -> None:
        self.k = k
        self.task = task
        self.caps: dict[int, int] = {}
        self.server_task = k.new_task("sync")
        self.server = self.server_task.new_thread(_server, self.caps, name="sync",
                                                  priority=SERVER_PRIO)
        self.sel = task.add_cap(self.server)

    def thread(self, body: Body, *args: Any, name: str, priority: int = APP_PRIO) -> Any:
        """A thread of the application task that may use the server."""
        th = self.task.new_thread(body, *args, name=name, priority=priority)
        self.caps[th.tid] = self.server_task.add_cap(th)
        return th

    async def _call(self, t: Any, op: int, *words: int) -> None:
        # (A scheduler may switch threads right before a pthread call, as SCTBench's
        # does: the explorer may too, before a system call that follows a shared load
        # or store.)
        r = await t.call(self.sel, words=list(words), label=op)
        if not r.ok or r.words[0] != 0:
            raise RuntimeError(f"pthread_{_OPS[op]}{words} failed: "
                               f"{r.error.name if not r.ok else 'refused'}")

    async def lock(self, t: Any, m: int) -> None:
        await self._call(t, LOCK, m)

    async def unlock(self, t: Any, m: int) -> None:
        await self._call(t, UNLOCK, m)

    async def wait(self, t: Any, c: int, m: int) -> None:
        """pthread_cond_wait: give `m` up and sleep; hold `m` again on return."""
        await self._call(t, WAIT, c, m)

    async def signal(self, t: Any, c: int) -> None:
        await self._call(t, SIGNAL, c)

    async def broadcast(self, t: Any, c: int) -> None:
        await self._call(t, BROADCAST, c)


class Program:
    """A C program: its process (the application task), its lock server, its main()
    and the threads main() creates.

    pthread_create and pthread_join are IPC with main, as on L4: every thread starts
    blocked in a receive from main, and `await prog.create(t, name)` (in main) is the
    send that starts it; a thread made with `joined=True` ends with a send to main,
    which `await prog.join(t, name)` receives. So a thread's first step is a return
    from the kernel, where the explorer may switch to another thread before it does
    anything, as a scheduler may run a new thread at once or much later."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.task = k.new_task("app")
        self.sync = Sync(k, self.task)
        self.sels: dict[str, int] = {}      # thread name -> its selector in the app task
        self.threads: dict[str, Any] = {}

    def thread(self, body: Body, *args: Any, name: str, joined: bool = True) -> Any:
        """A thread that runs `body(t, *args)` once main creates it. Make every thread
        before main: they run first, each up to its receive from main."""
        th = self.sync.thread(_started, self, body, args, joined, name=name)
        self.sels[name] = self.task.add_cap(th)
        self.threads[name] = th
        return th

    def main(self, body: Body, *args: Any) -> Any:
        """main(): `body(t, prog, *args)`, at the application's priority."""
        th = self.sync.thread(body, self, *args, name="main")
        self.sels["main"] = self.task.add_cap(th)
        self.threads["main"] = th
        return th

    async def create(self, t: Any, name: str) -> None:
        """pthread_create: start the thread `name`."""
        r = await t.send(self.sels[name], words=[0])
        if not r.ok:
            raise RuntimeError(f"pthread_create({name}) failed: {r.error.name}")

    async def join(self, t: Any, name: str) -> None:
        """pthread_join: wait until the thread `name` has ended."""
        r = await t.receive(self.sels[name])
        # A thread that died (of a failed assertion) is gone: that failure is the
        # run's, so the join just returns instead of adding one of its own.
        if not r.ok and r.error != IpcError.ENOT_EXISTENT:
            raise RuntimeError(f"pthread_join({name}) failed: {r.error.name}")

    def read(self, addr: int) -> int:
        """Host side (check()): a shared word at the end of the run."""
        return read_word(self.k, self.task, addr)


async def _started(t: Any, prog: Program, body: Body, args: tuple[Any, ...],
                   joined: bool) -> Any:
    """A created thread: wait for main's pthread_create, run, tell a joining main."""
    await t.receive(prog.sels["main"])
    result = await body(t, *args)
    if joined:
        await t.send(prog.sels["main"], words=[0])
    return result


def program_of(k: Kernel) -> Program:
    """Host side (check()): the Program that build() made (main's first argument)."""
    main_thread = next(th for th in k.threads.values() if th.name == "main")
    prog: Program = main_thread.args[0]
    return prog
