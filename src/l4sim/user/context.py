"""The user side of a thread: `t`, the first argument of every thread body.

Each IPC method checks its Python arguments (misuse raises here, in the user's code,
as any Python library does), loads the message into the UTCB's MRs, and returns the
kernel's coroutine for the user to await: the kernel path then runs in the same
coroutine chain as the user code, one frame below it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ..kernel import exceptions as _exc
from ..kernel import fastpath
from ..kernel import flexpage as _flexpage
from ..kernel import ipc as _ipc
from ..kernel import irq as _irqs
from ..kernel import pagefault as _pf
from ..kernel import sched as _sched
from ..kernel.abi import (
    BR_COUNT,
    MR_COUNT,
    NEVER,
    ZERO,
    CapRights,
    Fpage,
    IpcError,
    IpcOp,
    MapItem,
    MsgTag,
    StringItem,
    Timeout,
)
from ..kernel.diagnose import register_operations
from ..kernel.errors import ThreadDeleted
from ..kernel.fastpath import Buffers, Windows
from ..kernel.lifecycle import delete_object, wait_for_lock
from ..kernel.message import load_two_words, load_words
from ..kernel.objects import Irq, Thread, Utcb
from ..kernel.result import IpcResult
from ..kernel.states import DEAD

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel
    from ..kernel.sched import Cpu

Item = MapItem | StringItem
Op = Awaitable[IpcResult]

_LABEL_MIN, _LABEL_MAX = -(1 << 47), 1 << 47
_R, _S = int(CapRights.R), int(CapRights.S)


def _check_timeout(name: str, value: object) -> Timeout:
    if not isinstance(value, Timeout):
        raise TypeError(f"{name} must be a Timeout (Timeout.never(), .zero(), .us(n), "
                        f".cycles(n), .at(t)), got {type(value).__name__}")
    return value


_BDR_SHIFT = {Fpage.MEMORY: 0, Fpage.IO: 5, Fpage.OBJECT: 10}
_BUFFER_BR = 6  # string receive buffers start after the three window pairs


def _check_access(addr: object, n: object) -> None:
    if type(addr) is not int or type(n) is not int:  # (on every load and store: no loop)
        name, value = ("addr", addr) if type(addr) is not int else ("n", n)
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if addr < 0 or n < 0:
        raise ValueError(f"addr and n must not be negative, got {addr:#x}, {n}")


_EXPIRED = Timeout.at(0)


def _raw_timeout(half: int, br: Sequence[int]) -> Timeout:
    """One 16-bit half of the raw timeout word. An absolute timeout names the BR that
    holds its point in time; one naming a BR the UTCB does not have (58..63) has no
    point in time: it counts as already expired, like a relative one of m = 0."""
    if half & 0x8000 and half & 0x3F >= BR_COUNT:
        return _EXPIRED
    return Timeout.from_raw(half, br)


def _check_cpu(k: Kernel, cpu: object) -> Cpu:
    if type(cpu) is not int or not 0 <= cpu < len(k.cpus):
        raise ValueError(f"cpu must be an int in 0..{len(k.cpus) - 1}, got {cpu!r}")
    return k.cpus[cpu]


def _check_sel(sel: object) -> int:
    if type(sel) is not int:
        raise TypeError(f"a capability selector is an int, got {type(sel).__name__}")
    return sel


class UserContext:
    """What a thread body calls. Selectors name capabilities in the thread's own task."""

    __slots__ = ("_k", "_th", "_mr", "fast")

    def __new__(cls, kernel: Kernel, thread: Thread) -> UserContext:
        # A kernel without the fast path (checked, traced, an exploring chooser, or
        # `fastpath=False`) gives its threads the general path's entries.
        return object.__new__(cls if kernel.fastpath else GeneralUserContext)

    def __init__(self, kernel: Kernel, thread: Thread) -> None:
        self._k = kernel
        self._th = thread
        self._mr = thread.mr
        # The kernel turns it off while a step limit is set (also for a thread made
        # during such a run, as the anonymous pager is on the first fault).
        self.fast = kernel.fastpath and kernel.entry_limit >= _sched.INFINITY

    # --- what a thread knows about itself ---------------------------------------------

    @property
    def utcb(self) -> Utcb:
        return self._th.utcb

    @property
    def tid(self) -> int:
        return self._th.tid

    @property
    def name(self) -> str:
        return self._th.name

    @property
    def self_sel(self) -> int:
        return self._th.self_sel

    @property
    def pager_sel(self) -> int:
        return self._th.pager_sel

    @property
    def now(self) -> int:
        """Simulated time in cycles (of the kernel's clock, `k.mhz` per µs)."""
        return self._th.cpu.now

    # --- building a message -------------------------------------------------------------

    def _load(self, words: Sequence[int], label: int, items: Iterable[Item],
              tag: MsgTag | None) -> int:
        """Write words and typed items into the MRs; the raw tag describing them."""
        if (tag is None and type(label) is int and not label and type(items) is tuple
                and not items and (type(words) is tuple or type(words) is list)
                and len(words) == 2):
            load_two_words(self._th.mr, words)  # (the common message: no array built)
            return 2
        if tag is not None:
            if not isinstance(tag, MsgTag):
                raise TypeError(f"tag must be a MsgTag, got {type(tag).__name__}")
            if words or items:
                raise ValueError("pass either tag= (words already in the MRs) or words=/items=")
            return tag.raw
        mr = self._th.mr
        n = load_words(mr, words)
        nitems = 0
        if items:
            for item in items:
                if not isinstance(item, (MapItem, StringItem)):
                    raise TypeError(f"items are MapItem or StringItem, got {type(item).__name__}")
                at = n + 2 * nitems
                if at + 2 > MR_COUNT:
                    raise ValueError("the words and typed items do not fit the 63 MRs")
                mr[at], mr[at + 1] = item.words()
                nitems += 1
        if label:
            if type(label) is not int:
                raise TypeError(f"a label is an int, got {type(label).__name__}")
            if not _LABEL_MIN <= label < _LABEL_MAX:
                raise OverflowError(f"label {label} does not fit 48 signed bits")
            return label << 16 | nitems << 6 | n
        return nitems << 6 | n

    def _set_receive(self, window: Windows, buffers: Buffers) -> None:
        """Receive windows and string buffers into the BRs and the BDR. Both are checked
        before any register changes: misuse raises and leaves the BRs as they were."""
        windows = self._plan_windows(window) if window is not None else None
        bufs = self._plan_buffers(buffers) if buffers is not None else None
        utcb = self._th.utcb
        br = utcb.br
        if windows is not None:
            fps, bdr = windows
            for i, fp in enumerate(fps):
                br[2 * i] = 8
                br[2 * i + 1] = fp.raw
            if not fps:
                br[0] = br[1] = 0
            utcb.bdr = bdr | (utcb.bdr & (0x1F << 15))
        if bufs is not None:
            for i, (addr, size) in enumerate(bufs):
                br[_BUFFER_BR + 2 * i] = size << 12 | 0x4
                br[_BUFFER_BR + 2 * i + 1] = addr
            end = _BUFFER_BR + 2 * len(bufs)
            if end < BR_COUNT:
                br[end] = 0
            utcb.bdr = (utcb.bdr & ~(0x1F << 15)) | _BUFFER_BR << 15

    @staticmethod
    def _plan_buffers(buffers: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Check `buffers=`: string receive buffers go into the BRs from BR6 (after the
        windows), BDR bits 15-19 pointing at them: BR[j] = size << 12 | 0x4, BR[j+1] =
        the address. They stay until the next `buffers=` (`()` clears)."""
        bufs = list(buffers)
        if len(bufs) > (BR_COUNT - _BUFFER_BR) // 2:
            raise ValueError(f"at most {(BR_COUNT - _BUFFER_BR) // 2} string buffers")
        for buf in bufs:
            if (not isinstance(buf, tuple) or len(buf) != 2
                    or not all(type(v) is int for v in buf)):
                raise TypeError(f"a string buffer is (address, size), got {buf!r}")
            addr, size = buf
            if addr < 0 or size < 0 or addr + size > 1 << 47:
                raise ValueError(f"buffer ({addr:#x}, {size}) is not inside the address space")
        return bufs

    @staticmethod
    def _plan_windows(window: Fpage | Sequence[Fpage]) -> tuple[list[Fpage], int]:
        """Check `window=`: the windows, one per kind, and the BDR fields pointing at them,
        as Fiasco lays them out (BR[2i] = 8, a map buffer; BR[2i+1] = the fpage). The BRs
        are registers: the windows stay until the next `window=` (`()` clears)."""
        if type(window) is Fpage:  # one window (a pager's sigma0 call): BR0/BR1, BDR 0
            if window.raw & 0x30 == 0 and window.raw & 0xFC0 != 0xFC0:
                raise ValueError(f"{window!r} is not a receive window")
            return [window], 0
        fps = [window] if isinstance(window, Fpage) else list(window)
        if len(fps) > 3:
            raise ValueError("at most one receive window per kind (memory, I/O, objects)")
        bdr = 0
        taken: set[int] = set()
        for fp in fps:
            if not isinstance(fp, Fpage):
                raise TypeError(f"a receive window is an Fpage, got {type(fp).__name__}")
            if fp.type == Fpage.SPECIAL and fp.order != 63:
                raise ValueError(f"{fp!r} is not a receive window")
        order = sorted(range(len(fps)), key=lambda i: fps[i].type == Fpage.SPECIAL)
        for i in order:  # "all" takes the kinds no other window names
            fp = fps[i]
            kinds = ((fp.type,) if fp.type != Fpage.SPECIAL
                     else tuple(k for k in (Fpage.MEMORY, Fpage.IO, Fpage.OBJECT) if k not in taken))
            for kind in kinds:
                if kind in taken:
                    raise ValueError("at most one receive window per kind (memory, I/O, objects)")
                taken.add(kind)
                bdr |= 2 * i << _BDR_SHIFT[kind]
        return fps, bdr

    # --- memory -------------------------------------------------------------------

    async def _pieces(self, addr: int, n: int, write: bool) -> list[tuple[int, int]]:
        """The physical pieces of an access; page faults first for what is missing.
        Returns without yielding when everything is mapped. (`load` and `store` write
        out its common case and come here for the rest: misuse, a dead thread, the
        explorer.)"""
        _check_access(addr, n)
        th = self._th
        if th.state & DEAD:
            raise ThreadDeleted  # a dead thread's chain being unwound touches no memory
        if th.cpu.preempts:
            return await _pf.explored_access(self._k, th, addr, n, write)
        pieces, missing, present = _pf.translate(th, addr, n, 2 if write else 4)
        if missing >= 0:
            pieces = await _pf.access(self._k, th, addr, n, write, missing, present)
        return pieces

    async def load(self, addr: int, n: int) -> bytes:
        """Read `n` bytes at `addr` of this task's address space; a page fault (IPC to
        the pager) for each page not mapped readable, then the read."""
        th = self._th
        if (type(addr) is int and type(n) is int and addr >= 0 and n >= 0
                and not th.state & DEAD and not th.cpu.preempts):
            # `_pieces` written out for the common case (a frame less on every load)
            pieces, missing, present = _pf.translate(th, addr, n, 4)
            if missing >= 0:
                pieces = await _pf.access(self._k, th, addr, n, False, missing, present)
        else:
            pieces = await self._pieces(addr, n, False)
        view = self._k.phys.view
        if len(pieces) == 1:
            p, ln = pieces[0]
            data = bytes(view[p:p + ln])
        else:
            data = b"".join(view[p:p + ln] for p, ln in pieces)
        if self._k.trace and self._th.cpu.preempts:
            self._trace_shared("load", addr, data)
        return data

    def _trace_shared(self, what: str, addr: int, data: bytes) -> None:
        """Under the explorer, the loads and stores it can reorder are events of the
        trace, so that a race shows in its diagrams."""
        if _pf.reachable_by_others(self._th, addr, len(data)):
            value = (str(int.from_bytes(data, "little")) if len(data) == 8
                     else data[:16].hex() + ("…" if len(data) > 16 else ""))
            self._k.record(self._th, what, f"{addr:#x} {'->' if what == 'load' else '<-'} {value}")

    async def store(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` at `addr`; page faults (write) for what is not mapped writable."""
        if not isinstance(data, (bytes, bytearray)):
            if not isinstance(data, memoryview):
                raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
            # its bytes, whatever its item size and layout (len() counts items)
            data = data.cast("B") if data.c_contiguous else memoryview(data.tobytes())
        n = len(data)
        th = self._th
        if type(addr) is int and addr >= 0 and not th.state & DEAD and not th.cpu.preempts:
            # `_pieces` written out for the common case (a frame less on every store)
            pieces, missing, present = _pf.translate(th, addr, n, 2)
            if missing >= 0:
                pieces = await _pf.access(self._k, th, addr, n, True, missing, present)
        else:
            pieces = await self._pieces(addr, n, True)
        view = self._k.phys.view
        if len(pieces) == 1 and type(data) is bytes:
            p, ln = pieces[0]
            view[p:p + ln] = data
        else:
            src = memoryview(data).cast("B")
            at = 0
            for p, ln in pieces:
                view[p:p + ln] = src[at:at + ln]
                at += ln
        if self._k.trace and th.cpu.preempts:
            self._trace_shared("store", addr, bytes(memoryview(data).cast("B")))

    async def load_word(self, addr: int) -> int:
        """One 64-bit little-endian word."""
        return int.from_bytes(await self.load(addr, 8), "little")

    async def store_word(self, addr: int, value: int) -> None:
        """Store one 64-bit little-endian word."""
        if type(value) is not int:
            raise TypeError(f"a word is an int, got {type(value).__name__}")
        await self.store(addr, value.to_bytes(8, "little"))

    async def unmap(self, fpage: Fpage, self_too: bool = False) -> int:
        """Revoke the fpage's rights from every mapping (capability) derived from this
        task's in that region, in every task, recursively; from this task's own too with
        `self_too` (Fiasco's "all spaces"). Returns how many mappings were removed."""
        if not isinstance(fpage, Fpage):
            raise TypeError(f"unmap needs an Fpage, got {type(fpage).__name__}")
        k, th = self._k, self._th
        await th.cpu.enter(th, k.costs.kernel_op)
        n = _flexpage.unmap(k, th, fpage.raw, bool(self_too))
        if k.trace:
            k.record(th, "unmap", f"{fpage!r}{' self too' if self_too else ''}: {n} removed")
        await th.cpu.leave(th, _ipc.EMPTY_OK)
        return n

    # --- the IPC primitives -------------------------------------------------------------

    call = fastpath.call  # the system-call entry with the kernel's fast path

    def _prepare_call(self, dest: int, words: Sequence[int], label: int,
                      items: Iterable[Item], send_timeout: Timeout,
                      receive_timeout: Timeout, pagefault_timeout: Timeout,
                      tag: MsgTag | None, window: Windows = None, buffers: Buffers = None) -> int:
        """`call`'s arguments checked and loaded for the general path: the raw tag. (A
        plain function: the fast path's fallback awaits the IPC itself, a level less.)"""
        if not (type(dest) is int and type(send_timeout) is Timeout
                and type(receive_timeout) is Timeout and type(pagefault_timeout) is Timeout):
            _check_sel(dest)  # (the checks in full only when the plain types do not match)
            _check_timeout("send_timeout", send_timeout)
            _check_timeout("receive_timeout", receive_timeout)
            _check_timeout("pagefault_timeout", pagefault_timeout)
        tagraw = self._load(words, label, items, tag)
        if window is not None or buffers is not None:
            self._set_receive(window, buffers)
        return tagraw

    def send(self, dest: int, words: Sequence[int] = (), label: int = 0,
             items: Iterable[Item] = (), send_timeout: Timeout = NEVER,
             pagefault_timeout: Timeout = NEVER, tag: MsgTag | None = None) -> Op:
        """Send to `dest`; wait at most `send_timeout` for it to be ready to receive."""
        _check_sel(dest)
        _check_timeout("send_timeout", send_timeout)
        _check_timeout("pagefault_timeout", pagefault_timeout)
        tagraw = self._load(words, label, items, tag)
        return _ipc.ipc(self._k, self._th, _ipc.OP_SEND, dest, tagraw, send_timeout, NEVER,
                        pf_to=pagefault_timeout)

    def receive(self, source: int, receive_timeout: Timeout = NEVER,
                pagefault_timeout: Timeout = NEVER, window: Windows = None,
                buffers: Buffers = None) -> Op:
        """Closed receive: from the thread `source` only."""
        _check_sel(source)
        _check_timeout("receive_timeout", receive_timeout)
        _check_timeout("pagefault_timeout", pagefault_timeout)
        if window is not None or buffers is not None:
            self._set_receive(window, buffers)
        return _ipc.ipc(self._k, self._th, _ipc.OP_RECEIVE, source, 0, NEVER, receive_timeout,
                        pf_to=pagefault_timeout)

    def wait(self, receive_timeout: Timeout = NEVER, pagefault_timeout: Timeout = NEVER,
             window: Windows = None, buffers: Buffers = None) -> Op:
        """Open receive: from anyone."""
        _check_timeout("receive_timeout", receive_timeout)
        _check_timeout("pagefault_timeout", pagefault_timeout)
        if window is not None or buffers is not None:
            self._set_receive(window, buffers)
        return _ipc.ipc(self._k, self._th, _ipc.OP_WAIT, 0, 0, NEVER, receive_timeout,
                        pf_to=pagefault_timeout)

    reply_and_wait = fastpath.reply_and_wait  # the system-call entry with the fast path

    def _prepare_reply_and_wait(self, words: Sequence[int], label: int,
                                items: Iterable[Item], receive_timeout: Timeout,
                                pagefault_timeout: Timeout, tag: MsgTag | None,
                                window: Windows = None, buffers: Buffers = None) -> int:
        """`reply_and_wait`'s arguments checked and loaded for the general path."""
        if not (type(receive_timeout) is Timeout and type(pagefault_timeout) is Timeout):
            _check_timeout("receive_timeout", receive_timeout)
            _check_timeout("pagefault_timeout", pagefault_timeout)
        tagraw = self._load(words, label, items, tag)
        if window is not None or buffers is not None:
            self._set_receive(window, buffers)
        return tagraw

    def reply(self, words: Sequence[int] = (), label: int = 0, items: Iterable[Item] = (),
              pagefault_timeout: Timeout = NEVER, tag: MsgTag | None = None) -> Op:
        """Reply to the last caller with a zero timeout, and go on."""
        _check_timeout("pagefault_timeout", pagefault_timeout)
        tagraw = self._load(words, label, items, tag)
        return _ipc.ipc(self._k, self._th, _ipc.OP_REPLY, 0, tagraw, ZERO, NEVER,
                        pf_to=pagefault_timeout)

    def sleep(self, timeout: Timeout) -> Op:
        """A receive from nobody: returns RETIMEOUT when `timeout` expires (RECANCELED if
        cancelled). `Timeout.never()` sleeps until cancelled."""
        _check_timeout("timeout", timeout)
        return _ipc.ipc(self._k, self._th, _ipc.OP_RECEIVE, self._th.self_sel, 0, NEVER, timeout)

    def ipc(self, dest: int, tag: MsgTag | int, flags: int, timeouts: int = 0) -> Op:
        """The raw system call, as Fiasco's `l4_ipc`: `flags` are IpcOp bits, `timeouts`
        the 32-bit timeout word (send half in bits 31-16), the message already in the MRs."""
        _check_sel(dest)
        raw = tag.raw if isinstance(tag, MsgTag) else tag
        if type(raw) is not int:
            raise TypeError(f"tag must be a MsgTag or an int, got {type(tag).__name__}")
        if not -(1 << 63) <= raw < 1 << 64:
            raise OverflowError(f"a message tag is one 64-bit word, got {raw:#x}")
        if not isinstance(flags, int) or flags & ~0xF:
            raise ValueError(f"flags are IpcOp bits (0..15), got {flags!r}")
        if not isinstance(timeouts, int) or not 0 <= timeouts <= 0xFFFFFFFF:
            raise ValueError(f"timeouts is a 32-bit word, got {timeouts!r}")
        br = self._th.utcb.br
        snd_to = _raw_timeout(timeouts >> 16, br) if flags & IpcOp.SEND else NEVER
        rcv_to = _raw_timeout(timeouts & 0xFFFF, br) if flags & IpcOp.RECEIVE else NEVER
        if raw >= 1 << 63:
            raw -= 1 << 64
        return _ipc.ipc(self._k, self._th, int(flags), dest, raw, snd_to, rcv_to)

    # --- other kernel operations --------------------------------------------------------

    async def compute(self, cycles: int) -> None:
        """Spend `cycles` of simulated CPU time; preemptible anywhere inside."""
        if type(cycles) is not int:
            raise TypeError(f"cycles must be an int, got {type(cycles).__name__}")
        if cycles < 0:
            raise ValueError(f"cycles must not be negative, got {cycles}")
        if cycles:
            await self._th.cpu.compute(self._th, cycles)

    async def ex_regs(self, thread_sel: int, cancel: bool = False,
                      cpu: int | None = None) -> IpcError:
        """Cancel the IPC of a thread (before rendezvous: canceled), and with `cpu` give
        it that affinity. OK, or ENOT_EXISTENT for a selector that does not name a thread
        this task may invoke."""
        _check_sel(thread_sel)
        k, th = self._k, self._th
        target = _check_cpu(k, cpu) if cpu is not None else None
        await th.cpu.enter(th, k.costs.kernel_op)
        victim = _ipc.resolve_thread(th, thread_sel)
        if victim is None:
            err = IpcError.ENOT_EXISTENT
        else:
            if cancel:
                _ipc.cancel_ipc(k, victim)
            if target is not None:
                if victim is th:
                    await _sched.migrate_self(th, target)
                else:
                    _sched.migrate(victim, target)
            err = IpcError.OK
        await th.cpu.leave(th, _ipc.EMPTY_OK)
        return err

    async def migrate(self, cpu: int) -> None:
        """Move this thread to CPU `cpu`: it goes on there (an IPI away)."""
        k, th = self._k, self._th
        target = _check_cpu(k, cpu)
        await th.cpu.enter(th, k.costs.kernel_op)
        await _sched.migrate_self(th, target)
        await th.cpu.leave(th, _ipc.EMPTY_OK)

    async def delete(self, sel: int) -> IpcError:
        """Delete the object `sel` names (needs the D right): OK or ENOT_EXISTENT."""
        _check_sel(sel)
        k, th = self._k, self._th
        await th.cpu.enter(th, k.costs.kernel_op)
        caps = th.task.caps
        cap = caps[sel] if 0 < sel < len(caps) else None
        if cap is None or not cap.rights & 8 or not cap.obj.alive:
            await th.cpu.leave(th, _ipc.EMPTY_OK)
            return IpcError.ENOT_EXISTENT
        victim = cap.obj
        delete_object(k, victim)
        if th.state & DEAD:
            raise ThreadDeleted  # we deleted ourselves (or our task)
        if type(victim) is Thread and victim.alive:
            # Locked in a long IPC: the deletion waits for the lock, and so do we.
            await wait_for_lock(k, th, victim)
        await th.cpu.leave(th, _ipc.EMPTY_OK)
        return IpcError.OK

    async def raise_exception(self, trap: int, code: int = 0) -> IpcResult:
        """A CPU exception here: exception IPC to this thread's handler (label -5, MR0 trap,
        MR1 error code, MR2 code location). Returns the handler's reply: its words are the
        result of the "faulting instruction". No handler: the thread is killed."""
        for name, value in (("trap", trap), ("code", code)):
            if type(value) is not int:
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if not 0 <= value < 1 << 64:
                raise OverflowError(f"{name} {value} is not a 64-bit word")
        k = self._k
        r = await _exc.exception_ipc(k, self._th, trap, code, _exc.code_ip_of_frame(k, 1))
        assert r is not None  # no handler to take it: the thread was killed, not returned to
        return r

    # --- interrupts -----------------------------------------------------------------

    async def _irq_op(self, irq_sel: int, right: int, action: Callable[[Irq], object]) -> IpcError:
        """One kernel entry that applies `action` to the IRQ `irq_sel` names (its
        capability needs `right`): OK, or ENOT_EXISTENT for a bad selector."""
        _check_sel(irq_sel)
        k, th = self._k, self._th
        await th.cpu.enter(th, k.costs.kernel_op)
        irq = _ipc.resolve_irq(th, irq_sel, right)
        if irq is not None:
            action(irq)
        await th.cpu.leave(th, _ipc.EMPTY_OK)
        return IpcError.OK if irq is not None else IpcError.ENOT_EXISTENT

    async def irq_bind(self, irq_sel: int, label: int = 0) -> IpcError:
        """Attach this thread to the IRQ (needs the S right); its messages carry `label`."""
        if type(label) is not int:
            raise TypeError(f"a label is an int, got {type(label).__name__}")
        if not _LABEL_MIN <= label < _LABEL_MAX:
            raise OverflowError(f"label {label} does not fit 48 signed bits")
        return await self._irq_op(irq_sel, _S, lambda irq: _irqs.bind(self._k, irq, self._th, label))

    async def irq_detach(self, irq_sel: int) -> IpcError:
        """Detach the IRQ from its thread (needs the S right); it stays pending if it was."""
        return await self._irq_op(irq_sel, _S, lambda irq: _irqs.detach(self._k, irq))

    async def irq_trigger(self, irq_sel: int) -> IpcError:
        """Trigger the IRQ (a software interrupt)."""
        return await self._irq_op(irq_sel, _R, lambda irq: _irqs.trigger(self._k, irq))

    async def irq_unmask(self, irq_sel: int) -> IpcError:
        """Enable the IRQ again after a delivery; a held trigger is delivered now."""
        return await self._irq_op(irq_sel, _R, lambda irq: _irqs.unmask(self._k, irq))

    async def irq_receive(self, irq_sel: int, receive_timeout: Timeout = NEVER) -> IpcResult:
        """Unmask the IRQ and wait for it only (closed wait), in one kernel entry."""
        _check_sel(irq_sel)
        _check_timeout("receive_timeout", receive_timeout)
        irq = _ipc.resolve_irq(self._th, irq_sel)
        if irq is None:  # a receive from selector 0 (always empty) enters and fails alike
            return await _ipc.ipc(self._k, self._th, _ipc.OP_RECEIVE, 0, 0, NEVER, ZERO)
        return await _ipc.ipc(self._k, self._th, _ipc.OP_RECEIVE, irq_sel, 0, NEVER,
                              receive_timeout, unmask=irq)

    async def irq_wait(self, irq_sel: int, receive_timeout: Timeout = NEVER) -> IpcResult:
        """Unmask the IRQ and wait for anyone (open wait), in one kernel entry."""
        _check_sel(irq_sel)
        _check_timeout("receive_timeout", receive_timeout)
        irq = _ipc.resolve_irq(self._th, irq_sel)
        if irq is None:  # a receive from selector 0 (always empty) enters and fails alike
            return await _ipc.ipc(self._k, self._th, _ipc.OP_RECEIVE, 0, 0, NEVER, ZERO)
        return await _ipc.ipc(self._k, self._th, _ipc.OP_WAIT, 0, 0, NEVER, receive_timeout,
                              unmask=irq)

    def __repr__(self) -> str:
        return f"<t of {self._th.name}>"


