"""Differential tests: the same operation sequences on the host's real POSIX primitives
and on l4sim's servers; the observable results (values, errors, data, message order)
must agree.

Hypothesis generates the sequences; each operation names the client that does it (one
client, or several with their own handles, interleaved). On the host the clients are
separate handles in this process (`posix_ipc` objects, file descriptors); in l4sim each
client is a thread in its own task, and the operations run one at a time in the
generated order (client i does operation j at a fixed simulated time slot; every
operation is checked to have finished inside its slot). The host's outcomes are turned
into error numbers by what `posix_ipc` and `os` raise for each operation (posix_ipc
raises BusyError for EAGAIN and ETIMEDOUT alike, ExistentialError for ENOENT and
EEXIST, ValueError for EMSGSIZE and EINVAL).

Operations that would block forever in this single-threaded host process are left out
(blocking is the unit tests' business); timed operations wait 1 ms on the host and 10
simulated µs in l4sim. Documented differences are asserted by tests of their own at the
end of this file.
"""

# ruff: noqa: B023  (the host side's lambdas run at once, inside their loop iteration)
from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import signal
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l4sim import Timeout
from l4sim.lib.boot import System
from l4sim.lib.framework import Env, PosixError
from l4sim.lib.mqueue import MessageQueue
from l4sim.lib.pipe import PIPE_BUF, Pipe
from l4sim.lib.semaphore import Semaphore
from l4sim.lib.shm import SharedMemory
from l4sim.lib.signals import SIG_BLOCK, SIG_IGN, SIG_UNBLOCK, Signals
from posix_helpers import errno_of, kernel

posix_ipc = pytest.importorskip("posix_ipc")

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
SLOT_US = 200
HOST_TIMEOUT = 0.001
_unique = itertools.count()

Op = tuple[Any, ...]
L4Exec = Callable[[Any, Env, dict[str, Any], Op], Coroutine[Any, Any, Any]]


def run_l4sim(ops: list[Op], clients: int, servers: list[str], execute: L4Exec,
              setup: Callable[[System], dict[str, Any]] | None = None) -> list[Any]:
    """Run `ops` (op[0] is the client index) in l4sim, one per time slot, in order."""
    k = kernel()
    system = System(k, servers)
    shared = setup(system) if setup else {}
    results: list[Any] = [None] * len(ops)
    ends: list[int] = [0] * len(ops)
    async def client(t: Any, env: Env, me: int) -> None:
        state: dict[str, Any] = {"shared": shared, "me": me}
        start = t.now
        per = Timeout.us(SLOT_US).deadline(0, k.mhz) or 0
        for i, op in enumerate(ops):
            if op[0] != me:
                continue
            await t.sleep(Timeout.at(start + per * (i + 1)))
            results[i] = await execute(t, env, state, op)
            ends[i] = t.now - start
        state.clear()

    for c in range(clients):
        system.process(f"client{c}").thread(client, c, name=f"client{c}")
    result = k.run()
    assert result.reason == "done" and not result.died, result
    per = Timeout.us(SLOT_US).deadline(0, k.mhz) or 0
    for i, end in enumerate(ends):
        assert end < per * (i + 2), f"operation {i} {ops[i]} overran its slot"
    return results


def ok_or_errno(fn: Callable[[], Any], busy: int = errno.EAGAIN, exists: int = errno.ENOENT,
                value: int = errno.EINVAL) -> Any:
    """Run a host operation; its result, or the error number it stands for."""
    try:
        out = fn()
    except posix_ipc.BusyError:
        return busy
    except posix_ipc.ExistentialError:
        return exists
    except posix_ipc.PermissionsError:   # a queue not open for that direction: EBADF
        return errno.EBADF
    except ValueError:
        return value
    except OSError as exc:
        return exc.errno
    return "ok" if out is None else out


async def l4_result(op: Coroutine[Any, Any, Any]) -> Any:
    try:
        out = await op
    except PosixError as exc:
        return exc.errno
    return "ok" if out is None else out


# --- semaphores -------------------------------------------------------------------------

SEM_NAMES = ["/a", "/b"]
sem_op = st.one_of(
    st.tuples(st.integers(0, 2), st.just("open"), st.integers(0, 1),
              st.sampled_from([0, os.O_CREAT, os.O_CREAT | os.O_EXCL]), st.integers(0, 3)),
    st.tuples(st.integers(0, 2), st.sampled_from(["trywait", "timedwait", "post", "value",
                                                  "close"]), st.integers(0, 1)),
    st.tuples(st.integers(0, 2), st.just("unlink"), st.integers(0, 1)),
)


