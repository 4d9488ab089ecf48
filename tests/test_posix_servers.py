"""The POSIX servers of l4sim.lib: every error case, blocking and waking, and what each
server does when a client goes away. Every kernel runs with check=True; the tests
marked with `cpus` run on one CPU and on two (skipped while Kernel(cpus=2) raises)."""

from __future__ import annotations

import os
import signal
from errno import (
    EACCES,
    EAGAIN,
    EBADF,
    EBUSY,
    EDEADLK,
    EEXIST,
    EINVAL,
    EMFILE,
    EMSGSIZE,
    ENOENT,
    ENXIO,
    EOVERFLOW,
    EPERM,
    EPIPE,
    ESRCH,
    ETIMEDOUT,
)
from typing import Any

from l4sim import Kernel, Timeout
from l4sim.lib.boot import System
from l4sim.lib.framework import Env, PosixError
from l4sim.lib.mqueue import MessageQueue
from l4sim.lib.names import lookup, register
from l4sim.lib.pipe import PIPE_BUF, PIPE_CAPACITY, Pipe
from l4sim.lib.semaphore import SEM_VALUE_MAX, Semaphore
from l4sim.lib.shm import SharedMemory
from l4sim.lib.signals import SIG_BLOCK, SIG_DFL, SIG_IGN, SIG_SETMASK, SIG_UNBLOCK, Signals
from l4sim.lib.sync import Cond, Mutex
from posix_helpers import CPUS, errno_of, kernel, run

CREAT, EXCL = os.O_CREAT, os.O_EXCL
US = Timeout.us


def done(result: Any) -> None:
    assert result.reason == "done", result
    assert not result.died, result.died


# --- semaphore --------------------------------------------------------------------------


@CPUS
def test_semaphore_errors_and_values(cpus: int) -> None:
    out: dict[str, Any] = {}

    async def body(t: Any, env: Env) -> None:
        out["open missing"] = await errno_of(Semaphore.open(t, env, "/s"))
        out["too big"] = await errno_of(Semaphore.open(t, env, "/s", CREAT, SEM_VALUE_MAX + 1))
        s = await Semaphore.open(t, env, "/s", CREAT, 1)
        out["excl"] = await errno_of(Semaphore.open(t, env, "/s", CREAT | EXCL, 0))
        out["trywait 1"] = await errno_of(s.trywait())
        out["trywait 0"] = await errno_of(s.trywait())
        out["timedwait"] = await errno_of(s.timedwait(US(5)))
        out["waited until"] = t.now
        big = await Semaphore.open(t, env, "/big", CREAT, SEM_VALUE_MAX)
        out["overflow"] = await errno_of(big.post())
        await s.post()
        await s.post()
        out["value"] = await s.value()
        await Semaphore.unlink(t, env, "/s")
        out["unlink again"] = await errno_of(Semaphore.unlink(t, env, "/s"))
        out["still usable"] = await errno_of(s.wait())
        await s.close()
        out["closed"] = await errno_of(s.post())

    _, result, _, _ = run([("app", body, ())], ["sem"], cpus)
    done(result)
    assert out == {"open missing": ENOENT, "too big": EINVAL, "excl": EEXIST, "trywait 1": 0,
                   "trywait 0": EAGAIN, "timedwait": ETIMEDOUT, "waited until": out["waited until"],
                   "overflow": EOVERFLOW, "value": 2, "unlink again": ENOENT, "still usable": 0,
                   "closed": EINVAL}