_NO_ITEMS: tuple[()] = ()  # (the default: the one empty tuple, tested by identity first)


def _general_call(t: UserContext, dest: int, words: Sequence[int] = (), label: int = 0,
                  items: Iterable[Item] = (), send_timeout: Timeout = NEVER,
                  receive_timeout: Timeout = NEVER, pagefault_timeout: Timeout = NEVER,
                  tag: MsgTag | None = None, window: Windows = None,
                  buffers: Buffers = None) -> Op:
    """`call` on a kernel without the fast path: the arguments checked and the message
    loaded (two words when the IPC runs, as on the fast path; others now, as `send` does
    it), and the general IPC handed back to be awaited. (A plain function: a coroutine
    of its own around the IPC would be one more level on every IPC.)"""
    if (type(dest) is int and (send_timeout is NEVER or type(send_timeout) is Timeout)
            and (receive_timeout is NEVER or type(receive_timeout) is Timeout)
            and (pagefault_timeout is NEVER or type(pagefault_timeout) is Timeout)
            and tag is None and window is None and buffers is None and type(label) is int
            and not label and (items is _NO_ITEMS or (type(items) is tuple and not items))
            and (type(words) is tuple or type(words) is list) and len(words) == 2):
        # The common message, two words and nothing else: loaded when the IPC runs, as
        # the fast path loads them, and then the receiver's snapshot (none is copied).
        tagraw = 2
        pair = words if type(words) is tuple else tuple(words)
    else:
        tagraw = t._prepare_call(dest, words, label, items, send_timeout, receive_timeout,
                                 pagefault_timeout, tag, window, buffers)
        pair = None
    return _ipc.ipc(t._k, t._th, _ipc.OP_CALL, dest, tagraw, send_timeout, receive_timeout,
                    None, None, None, pagefault_timeout, pair)