def host_sems(ops: list[Op]) -> list[Any]:
    prefix = f"/l4sim-{os.getpid()}-{next(_unique)}"
    handles: dict[tuple[int, int], Any] = {}
    out: list[Any] = []
    try:
        for op in ops:
            c, what, n = op[0], op[1], op[2]
            name = f"{prefix}-{SEM_NAMES[n][1:]}"
            h = handles.get((c, n))
            if what == "open":
                if h is not None:
                    out.append("have")
                    continue
                flags, value = op[3], op[4]
                res = ok_or_errno(lambda: posix_ipc.Semaphore(name, flags, initial_value=value),
                                  exists=errno.EEXIST if flags & os.O_EXCL else errno.ENOENT)
                if isinstance(res, posix_ipc.Semaphore):
                    handles[(c, n)] = res
                    res = "ok"
                out.append(res)
            elif what == "unlink":
                out.append(ok_or_errno(lambda: posix_ipc.unlink_semaphore(name)))
            elif h is None:
                out.append("no handle")
            elif what == "trywait":
                out.append(ok_or_errno(lambda: h.acquire(0)))
            elif what == "timedwait":
                out.append(ok_or_errno(lambda: h.acquire(HOST_TIMEOUT), busy=errno.ETIMEDOUT))
            elif what == "post":
                out.append(ok_or_errno(h.release))
            elif what == "value":
                out.append(h.value)
            elif what == "close":
                h.close()
                del handles[(c, n)]
                out.append("ok")
    finally:
        for h in handles.values():
            h.close()
        for n in SEM_NAMES:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore(f"{prefix}-{n[1:]}")
    return out


async def l4_sems(t: Any, env: Env, state: dict[str, Any], op: Op) -> Any:
    what, n = op[1], op[2]
    name = SEM_NAMES[n]
    h: Semaphore | None = state.get(name)
    if what == "open":
        if h is not None:
            return "have"
        try:
            state[name] = await Semaphore.open(t, env, name, op[3], op[4])
        except PosixError as exc:
            return exc.errno
        return "ok"
    if what == "unlink":
        return await l4_result(Semaphore.unlink(t, env, name))
    if h is None:
        return "no handle"
    if what == "close":
        del state[name]
        return await l4_result(h.close())
    calls = {"trywait": h.trywait, "post": h.post, "value": h.value,
             "timedwait": lambda: h.timedwait(Timeout.us(10))}
    return await l4_result(calls[what]())


@SETTINGS
@given(st.lists(sem_op.map(lambda o: (0, *o[1:])), max_size=14))
def test_semaphores_single_client(ops: list[Op]) -> None:
    assert run_l4sim(ops, 1, ["sem"], l4_sems) == host_sems(ops)


@SETTINGS
@given(st.lists(sem_op, max_size=18))
def test_semaphores_three_clients(ops: list[Op]) -> None:
    assert run_l4sim(ops, 3, ["sem"], l4_sems) == host_sems(ops)


# --- message queues ---------------------------------------------------------------------

mq_op = st.one_of(
    st.tuples(st.integers(0, 1), st.just("open"),
              st.sampled_from([os.O_RDWR, os.O_CREAT | os.O_RDWR, os.O_CREAT | os.O_EXCL | os.O_RDWR,
                               os.O_RDONLY, os.O_WRONLY])),
    st.tuples(st.integers(0, 1), st.just("send"), st.binary(max_size=20), st.integers(0, 5),
              st.booleans()),
    st.tuples(st.integers(0, 1), st.just("receive"), st.booleans()),
    st.tuples(st.integers(0, 1), st.sampled_from(["close", "unlink", "count"])),
)
MQ_MAX, MQ_SIZE = 3, 16