@CPUS
def test_semaphore_wakes_waiters_in_order_and_skips_the_dead(cpus: int) -> None:
    """Three waiters; the second is deleted while it waits; two posts wake the first and
    the third: no unit goes to the dead one."""
    woke: list[str] = []

    async def waiter(t: Any, env: Env, delay: int) -> None:
        await t.sleep(US(delay))
        s = await Semaphore.open(t, env, "/s", CREAT, 0)
        await s.wait()
        woke.append(t.name)

    async def poster(t: Any, env: Env, victim: list[Any]) -> None:
        await t.sleep(US(100))
        await t.delete(victim[0])
        s = await Semaphore.open(t, env, "/s", CREAT, 0)
        await s.post()
        await s.post()
        await t.sleep(US(50))
        woke.append(f"value {await s.value()}")

    k = kernel(cpus)
    system = System(k, ["sem"])
    for i, name in enumerate(["w1", "w2", "w3"]):
        th = system.process(name).thread(waiter, 10 * (i + 1), name=name, cpu=i % cpus)
        if name == "w2":
            victim = th
    ptask = system.process("poster")
    sel = ptask.task.add_cap(victim)
    ptask.thread(poster, [sel], name="poster")
    result = k.run()
    assert [(th.name, why) for th, why in result.died] == [("w2", "deleted")]
    assert woke == ["w1", "w3", "value 0"]


def test_semaphore_timed_out_waiter_does_not_swallow_a_post() -> None:
    got: list[Any] = []

    async def waiter(t: Any, env: Env) -> None:
        s = await Semaphore.open(t, env, "/s", CREAT, 0)
        got.append(await errno_of(s.timedwait(US(20))))
        await t.sleep(US(100))
        got.append(await s.value())            # the post after our timeout is still there

    async def poster(t: Any, env: Env) -> None:
        await t.sleep(US(50))
        s = await Semaphore.open(t, env, "/s", CREAT, 0)
        await s.post()

    _, result, _, _ = run([("w", waiter, ()), ("p", poster, ())], ["sem"])
    done(result)
    assert got == [ETIMEDOUT, 1]


# --- mutex and condition variable -------------------------------------------------------


@CPUS
def test_mutex_errors(cpus: int) -> None:
    out: dict[str, int] = {}

    async def owner(t: Any, env: Env) -> None:
        m = await Mutex.open(t, env, "m")
        await m.lock()
        out["relock"] = await errno_of(m.lock())
        c = await Cond.open(t, env, "c")
        out["cond timed"] = await errno_of(c.wait(m, US(10)))
        out["holds after timeout"] = await errno_of(m.trylock())   # EDEADLK: still ours
        await t.sleep(US(100))
        await m.unlock()

    async def other(t: Any, env: Env) -> None:
        await t.sleep(US(30))
        m = await Mutex.open(t, env, "m")
        c = await Cond.open(t, env, "c")
        out["trylock held"] = await errno_of(m.trylock())
        out["unlock not owner"] = await errno_of(m.unlock())
        out["cond without mutex"] = await errno_of(c.wait(m))
        out["timedlock"] = await errno_of(m.lock(US(10)))
        out["lock"] = await errno_of(m.lock())
        await m.unlock()

    _, result, _, _ = run([("owner", owner, ()), ("other", other, ())], ["sync"], cpus)
    done(result)
    assert out == {"relock": EDEADLK, "cond timed": ETIMEDOUT, "holds after timeout": EDEADLK,
                   "trylock held": EBUSY, "unlock not owner": EPERM, "cond without mutex": EPERM,
                   "timedlock": ETIMEDOUT, "lock": 0}


@CPUS
def test_mutex_of_a_deleted_owner_goes_to_the_next_waiter(cpus: int) -> None:
    got: list[Any] = []

    async def owner(t: Any, env: Env) -> None:
        m = await Mutex.open(t, env, "m")
        await m.lock()
        got.append("owner locked")
        await t.sleep(Timeout.never())           # holds it until deleted

    async def waiter(t: Any, env: Env) -> None:
        await t.sleep(US(10))
        m = await Mutex.open(t, env, "m")
        await m.lock()
        got.append(("waiter locked", t.now))

    async def killer(t: Any, env: Env, sel: list[int]) -> None:
        await t.sleep(US(50))
        got.append(("delete", t.now))
        await t.delete(sel[0])

    k = kernel(cpus)
    system = System(k, ["sync"])
    o = system.process("owner").thread(owner, name="owner")
    system.process("waiter").thread(waiter, name="waiter", cpu=1 % cpus)
    kp = system.process("killer")
    kp.thread(killer, [kp.task.add_cap(o)], name="killer")
    result = k.run()
    assert [(th.name, why) for th, why in result.died] == [("owner", "deleted")]
    assert got[0] == "owner locked" and got[1][0] == "delete" and got[2][0] == "waiter locked"
    assert got[2][1] > got[1][1]
    assert system.servers["sync"].stats["reaped"] >= 1


