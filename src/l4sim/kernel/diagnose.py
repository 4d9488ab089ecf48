"""What a user is told when something goes wrong in a thread body.

- `DeathReason`: why a thread died, as text that compares equal to the plain reason,
  with the Python traceback of the user's own code (l4sim's frames trimmed).
- A forgotten `await`: an IPC operation's coroutine that is dropped without being
  awaited is reported with the file and line that dropped it.
- Words that do not fit 64 bits, and `asyncio` used inside a body: messages that say
  what was expected and what to use instead.
- Blocked threads: how each one waits, and the wait-for chains of a deadlock
  (`a → b → a`), so that a thread stuck forever is told apart from an idle server.

Nothing here runs on the IPC fast path except under an exception.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from types import CodeType, CoroutineType, GeneratorType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Thread

_F = TypeVar("_F", bound=Callable[..., Any])

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__ or "asyncio")) + os.sep

WORD_MAX = (1 << 64) - 1


def native_coroutine(fn: _F) -> _F:
    """Make a generator function a native coroutine function: the same bytecode, but its
    code is flagged CO_COROUTINE instead of CO_GENERATOR, so that a call whose result is
    never awaited is reported like any forgotten `async def` ("did you forget `await`?").
    Applied over `types.coroutine` (which flags it CO_ITERABLE_COROUTINE, never reported
    by Python), so that type checkers still see a `yield from`-able coroutine."""
    code = fn.__code__
    fn.__code__ = code.replace(co_flags=(code.co_flags & ~0x120) | 0x80)
    return fn


class DeathReason(str):
    """Why a thread died: the reason text (equal to a plain `str` of it), and in
    `.traceback` the Python traceback of the user's code when an exception ended the
    thread (None otherwise)."""

    traceback: str | None

    def __new__(cls, text: str, tb: str | None = None) -> DeathReason:
        self = super().__new__(cls, text)
        self.traceback = tb
        return self


def _is_own(filename: str) -> bool:
    """A frame of l4sim itself (not of a user's file), or of asyncio."""
    return filename.startswith(_PACKAGE_DIR)


def user_traceback(exc: BaseException) -> str:
    """The traceback of `exc` with l4sim's own frames left out: the user's files and
    lines, innermost last, then the exception."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_own(f.filename)]
    lines = ["Traceback (most recent call last, l4sim's frames left out):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


_OP_NAMES = {1: "send", 2: "receive", 3: "call", 6: "wait", 7: "send_and_wait",
             9: "reply", 15: "reply_and_wait"}
# The code objects of the user API's operations, by the name the user calls. The modules
# that define operations register them here (this module imports none of them).
_op_codes: dict[CodeType, str] = {}


def register_operation(fn: Any, name: str) -> None:
    """Name the coroutine function `fn` as the user operation `name` in reports."""
    _op_codes[fn.__code__] = name


def register_operations(cls: type) -> None:
    """Register every coroutine method of the user context `cls` by its name."""
    for name in dir(cls):
        code = getattr(getattr(cls, name, None), "__code__", None)
        if isinstance(code, CodeType) and code.co_flags & 0x80 and code not in _op_codes:
            _op_codes[code] = name.lstrip("_").replace("general_", "")


def operation_name(coro: object) -> str | None:
    """The user operation a coroutine object stands for (`call`, `send`, `load`, ...), or
    None if it is not one of l4sim's."""
    if isinstance(coro, CoroutineType):
        code, frame = coro.cr_code, coro.cr_frame
    elif isinstance(coro, GeneratorType):
        code, frame = coro.gi_code, coro.gi_frame
    else:
        return None
    name = _op_codes.get(code)
    if name == "ipc" and frame is not None:
        op = frame.f_locals.get("op")
        th = frame.f_locals.get("th")
        if op == 2 and th is not None and frame.f_locals.get("sel") == th.self_sel:
            return "sleep"
        return _OP_NAMES.get(int(op) if isinstance(op, int) else -1, "ipc")
    return name


def forgotten_await_hook(k: Kernel, previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """A replacement for `warnings._warn_unawaited_coroutine` while `k` runs: an l4sim
    operation dropped without `await` is recorded in `k.warnings` (and warned about)
    with the user's file and line; any other coroutine is left to Python."""

    def hook(coro: Any) -> None:
        name = operation_name(coro)
        if name is None:
            previous(coro)
            return
        cur = (k.executing or k.boot_cpu).current  # the thread running on the stepping CPU
        dropper = sys._getframe(1)
        if cur is None or _is_own(dropper.f_code.co_filename):
            # dropped by l4sim (the frame of a thread that died): no user line to name
            msg = (f"t.{name}(...) was never awaited, so it did nothing: did you forget "
                   "`await`?")
            k.warnings.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            return
        filename, line = dropper.f_code.co_filename, dropper.f_lineno
        msg = (f"t.{name}(...) was never awaited in thread {cur.name}, so it did nothing: "
               "did you forget `await`?")
        k.warnings.append(f"{filename}:{line}: {msg}")
        warnings.warn_explicit(msg, RuntimeWarning, filename, line, module="l4sim")

    return hook


def exception_reason(exc: BaseException) -> DeathReason:
    """The reason a thread died of `exc`, with a hint where the cause is a common
    mistake, and the trimmed traceback."""
    text = f"{type(exc).__name__}: {exc}"
    hint = _hint(exc)
    if hint:
        text += f" ({hint})"
    return DeathReason(text, user_traceback(exc))


def _hint(exc: BaseException) -> str:
    if isinstance(exc, AttributeError) and operation_name(getattr(exc, "obj", None)):
        name = operation_name(getattr(exc, "obj", None))
        return f"t.{name}(...) returns a coroutine, not its result: did you forget `await`?"
    files = [f.filename for f in traceback.extract_tb(exc.__traceback__)]
    if any(f.startswith(_ASYNCIO_DIR) for f in files) or "event loop" in str(exc):
        return ("a thread body runs in l4sim's simulated time, not in an asyncio event loop: "
                "use `await t.sleep(Timeout.us(n))` instead of asyncio.sleep, and await only "
                "the operations of `t`")
    return ""


def suspended_at(coro: object) -> str:
    """Where a suspended coroutine chain stopped: the innermost frame of the user's code
    along its `cr_await` chain, as "file:line" ("" if none)."""
    where = ""
    c: Any = coro
    while c is not None:
        frame = getattr(c, "cr_frame", None) or getattr(c, "gi_frame", None)
        if (frame is not None and not _is_own(frame.f_code.co_filename)
                and not frame.f_code.co_filename.startswith(_ASYNCIO_DIR)):
            where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        c = getattr(c, "cr_await", None) or getattr(c, "gi_yieldfrom", None)
    return where


FOREIGN_AWAIT = ("awaited something that is not an l4sim operation (asyncio.sleep(0), a "
                 "bare `yield`, a future?): a thread body runs in l4sim's simulated time; use "
                 "`await t.sleep(Timeout.us(n))` to wait, and await only the operations of `t`")


def word_error(words: Sequence[object], exc: Exception) -> Exception:
    """A clear error for message words that do not fit the 64-bit MRs."""
    for i, w in enumerate(words):
        if type(w) is not int and not isinstance(w, int):
            return TypeError(f"words[{i}] is {w!r} ({type(w).__name__}): a message word is "
                             "an int in 0..2**64-1")
        if not 0 <= w <= WORD_MAX:
            fix = ("negative numbers: send w % 2**64 and decode with w - 2**64 if "
                   "w >= 2**63" if w < 0 else "split it into several words, or mask it "
                   "with w & 0xFFFF_FFFF_FFFF_FFFF")
            return OverflowError(f"words[{i}] = {w} does not fit a 64-bit message word "
                                 f"(0..2**64-1): {fix}")
    return exc


# --- blocked threads and deadlocks -------------------------------------------------------

def wait_description(th: Thread) -> str:
    """How a blocked thread waits, in words."""
    from .objects import Irq, Thread
    from .states import DRQ_WAIT, IPC_TRANSFER, RECEIVE_WAIT, SEND_WAIT

    p = th.partner
    if th.state & IPC_TRANSFER:
        return "in a long IPC whose copy does not go on"
    if th.state == DRQ_WAIT and th.drq is not None:
        return f"waits for its handshake with {th.drq.dst.name} on another CPU"
    if th.state == SEND_WAIT and isinstance(p, Thread):
        return f"waits to send to {p.name}" + _ended(p)
    if th.state == RECEIVE_WAIT:
        if p is None:
            return "idle: waits for a message from anyone (open receive)"
        if p is th:
            return "sleeps with no end (until cancelled)"
        if isinstance(p, Irq):
            return f"waits for interrupt {p.name}"
        if isinstance(p, Thread):
            if p.reply_caller is th:
                return f"waits for the reply of {p.name}" + _ended(p)
            return f"waits in a closed receive for {p.name} only" + _ended(p)
    return th.state_name


def _ended(p: Thread) -> str:
    from .states import DEAD

    return ", which has ended: forever" if p.state & DEAD else ""


def is_idle(th: Thread) -> bool:
    """Waiting as a server or device thread does between requests: an open receive, an
    interrupt, or a sleep with no end."""
    from .objects import Thread
    from .states import RECEIVE_WAIT

    return th.state == RECEIVE_WAIT and not (isinstance(th.partner, Thread)
                                             and th.partner is not th)


def wait_for_chains(blocked: Iterable[Thread]) -> list[str]:
    """The wait-for chains among blocked threads: `a → b → a` for a cycle (a deadlock),
    `a → b (idle: ...)` for a chain ending at a thread that is not waiting for anyone
    in particular. Each chain starts at a thread nobody waits for (or, in a cycle, at
    its lowest tid)."""
    from .objects import Thread
    from .states import IPC_TRANSFER, RECEIVE_WAIT, SEND_WAIT

    blocked = list(blocked)

    def nxt(t: Thread) -> Thread | None:
        p = t.partner
        if t.state in (SEND_WAIT, RECEIVE_WAIT) and isinstance(p, Thread) and p is not t:
            return p
        return None

    edges = {t: n for t in blocked if (n := nxt(t)) is not None and not t.state & IPC_TRANSFER}
    waited_on = set(edges.values())
    out: list[str] = []
    done: set[Thread] = set()
    starts = [t for t in blocked if t in edges and t not in waited_on]
    starts += sorted((t for t in edges if t in waited_on), key=lambda t: t.tid)
    for start in starts:
        if start in done:
            continue
        path = [start]
        seen = {start}
        t: Thread | None = edges.get(start)
        while t is not None and t not in seen:
            path.append(t)
            seen.add(t)
            t = edges.get(t)
        done.update(path)
        names = " → ".join(x.name for x in path)
        if t is not None:  # a cycle back to t
            out.append(f"{names} → {t.name} (a cycle: none of them can ever go on)")
        else:
            last = path[-1]
            out.append(f"{names} ({last.name} {_tail(last)})")
    return out


def _tail(t: Thread) -> str:
    from .states import DEAD, IPC_TRANSFER, RECEIVE_WAIT, SEND_WAIT

    if t.state & DEAD:
        return f"has ended: {t.exit_reason or 'returned'}"
    if t.state in (SEND_WAIT, RECEIVE_WAIT) or t.state & IPC_TRANSFER:
        return wait_description(t)
    return f"is {t.state_name}"