def host_mqs(ops: list[Op]) -> list[Any]:
    name = f"/l4sim-{os.getpid()}-{next(_unique)}"
    handles: dict[int, Any] = {}
    out: list[Any] = []
    try:
        for op in ops:
            c, what = op[0], op[1]
            h = handles.get(c)
            if what == "open":
                if h is not None:
                    out.append("have")
                    continue
                flags = op[2]
                acc = flags & os.O_ACCMODE
                res = ok_or_errno(lambda: posix_ipc.MessageQueue(
                    name, flags & ~os.O_ACCMODE, max_messages=MQ_MAX, max_message_size=MQ_SIZE,
                    read=acc != os.O_WRONLY, write=acc != os.O_RDONLY),
                    exists=errno.EEXIST if flags & os.O_EXCL else errno.ENOENT)
                if isinstance(res, posix_ipc.MessageQueue):
                    handles[c] = res
                    res = "ok"
                out.append(res)
            elif what == "unlink":
                out.append(ok_or_errno(lambda: posix_ipc.unlink_message_queue(name)))
            elif h is None:
                out.append("no handle")
            elif what == "send":
                data, prio, timed = op[2], op[3], op[4]
                out.append(ok_or_errno(
                    lambda: h.send(data, timeout=HOST_TIMEOUT if timed else 0, priority=prio),
                    busy=errno.ETIMEDOUT if timed else errno.EAGAIN, value=errno.EMSGSIZE))
            elif what == "receive":
                timed = op[2]
                res = ok_or_errno(lambda: h.receive(HOST_TIMEOUT if timed else 0),
                                  busy=errno.ETIMEDOUT if timed else errno.EAGAIN)
                out.append(res)
            elif what == "count":
                out.append(h.current_messages)
            elif what == "close":
                h.close()
                del handles[c]
                out.append("ok")
    finally:
        for h in handles.values():
            h.close()
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_message_queue(name)
    return out


async def l4_mqs(t: Any, env: Env, state: dict[str, Any], op: Op) -> Any:
    what = op[1]
    h: MessageQueue | None = state.get("q")
    if what == "open":
        if h is not None:
            return "have"
        try:
            state["q"] = await MessageQueue.open(t, env, "/q", op[2], MQ_MAX, MQ_SIZE)
        except PosixError as exc:
            return exc.errno
        return "ok"
    if what == "unlink":
        return await l4_result(MessageQueue.unlink(t, env, "/q"))
    if h is None:
        return "no handle"
    if what == "close":
        del state["q"]
        return await l4_result(h.close())
    if what == "count":
        return (await h.attributes())[2]
    timeout = Timeout.us(10) if op[-1] else Timeout.never()
    h.nonblock = not op[-1]
    if what == "send":
        return await l4_result(h.send(op[2], op[3], timeout))
    return await l4_result(h.receive(timeout=timeout))


@SETTINGS
@given(st.lists(mq_op.map(lambda o: (0, *o[1:])), max_size=16))
def test_message_queues_single_client(ops: list[Op]) -> None:
    assert run_l4sim(ops, 1, ["mq"], l4_mqs) == host_mqs(ops)


@SETTINGS
@given(st.lists(mq_op, max_size=20))
def test_message_queues_two_clients(ops: list[Op]) -> None:
    assert run_l4sim(ops, 2, ["mq"], l4_mqs) == host_mqs(ops)


# --- pipes and FIFOs --------------------------------------------------------------------

SIZES = st.sampled_from([0, 1, 100, PIPE_BUF - 1, PIPE_BUF, PIPE_BUF + 1, 20_000, 70_000])
pipe_op = st.one_of(
    st.tuples(st.integers(0, 1), st.just("write"), SIZES),
    st.tuples(st.integers(0, 1), st.just("read"), SIZES),
    st.tuples(st.integers(0, 1), st.sampled_from(["close-r", "close-w"])),
)


def _data(i: int, n: int) -> bytes:
    return bytes((i * 31 + j) % 256 for j in range(n % 1000)) * (n // 1000) + bytes(
        (i * 31 + j) % 256 for j in range(n % 1000))


def host_pipes(ops: list[Op]) -> list[Any]:
    """Two clients, each with its own (dup'ed) read and write end of one pipe."""
    r, w = os.pipe()
    ends: dict[tuple[int, str], int] = {(0, "r"): r, (0, "w"): w,
                                        (1, "r"): os.dup(r), (1, "w"): os.dup(w)}
    for fd in ends.values():
        os.set_blocking(fd, False)
    out: list[Any] = []
    try:
        for op in ops:
            c, what = op[0], op[1]
            if what.startswith("close"):
                fd = ends.pop((c, what[-1]), None)
                if fd is None:
                    out.append(errno.EBADF)
                else:
                    os.close(fd)
                    out.append("ok")
                continue
            fd = ends.get((c, "w" if what == "write" else "r"))
            if fd is None:
                out.append(errno.EBADF)
            elif what == "write":
                out.append(ok_or_errno(lambda: os.write(fd, _data(op[-1], op[2]))))
            else:
                res = ok_or_errno(lambda: os.read(fd, op[2]))
                out.append(res)
    finally:
        for fd in ends.values():
            os.close(fd)
    return out