def test_condition_broadcast_wakes_all_with_the_mutex_one_at_a_time() -> None:
    order: list[str] = []

    async def waiter(t: Any, env: Env) -> None:
        m, c = await Mutex.open(t, env, "m"), await Cond.open(t, env, "c")
        await m.lock()
        await c.wait(m)
        order.append(t.name)
        await t.sleep(US(5))                     # holding the mutex: the others wait
        await m.unlock()

    async def waker(t: Any, env: Env) -> None:
        await t.sleep(US(50))
        m, c = await Mutex.open(t, env, "m"), await Cond.open(t, env, "c")
        await m.lock()
        await c.broadcast()
        await c.signal()                         # nobody left: nothing happens
        order.append("broadcast")
        await m.unlock()

    _, result, _, _ = run([("a", waiter, ()), ("b", waiter, ()), ("z", waker, ())], ["sync"])
    done(result)
    assert order == ["broadcast", "a", "b"]


# --- message queue ----------------------------------------------------------------------


@CPUS
def test_message_queue_errors(cpus: int) -> None:
    out: dict[str, Any] = {}

    async def body(t: Any, env: Env) -> None:
        out["missing"] = await errno_of(MessageQueue.open(t, env, "/q"))
        out["bad attr"] = await errno_of(MessageQueue.open(t, env, "/q", CREAT, 0, 1 << 20))
        q = await MessageQueue.open(t, env, "/q", CREAT | os.O_RDWR, 2, 8)
        out["excl"] = await errno_of(MessageQueue.open(t, env, "/q", CREAT | EXCL))
        out["too long"] = await errno_of(q.send(b"123456789"))
        out["bad prio"] = await errno_of(q.send(b"x", 32768))
        out["small buffer"] = await errno_of(q.receive(4))
        await q.send(b"a", 1)
        await q.send(b"b", 2)
        out["full timed"] = await errno_of(q.send(b"c", 0, US(10)))
        q.nonblock = True
        out["full nonblock"] = await errno_of(q.send(b"c"))
        out["attr"] = await q.attributes()
        out["got"] = [await q.receive(), await q.receive()]
        out["empty nonblock"] = await errno_of(q.receive())
        q.nonblock = False
        out["empty timed"] = await errno_of(q.receive(timeout=US(10)))
        ro = await MessageQueue.open(t, env, "/q", os.O_RDONLY)
        wo = await MessageQueue.open(t, env, "/q", os.O_WRONLY)
        out["send on read-only"] = await errno_of(ro.send(b"x"))
        out["receive on write-only"] = await errno_of(wo.receive())
        await MessageQueue.unlink(t, env, "/q")
        out["unlink again"] = await errno_of(MessageQueue.unlink(t, env, "/q"))
        await q.close()
        out["closed"] = await errno_of(q.send(b"x"))

    _, result, _, _ = run([("app", body, ())], ["mq"], cpus)
    done(result)
    assert out == {"missing": ENOENT, "bad attr": EINVAL, "excl": EEXIST, "too long": EMSGSIZE,
                   "bad prio": EINVAL, "small buffer": EMSGSIZE, "full timed": ETIMEDOUT,
                   "full nonblock": EAGAIN, "attr": (2, 8, 2), "got": [(b"b", 2), (b"a", 1)],
                   "empty nonblock": EAGAIN, "empty timed": ETIMEDOUT,
                   "send on read-only": EBADF, "receive on write-only": EBADF,
                   "unlink again": ENOENT, "closed": EBADF}