def _general_reply_and_wait(t: UserContext, words: Sequence[int] = (), label: int = 0,
                            items: Iterable[Item] = (), receive_timeout: Timeout = NEVER,
                            pagefault_timeout: Timeout = NEVER, tag: MsgTag | None = None,
                            window: Windows = None, buffers: Buffers = None) -> Op:
    """`reply_and_wait` on a kernel without the fast path (as `_general_call`)."""
    if ((receive_timeout is NEVER or type(receive_timeout) is Timeout)
            and (pagefault_timeout is NEVER or type(pagefault_timeout) is Timeout)
            and tag is None and window is None and buffers is None and type(label) is int
            and not label and (items is _NO_ITEMS or (type(items) is tuple and not items))
            and (type(words) is tuple or type(words) is list) and len(words) == 2):
        # The common message, two words and nothing else: loaded when the IPC runs, as
        # the fast path loads them, and then the receiver's snapshot (none is copied).
        tagraw = 2
        pair = words if type(words) is tuple else tuple(words)
    else:
        tagraw = t._prepare_reply_and_wait(words, label, items, receive_timeout,
                                           pagefault_timeout, tag, window, buffers)
        pair = None
    return _ipc.ipc(t._k, t._th, _ipc.OP_REPLY_AND_WAIT, 0, tagraw, ZERO, receive_timeout,
                    None, None, None, pagefault_timeout, pair)


class GeneralUserContext(UserContext):
    """The user context of a kernel without the fast path: `call` and `reply_and_wait`
    enter the general path directly (the fast path's entries would only fall back to
    it, a coroutine level and a dozen tests later). Everything else is `UserContext`."""

    __slots__ = ()

    # (Plain functions handing back the IPC's coroutine: awaited the same way as the
    # fast path's generator entries, whose type the base class declares.)
    call = _general_call  # type: ignore[assignment]
    reply_and_wait = _general_reply_and_wait  # type: ignore[assignment]


register_operations(UserContext)
register_operations(GeneralUserContext)