def pipe_setup(system: System) -> dict[str, Any]:
    return {"tokens": []}


async def l4_pipes(t: Any, env: Env, state: dict[str, Any], op: Op) -> Any:
    ends: dict[str, Pipe] | None = state.get("ends")
    shared = state["shared"]
    if ends is None:   # first operation of this client: get our ends
        if not shared.get("made"):
            r, w = await Pipe.pipe(t, env)
            shared["made"] = [await r.share(), await w.share()]
            ends = {"r": r, "w": w}
        else:
            toks = shared["made"]
            ends = {"r": await Pipe.adopt(t, env, toks[0]), "w": await Pipe.adopt(t, env, toks[1])}
        for e in ends.values():
            e.nonblock = True
        state["ends"] = ends
    what = op[1]
    if what.startswith("close"):
        end = ends.pop(what[-1], None)
        return errno.EBADF if end is None else await l4_result(end.close())
    end = ends.get("w" if what == "write" else "r")
    if end is None:
        return errno.EBADF
    if what == "write":
        return await l4_result(end.write(_data(op[-1], op[2])))
    return await l4_result(end.read(op[2]))


@SETTINGS
@given(st.lists(pipe_op, max_size=16))
def test_pipes_two_clients_nonblocking(ops: list[Op]) -> None:
    # both clients hold both ends from the start, as after a fork
    ops = [(0, "noop"), (1, "noop"), *ops]
    indexed = [(*op, i) for i, op in enumerate(ops)]

    async def execute(t: Any, env: Env, state: dict[str, Any], op: Op) -> Any:
        if op[1] == "noop":
            await l4_pipes(t, env, state, (op[0], "read", 0, op[-1]))
            return "ok"
        return await l4_pipes(t, env, state, op)

    # The first client makes the pipe and shares both ends, the second adopts them: both
    # hold both ends from then on, as the host's dup'ed descriptors do.
    got = run_l4sim(indexed, 2, ["pipe"], execute, pipe_setup)
    assert got == ["ok", "ok", *host_pipes(indexed[2:])]


fifo_op = st.one_of(
    st.tuples(st.integers(0, 1), st.sampled_from(["open-r", "open-w", "close", "read", "write"])),
)


def host_fifos(ops: list[Op]) -> list[Any]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fifo")
        os.mkfifo(path)
        fds: dict[int, tuple[int, str]] = {}
        out: list[Any] = []
        try:
            for op in ops:
                c, what = op
                got = fds.get(c)
                if what.startswith("open"):
                    if got is not None:
                        out.append("have")
                        continue
                    mode = os.O_RDONLY if what == "open-r" else os.O_WRONLY
                    res = ok_or_errno(lambda: ("fd", os.open(path, mode | os.O_NONBLOCK)))
                    if isinstance(res, tuple):
                        fds[c] = (res[1], what[-1])
                        res = "ok"
                    out.append(res)
                elif got is None:
                    out.append("no handle")
                elif what == "close":
                    os.close(got[0])
                    del fds[c]
                    out.append("ok")
                elif what == "read":
                    out.append(errno.EBADF if got[1] != "r" else ok_or_errno(lambda: os.read(got[0], 64)))
                else:
                    out.append(errno.EBADF if got[1] != "w"
                               else ok_or_errno(lambda: os.write(got[0], b"fifo data")))
        finally:
            for fd, _ in fds.values():
                os.close(fd)
    return out


async def l4_fifos(t: Any, env: Env, state: dict[str, Any], op: Op) -> Any:
    if not state["shared"].get("made"):
        state["shared"]["made"] = True
        await Pipe.mkfifo(t, env, "/fifo")
    what = op[1]
    got: Pipe | None = state.get("fd")
    if what.startswith("open"):
        if got is not None:
            return "have"
        mode = os.O_RDONLY if what == "open-r" else os.O_WRONLY
        try:
            state["fd"] = await Pipe.open(t, env, "/fifo", mode | os.O_NONBLOCK)
        except PosixError as exc:
            return exc.errno
        return "ok"
    if got is None:
        return "no handle"
    if what == "close":
        del state["fd"]
        return await l4_result(got.close())
    if what == "read":
        return await l4_result(got.read(64))
    return await l4_result(got.write(b"fifo data"))