def test_message_queue_blocked_sender_that_dies_leaves_no_message() -> None:
    out: list[Any] = []

    async def filler(t: Any, env: Env) -> None:
        q = await MessageQueue.open(t, env, "/q", CREAT | os.O_WRONLY, 1, 8)
        await q.send(b"first")
        await q.send(b"doomed")                  # blocks: the queue is full; deleted here

    async def reader(t: Any, env: Env, sel: list[int]) -> None:
        await t.sleep(US(50))
        await t.delete(sel[0])
        q = await MessageQueue.open(t, env, "/q", os.O_RDONLY)
        out.append(await q.receive())
        q.nonblock = True
        out.append(await errno_of(q.receive()))

    k = kernel()
    system = System(k, ["mq"])
    f = system.process("filler").thread(filler, name="filler")
    rp = system.process("reader")
    rp.thread(reader, [rp.task.add_cap(f)], name="reader")
    result = k.run()
    assert [(th.name, why) for th, why in result.died] == [("filler", "deleted")]
    assert out == [(b"first", 0), EAGAIN]


def test_message_queue_notify_is_one_registration_at_a_time() -> None:
    out: list[Any] = []

    async def first(t: Any, env: Env) -> None:
        q = await MessageQueue.open(t, env, "/q", CREAT | os.O_RDWR)
        await q.notify_wait()
        out.append(("notified", await q.receive()))

    async def second(t: Any, env: Env) -> None:
        await t.sleep(US(20))
        q = await MessageQueue.open(t, env, "/q", os.O_RDWR)
        out.append(("second", await errno_of(q.notify_wait())))
        await q.send(b"go", 3)

    _, result, _, _ = run([("first", first, ()), ("second", second, ())], ["mq"])
    done(result)
    assert out == [("second", EBUSY), ("notified", (b"go", 3))]


# --- pipes and FIFOs --------------------------------------------------------------------


@CPUS
def test_pipe_errors_and_atomicity(cpus: int) -> None:
    out: dict[str, Any] = {}

    async def body(t: Any, env: Env) -> None:
        r, w = await Pipe.pipe(t, env)
        out["write on read end"] = await errno_of(r.write(b"x"))
        out["read on write end"] = await errno_of(w.read(1))
        w.nonblock = r.nonblock = True
        out["empty read"] = await errno_of(r.read(10))
        out["fill"] = await w.write(bytes(PIPE_CAPACITY - 100))
        out["atomic too big"] = await errno_of(w.write(bytes(PIPE_BUF)))   # 100 bytes of room
        out["partial"] = await w.write(bytes(PIPE_BUF + 1))               # > PIPE_BUF: what fits
        out["full"] = await errno_of(w.write(b"x"))
        out["drained"] = len(await r.read(1 << 20))
        await r.close()
        out["no reader"] = await errno_of(w.write(b"x"))
        await w.close()
        out["closed"] = await errno_of(w.close())
        out["fifo missing"] = await errno_of(Pipe.open(t, env, "/f", os.O_RDONLY))
        await Pipe.mkfifo(t, env, "/f")
        out["mkfifo again"] = await errno_of(Pipe.mkfifo(t, env, "/f"))
        out["nonblock writer"] = await errno_of(Pipe.open(t, env, "/f", os.O_WRONLY | os.O_NONBLOCK))
        fr = await Pipe.open(t, env, "/f", os.O_RDONLY | os.O_NONBLOCK)
        out["eof no writer"] = await fr.read(5)
        await Pipe.unlink(t, env, "/f")
        out["unlink again"] = await errno_of(Pipe.unlink(t, env, "/f"))

    _, result, _, _ = run([("app", body, ())], ["pipe"], cpus)
    done(result)
    assert out == {"write on read end": EBADF, "read on write end": EBADF, "empty read": EAGAIN,
                   "fill": PIPE_CAPACITY - 100, "atomic too big": EAGAIN, "partial": 100,
                   "full": EAGAIN, "drained": 65536, "no reader": EPIPE, "closed": EBADF,
                   "fifo missing": ENOENT, "mkfifo again": EEXIST, "nonblock writer": ENXIO,
                   "eof no writer": b"", "unlink again": ENOENT}