@SETTINGS
@given(st.lists(fifo_op, max_size=14))
def test_fifos_two_clients_nonblocking(ops: list[Op]) -> None:
    assert run_l4sim(ops, 2, ["pipe"], l4_fifos) == host_fifos(ops)


# --- shared memory ----------------------------------------------------------------------

PAGE = 4096
shm_op = st.one_of(
    st.tuples(st.integers(0, 1), st.just("open"),
              st.sampled_from([os.O_RDWR, os.O_CREAT | os.O_RDWR, os.O_CREAT | os.O_EXCL | os.O_RDWR,
                               os.O_RDONLY])),
    st.tuples(st.integers(0, 1), st.just("truncate"), st.integers(0, 3)),
    st.tuples(st.integers(0, 1), st.just("map"), st.integers(1, 3)),
    st.tuples(st.integers(0, 1), st.just("write"), st.integers(0, 3 * PAGE - 8), st.binary(min_size=1,
                                                                                          max_size=8)),
    st.tuples(st.integers(0, 1), st.just("read"), st.integers(0, 3 * PAGE - 8)),
    st.tuples(st.integers(0, 1), st.sampled_from(["size", "unmap", "close", "unlink"])),
)


class ShmModel:
    """What both sides need to stay out of undefined behaviour: the object's current
    size (no access beyond it: SIGBUS on Linux) and the sizes of the mappings."""

    def __init__(self) -> None:
        self.size = 0
        self.maps: dict[int, int] = {}      # client -> mapped bytes

    def allowed(self, op: Op) -> bool:
        c, what = op[0], op[1]
        if what in ("write", "read"):
            n = len(op[3]) if what == "write" else 8
            return c in self.maps and op[2] + n <= min(self.maps[c], self.size)
        return True

    def after(self, op: Op, result: Any) -> None:
        c, what = op[0], op[1]
        if what == "truncate" and result == "ok":
            self.size = op[2] * PAGE
            for k in [k for k, v in self.maps.items() if v > self.size]:
                del self.maps[k]   # a shrink revokes: forget mappings it cut into
        if what == "map" and result == "ok":
            self.maps[c] = op[2] * PAGE
        if what == "unmap" and c in self.maps:
            del self.maps[c]


def host_shm(ops: list[Op]) -> list[Any]:
    name = f"/l4sim-{os.getpid()}-{next(_unique)}"
    fds: dict[int, Any] = {}
    maps: dict[int, mmap.mmap] = {}
    model = ShmModel()
    out: list[Any] = []
    try:
        for op in ops:
            c, what = op[0], op[1]
            if not model.allowed(op):
                out.append("skip")
                continue
            h = fds.get(c)
            if what == "open":
                if h is not None:
                    res: Any = "have"
                else:
                    flags = op[2]
                    res = ok_or_errno(lambda: posix_ipc.SharedMemory(
                        name, flags & ~os.O_ACCMODE, read_only=flags & os.O_ACCMODE == os.O_RDONLY),
                        exists=errno.EEXIST if flags & os.O_EXCL else errno.ENOENT)
                    if isinstance(res, posix_ipc.SharedMemory):
                        fds[c] = (res, op[2])
                        res = "ok"
            elif what == "unlink":
                res = ok_or_errno(lambda: posix_ipc.unlink_shared_memory(name))
            elif what == "unmap":
                m = maps.pop(c, None)
                if m is not None:
                    m.close()
                res = "ok" if m is not None else "no map"
            elif what == "read":
                res = maps[c][op[2]:op[2] + 8]
            elif what == "write":
                maps[c][op[2]:op[2] + len(op[3])] = op[3]
                res = "ok"
            elif h is None:
                res = "no handle"
            elif what == "truncate":
                res = ok_or_errno(lambda: os.ftruncate(h[0].fd, op[2] * PAGE))
                if res == "ok":
                    for k in [k for k, v in model.maps.items() if v > op[2] * PAGE]:
                        maps.pop(k).close()
            elif what == "size":
                res = os.fstat(h[0].fd).st_size
            elif what == "map":
                if c in maps:
                    res = "mapped"
                else:
                    rw = h[1] & os.O_ACCMODE != os.O_RDONLY
                    got = ok_or_errno(lambda: mmap.mmap(
                        h[0].fd, op[2] * PAGE, mmap.MAP_SHARED,
                        mmap.PROT_READ | (mmap.PROT_WRITE if rw else 0)))
                    if isinstance(got, mmap.mmap):
                        maps[c] = got
                        got = "ok"
                    res = got
            else:   # close
                h[0].close_fd()
                del fds[c]
                res = "ok"
            if isinstance(res, int) and res == errno.EBADF and what == "truncate":
                res = errno.EINVAL
            model.after(op, res)
            out.append(res)
    finally:
        for m in maps.values():
            m.close()
        for h, _ in fds.values():
            h.close_fd()
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(name)
    return out


async def l4_shm(t: Any, env: Env, state: dict[str, Any], op: Op) -> Any:
    model: ShmModel = state["shared"]["model"]
    what = op[1]
    if not model.allowed(op):
        return "skip"
    h: SharedMemory | None = state.get("h")
    m = state.get("m")
    res: Any
    if what == "open":
        if h is not None:
            res = "have"
        else:
            try:
                state["h"] = await SharedMemory.open(t, env, "/m", op[2])
                res = "ok"
            except PosixError as exc:
                res = exc.errno
    elif what == "unlink":
        res = await l4_result(SharedMemory.unlink(t, env, "/m"))
    elif what == "unmap":
        if m is not None:
            del state["m"]
            await m.unmap()
        res = "ok" if m is not None else "no map"
    elif what == "read":
        res = await t.load(m.addr + op[2], 8)
    elif what == "write":
        await t.store(m.addr + op[2], op[3])
        res = "ok"
    elif h is None:
        res = "no handle"
    elif what == "truncate":
        res = await l4_result(h.truncate(op[2] * PAGE))
        if res == "ok":
            for k in [k for k, v in model.maps.items() if v > op[2] * PAGE]:
                state["shared"]["drop"].add(k)
    elif what == "size":
        res = await h.size()
    elif what == "map":
        if m is not None:
            res = "mapped"
        else:
            try:
                state["m"] = await h.map(op[2] * PAGE, write=h.flags & os.O_ACCMODE != os.O_RDONLY)
                res = "ok"
            except PosixError as exc:
                res = exc.errno
    else:
        del state["h"]
        res = await l4_result(h.close())
    model.after(op, res)
    return res


@SETTINGS
@given(st.lists(shm_op, max_size=16))
def test_shared_memory_two_clients(ops: list[Op]) -> None:
    def setup(system: System) -> dict[str, Any]:
        return {"model": ShmModel(), "drop": set()}

    async def execute(t: Any, env: Env, state: dict[str, Any], op: Op) -> Any:
        if op[0] in state["shared"]["drop"] and "m" in state:
            state["shared"]["drop"].discard(op[0])
            del state["m"]          # that mapping was revoked by a shrink: forget it
        state["shared"]["drop"].discard(op[0])
        return await l4_shm(t, env, state, op)

    assert run_l4sim(ops, 2, ["shm"], execute, setup) == host_shm(ops)


# --- signals ----------------------------------------------------------------------------

USR1, USR2, WINCH, CHLD = (int(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
                                            signal.SIGCHLD))
SIGS = [USR1, USR2, WINCH, CHLD]
sig_op = st.one_of(
    st.tuples(st.sampled_from(["kill", "block", "unblock"]), st.sampled_from(SIGS)),
    st.tuples(st.just("handle"), st.sampled_from(SIGS)),
    st.tuples(st.just("ignore"), st.sampled_from(SIGS)),
    st.tuples(st.just("default"), st.sampled_from([WINCH, CHLD])),   # USR1's would end pytest
    st.tuples(st.just("pending"), st.just(0)),
)