@CPUS
def test_pipe_writers_of_pipe_buf_are_not_interleaved_and_eof_follows_a_deleted_writer(
        cpus: int) -> None:
    got: dict[str, Any] = {}

    async def writer(t: Any, env: Env, ch: int, ex: dict[str, Any]) -> None:
        while "token" not in ex:
            await t.sleep(US(2))
        w = await Pipe.adopt(t, env, ex["token"])
        for _ in range(20):
            await w.write(bytes([ch]) * PIPE_BUF)
        if ch == ord("b"):
            await t.sleep(Timeout.never())       # never closes: deleted below

    k = kernel(cpus)
    system = System(k, ["pipe"])
    tokens: list[int] = []

    async def writer_a(t: Any, env: Env) -> None:
        while len(tokens) < 1:
            await t.sleep(US(2))
        await writer(t, env, ord("a"), {"token": tokens[0]})

    async def writer_b(t: Any, env: Env) -> None:
        while len(tokens) < 2:
            await t.sleep(US(2))
        await writer(t, env, ord("b"), {"token": tokens[1]})

    async def reader_main(t: Any, env: Env, victim: list[int]) -> None:
        r, w = await Pipe.pipe(t, env)
        tokens.append(await w.share())
        tokens.append(await w.share())
        await w.close()
        data = bytearray()
        while len(data) < 40 * PIPE_BUF:
            data += await r.read(3 * PIPE_BUF // 2)
        got["blocks"] = [bytes(data[i:i + PIPE_BUF]) for i in range(0, len(data), PIPE_BUF)]
        await t.delete(victim[0])
        got["eof"] = await r.read(10)

    system.process("a").thread(writer_a, name="a", cpu=1 % cpus)
    b = system.process("b").thread(writer_b, name="b")
    rp = system.process("reader")
    rp.thread(reader_main, [rp.task.add_cap(b)], name="reader")
    result = k.run()
    assert [(th.name, why) for th, why in result.died] == [("b", "deleted")]
    assert all(blk in (b"a" * PIPE_BUF, b"b" * PIPE_BUF) for blk in got["blocks"])
    assert sorted(blk[0] for blk in got["blocks"]) == [ord("a")] * 20 + [ord("b")] * 20
    assert got["eof"] == b""


def test_fifo_open_waits_for_the_other_side_and_reader_death_is_epipe() -> None:
    out: dict[str, Any] = {}

    async def writer(t: Any, env: Env) -> None:
        await Pipe.mkfifo(t, env, "/f")
        w = await Pipe.open(t, env, "/f", os.O_WRONLY)
        out["writer opened"] = t.now
        await w.write(b"x" * PIPE_CAPACITY)           # fills the pipe
        out["blocked write"] = await errno_of(w.write(b"more"))   # reader deleted meanwhile
        out["after"] = await errno_of(w.write(b"more"))

    async def reader(t: Any, env: Env) -> None:
        await t.sleep(US(30))
        out["reader opens"] = t.now
        await Pipe.open(t, env, "/f", os.O_RDONLY)
        await t.sleep(US(30))
        await t.delete(t.self_sel)

    _, result, _, system = run([("w", writer, ()), ("r", reader, ())], ["pipe"])
    assert [(th.name, why) for th, why in result.died] == [("r", "deleted")]
    assert out["writer opened"] > out["reader opens"]
    assert out["blocked write"] == EPIPE and out["after"] == EPIPE
    assert system.servers["pipe"].stats["reaped"] == 1


# --- shared memory ----------------------------------------------------------------------


@CPUS
def test_shared_memory_errors_unlink_while_mapped_and_revocation(cpus: int) -> None:
    out: dict[str, Any] = {}

    async def body(t: Any, env: Env) -> None:
        out["missing"] = await errno_of(SharedMemory.open(t, env, "/m"))
        s = await SharedMemory.open(t, env, "/m", CREAT | os.O_RDWR)
        out["excl"] = await errno_of(SharedMemory.open(t, env, "/m", CREAT | EXCL))
        out["map empty"] = await errno_of(s.map(4096))
        await s.truncate(5 * 4096)
        out["size"] = await s.size()
        out["too large"] = await errno_of(s.truncate(1 << 30))
        ro = await SharedMemory.open(t, env, "/m", os.O_RDONLY)
        out["truncate read-only"] = await errno_of(ro.truncate(4096))
        out["map rw of read-only"] = await errno_of(ro.map(4096, write=True))
        m = await s.map(5 * 4096)
        view = await ro.map(5 * 4096, write=False)
        await t.store(m.addr + 4 * 4096 + 8, b"tail")
        out["view"] = await t.load(view.addr + 4 * 4096 + 8, 4)
        await s.truncate(4096)                     # revokes pages 1..4 from everyone
        await t.store(m.addr + 4 * 4096 + 8, b"new!")  # our pager's own page now
        out["after shrink"] = await t.load(view.addr + 4 * 4096 + 8, 4)
        await SharedMemory.unlink(t, env, "/m")
        await t.store(m.addr, b"still")
        out["after unlink"] = await t.load(view.addr, 5)
        await ro.close()
        await s.close()
        out["closed"] = await errno_of(s.size())
        await m.unmap()
        await view.unmap()

    k, result, _, system = run([("app", body, ())], ["shm"], cpus)
    done(result)
    assert out == {"missing": ENOENT, "excl": EEXIST, "map empty": EINVAL, "size": 5 * 4096,
                   "too large": EINVAL, "truncate read-only": EINVAL, "map rw of read-only": EACCES,
                   "view": b"tail", "after shrink": b"\0\0\0\0", "after unlink": b"still",
                   "closed": EBADF}
    # Unlinked, closed and unmapped: the server gave its pages up, nothing derives from them.
    assert not [ln for ln in k.mapdb.dump().splitlines() if ln.strip().startswith("shm ")]
    assert system.servers["shm"].by_id == {}


# --- signals ----------------------------------------------------------------------------


@CPUS
def test_signals(cpus: int) -> None:
    usr1, usr2, hup, chld = (int(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP,
                                              signal.SIGCHLD))
    out: dict[str, Any] = {}
    sigs = Signals()

    async def handler(t: Any, sig: int) -> None:
        out.setdefault("handled", []).append(sig)

    async def target(t: Any, env: Env) -> None:
        pid = await sigs.getpid(t)
        out["bad sig"] = await errno_of(sigs.action(t, env, 99, SIG_IGN))
        out["catch kill"] = await errno_of(sigs.action(t, env, int(signal.SIGKILL), handler))
        await sigs.action(t, env, usr1, handler)
        await sigs.action(t, env, usr2, handler)
        await sigs.mask(t, env, SIG_BLOCK, {usr1, usr2, hup})
        for sig in (usr2, usr1, usr2, hup, chld):
            await Signals.kill(t, env, pid, sig)
        out["pending"] = await sigs.pending(t, env)
        out["old dfl"] = await sigs.action(t, env, hup, SIG_IGN)     # drops the pending HUP
        out["pending 2"] = await sigs.pending(t, env)
        out["old mask"] = await sigs.mask(t, env, SIG_UNBLOCK, {usr1, usr2})
        await t.sleep(US(20))
        await sigs.mask(t, env, SIG_SETMASK, set())
        await sigs.action(t, env, hup, SIG_DFL)
        out["kill 0"] = await errno_of(Signals.kill(t, env, pid, 0))
        out["bad kill"] = await errno_of(Signals.kill(t, env, pid, 1000))
        out["no such"] = await errno_of(Signals.kill(t, env, 12345, usr1))
        await Signals.kill(t, env, pid, hup)                  # default: terminate
        out["survived"] = True

    k = kernel(cpus)
    system = System(k, ["signal"])
    proc = system.process("target")
    proc.thread(sigs.thread_body, name="sig", priority=140, cpu=1 % cpus)
    proc.thread(target, name="target")
    result = k.run()
    assert "survived" not in out
    assert out == {"bad sig": EINVAL, "catch kill": EINVAL, "pending": {usr1, usr2, hup},
                   "old dfl": SIG_DFL, "pending 2": {usr1, usr2}, "old mask": {usr1, usr2, hup},
                   "handled": [usr1, usr2], "kill 0": 0, "bad kill": EINVAL, "no such": ESRCH}
    assert sorted(why for _, why in result.died) == ["deleted", "deleted"]
    assert system.servers["signal"].terminated == [sigs.pid]


def test_sigkill_cannot_be_blocked() -> None:
    sigs = Signals()
    out: list[Any] = []

    async def target(t: Any, env: Env) -> None:
        pid = await sigs.getpid(t)
        old = await sigs.mask(t, env, SIG_BLOCK, {int(signal.SIGKILL), int(signal.SIGUSR1)})
        out.append((old, await sigs.mask(t, env, SIG_BLOCK, set())))
        await Signals.kill(t, env, pid, int(signal.SIGKILL))
        out.append("survived")

    k = kernel()
    proc = System(k, ["signal"]).process("p")
    proc.thread(sigs.thread_body, name="sig", priority=140)
    proc.thread(target, name="target")
    k.run()
    assert out == [(set(), {int(signal.SIGUSR1)})]


# --- the framework and the name server ---------------------------------------------------


def test_connection_pool_exhausted_is_emfile_and_closing_frees_a_gate() -> None:
    out: list[Any] = []

    async def body(t: Any, env: Env, mine: list[Any]) -> None:
        try:
            s = await Semaphore.open(t, env, "/s", CREAT, 0)
        except PosixError as exc:
            out.append((t.name, exc.errno))
            return
        out.append((t.name, "open"))
        mine.append(s)

    async def closer(t: Any, env: Env) -> None:
        s = await Semaphore.open(t, env, "/s", CREAT, 0)
        await t.sleep(US(50))
        await s.conn.close()
        out.append("closed")

    async def late(t: Any, env: Env) -> None:
        await t.sleep(US(100))
        await Semaphore.open(t, env, "/s", CREAT, 0)
        out.append("late open")

    async def holder(t: Any, env: Env) -> None:
        await Semaphore.open(t, env, "/s", CREAT, 0)
        await t.sleep(US(200))

    procs = [("closer", closer, ()), ("holder", holder, ()), ("third", body, ([],)),
             ("late", late, ())]
    _, result, _, _ = run(procs, ["sem"], pool=2)
    done(result)
    assert out == [("third", EMFILE), "closed", "late open"]


def test_name_server_lookup_waits_for_registration_and_errors() -> None:
    out: dict[str, Any] = {}

    async def early(t: Any, env: Env) -> None:
        out["no wait"] = await errno_of(lookup(t, env, "late-service", wait=False))
        sel = await lookup(t, env, "late-service")        # waits
        out["found at"] = t.now
        r = await t.call(sel, label=0x7F00)               # the public gate answers OPEN
        out["open without thread cap"] = -r.tag.label

    async def registrar(t: Any, env: Env, gate_sel: list[int]) -> None:
        await t.sleep(US(40))
        out["registered at"] = t.now
        await register(t, env, "late-service", gate_sel[0])
        out["again"] = await errno_of(register(t, env, "late-service", gate_sel[0]))

    k: Kernel = kernel()
    system = System(k, ["sem"])
    system.process("early").thread(early, name="early")
    rp = system.process("registrar")
    sem_thread = system.threads["sem"]
    gate = k.new_gate(sem_thread, label=0, name="another")
    rp.thread(registrar, [rp.task.add_cap(gate)], name="registrar")
    result = k.run()
    done(result)
    assert out["no wait"] == ENOENT and out["again"] == EEXIST
    assert out["found at"] > out["registered at"]
    assert out["open without thread cap"] == EINVAL