def host_signals(ops: list[Op]) -> list[Any]:
    handled: list[int] = []
    old = {s: signal.getsignal(s) for s in SIGS}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    def record(sig: int, frame: Any) -> None:
        handled.append(sig)

    out: list[Any] = []
    try:
        for s in SIGS[:2]:
            signal.signal(s, record)
        for what, sig in ops:
            before = len(handled)
            if what == "kill":
                signal.raise_signal(sig)   # to this thread: the one whose mask we set
            elif what == "block":
                signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
            elif what == "unblock":
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            elif what == "handle":
                signal.signal(sig, record)
            elif what == "ignore":
                signal.signal(sig, signal.SIG_IGN)
            elif what == "default":
                signal.signal(sig, signal.SIG_DFL)
            out.append(sorted(int(s) for s in signal.sigpending()) if what == "pending"
                       else handled[before:])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for s, h in old.items():
            signal.signal(s, h)
    return out


def l4_signals(ops: list[Op]) -> list[Any]:
    k = kernel()
    system = System(k, ["signal"])
    sigs = Signals()
    out: list[Any] = []

    async def record(t: Any, sig: int) -> None:
        pass

    async def main(t: Any, env: Env) -> None:
        pid = await sigs.getpid(t)
        for s in SIGS[:2]:
            await sigs.action(t, env, s, record)
        for what, sig in ops:
            before = len(sigs.handled)
            if what == "kill":
                await Signals.kill(t, env, pid, sig)
            elif what in ("block", "unblock"):
                await sigs.mask(t, env, SIG_BLOCK if what == "block" else SIG_UNBLOCK, {sig})
            elif what in ("handle", "ignore", "default"):
                await sigs.action(t, env, sig, {"handle": record, "ignore": SIG_IGN,
                                                "default": 0}[what])
            out.append(sorted(await sigs.pending(t, env)) if what == "pending"
                       else sigs.handled[before:])

    proc = system.process("p")
    proc.thread(sigs.thread_body, name="sig", priority=140)
    proc.thread(main, name="main")
    result = k.run()
    assert not result.died, result
    return out


@SETTINGS
@given(st.lists(sig_op, max_size=16))
def test_signals_against_the_host(ops: list[Op]) -> None:
    assert l4_signals(ops) == host_signals(ops)


# --- documented differences, each asserted --------------------------------------------------


def test_difference_a_shrunk_mapping_stays_revoked() -> None:
    """Linux: a mapping beyond a shrunk object's end raises SIGBUS, and after the object
    grows again it sees the object's (zeroed) pages. l4sim: the shrink revokes those
    pages from every mapping; an access there faults to the client's own pager, which
    gives it a private zero page, not the object's."""
    out: list[Any] = []

    async def body(t: Any, env: Env) -> None:
        s = await SharedMemory.open(t, env, "/m", os.O_CREAT | os.O_RDWR)
        await s.truncate(2 * PAGE)
        m = await s.map(2 * PAGE)
        await s.truncate(PAGE)
        await s.truncate(2 * PAGE)
        await t.store(m.addr + PAGE, b"private")
        fresh = await s.map(2 * PAGE)
        out.append(await t.load(fresh.addr + PAGE, 7))

    k = kernel()
    System(k, ["shm"]).process("p").thread(body, name="p")
    k.run()
    assert out == [bytes(7)]


def test_difference_no_sigpipe_only_epipe() -> None:
    """Linux sends SIGPIPE with EPIPE (Python ignores it, so the host sees EPIPE only);
    l4sim's pipe server returns EPIPE and sends no signal."""
    r, w = os.pipe()
    os.close(r)
    with pytest.raises(BrokenPipeError):
        os.write(w, b"x")
    os.close(w)
    out: list[int] = []

    async def body(t: Any, env: Env) -> None:
        rd, wr = await Pipe.pipe(t, env)
        await rd.close()
        out.append(await errno_of(wr.write(b"x")))

    k = kernel()
    System(k, ["pipe"]).process("p").thread(body, name="p")
    k.run()
    assert out == [errno.EPIPE]


def test_difference_handlers_run_in_the_signal_thread() -> None:
    """POSIX runs a handler on a thread of the target, interrupting it; l4sim runs it
    in the process's signal thread, beside the others."""
    sigs = Signals()
    ran_in: list[str] = []

    async def handler(t: Any, sig: int) -> None:
        ran_in.append(t.name)

    async def main(t: Any, env: Env) -> None:
        await sigs.action(t, env, USR1, handler)
        await Signals.kill(t, env, await sigs.getpid(t), USR1)

    k = kernel()
    proc = System(k, ["signal"]).process("p")
    proc.thread(sigs.thread_body, name="signal-thread", priority=140)
    proc.thread(main, name="main")
    k.run()
    assert ran_in == ["signal-thread"]
