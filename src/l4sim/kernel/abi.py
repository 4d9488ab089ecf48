"""The ABI: values that cross the user/kernel boundary, bit-exact with Fiasco.

Error codes, the message tag, timeouts, capability and memory rights, flexpages and
typed send items. Everything here is a small immutable value; the layouts are the
ones in FIASCO_FACTS.md.
"""

from __future__ import annotations

import enum
from typing import Final

WORD_MASK: Final = (1 << 64) - 1
MR_COUNT: Final = 63
BR_COUNT: Final = 58


class IpcError(enum.IntEnum):
    """L4 IPC error codes (error TCR bits 0-4): even = send phase, odd = receive phase."""

    OK = 0x00
    SETIMEOUT = 0x02
    RETIMEOUT = 0x03
    ENOT_EXISTENT = 0x04
    SECANCELED = 0x06
    RECANCELED = 0x07
    SEMSGCUT = 0x08
    REMSGCUT = 0x09
    SESNDPFTO = 0x0A
    RESNDPFTO = 0x0B
    SERCVPFTO = 0x0C
    RERCVPFTO = 0x0D
    SEABORTED = 0x0E
    REABORTED = 0x0F
    SEMAPFAILED = 0x10
    REMAPFAILED = 0x11
    NO_REPLY_CAP = 0x13

    @property
    def is_receive_phase(self) -> bool:
        return bool(self & 1)


class Label:
    """Protocol labels: negative labels belong to the kernel."""

    IRQ: Final = -1
    PAGE_FAULT: Final = -2
    PREEMPTION: Final = -3
    SYS_EXCEPTION: Final = -4
    EXCEPTION: Final = -5
    SIGMA0: Final = -6
    IO_PAGE_FAULT: Final = -8
    KOBJECT: Final = -10
    TASK: Final = -11
    THREAD: Final = -12
    SCHEDULER: Final = -14
    FACTORY: Final = -15
    IRQ_SENDER: Final = -18
    SEMAPHORE: Final = -20


class IpcOp(enum.IntFlag):
    """IPC operation flags, as the low bits of Fiasco's capability selector."""

    SEND = 1
    RECEIVE = 2
    OPEN_WAIT = 4
    REPLY = 8
    CALL = 3
    WAIT = 6
    SEND_AND_WAIT = 7
    REPLY_AND_WAIT = 15


class MsgTag:
    """`l4_msgtag_t`: label << 16 | flags (bits 12-15) | items << 6 | words (bits 0-5).

    The label is signed. `raw` is that value as a Python int (negative when the label
    is negative); `word` is it as an unsigned 64-bit MR word.
    """

    __slots__ = ("raw",)

    FLAG_ERROR: Final = 0x8000
    FLAG_TRANSFER_FPU: Final = 0x1000
    FLAG_SCHEDULE: Final = 0x2000
    FLAG_PROPAGATE: Final = 0x4000

    raw: int

    def __init__(self, label: int = 0, words: int = 0, items: int = 0, flags: int = 0) -> None:
        if not 0 <= words < 64 or not 0 <= items < 64:
            raise ValueError(f"words and items must be in 0..63, got {words}, {items}")
        if flags & ~0xF000:
            raise ValueError(f"flags must be within bits 12-15, got {flags:#x}")
        if not -(1 << 47) <= label < (1 << 47):
            raise OverflowError(f"label {label} does not fit 48 signed bits")
        self.raw = label << 16 | flags | items << 6 | words

    @classmethod
    def from_raw(cls, raw: int) -> MsgTag:
        """Decode a tag from a (signed or unsigned 64-bit) word."""
        if raw >= 1 << 63:
            raw -= 1 << 64
        tag = cls.__new__(cls)
        tag.raw = raw
        return tag

    @property
    def label(self) -> int:
        return self.raw >> 16

    @property
    def words(self) -> int:
        return self.raw & 0x3F

    @property
    def items(self) -> int:
        return (self.raw >> 6) & 0x3F

    @property
    def flags(self) -> int:
        return self.raw & 0xF000

    @property
    def has_error(self) -> bool:
        return bool(self.raw & 0x8000)

    @property
    def word(self) -> int:
        return self.raw & WORD_MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MsgTag) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return (f"MsgTag(label={self.label}, words={self.words}, items={self.items}, "
                f"flags={self.flags:#x})")


class CapRights(enum.IntFlag):
    """Object-capability rights (Fiasco's object fpage bits)."""

    NONE = 0
    W = 1
    S = 2  # special: binding IRQs and gates
    R = 4  # needed to invoke the object at all, IPC included
    D = 8  # delete
    ALL = 0xF


class Rights(enum.IntFlag):
    """Memory rights (flexpage bits)."""

    NONE = 0
    X = 1
    W = 2
    R = 4
    RW = 6
    RX = 5
    RWX = 7


# --- timeouts -----------------------------------------------------------------------

_NEVER, _ZERO, _REL_US, _REL_CYCLES, _ABS, _ABS_US = range(6)


class Timeout:
    """An IPC timeout: never, zero, relative (µs or cycles) or absolute (cycles).

    Friendly constructors for users; `from_raw`/`to_raw` convert Fiasco's 16-bit form
    (bit 15 absolute, bits 14-10 exponent e, bits 9-0 mantissa m: m * 2**e µs).
    """

    __slots__ = ("kind", "value", "_mhz", "_rel")

    kind: int
    value: int

    def __init__(self, kind: int, value: int = 0) -> None:
        self.kind = kind
        self.value = value
        # A relative timeout's length in cycles at clock `_mhz` (0: not computed yet):
        # the fast path reads it instead of converting µs on every IPC.
        self._mhz = 0
        self._rel = 0

    # constructors
    @staticmethod
    def never() -> Timeout:
        return NEVER

    @staticmethod
    def zero() -> Timeout:
        return ZERO

    @staticmethod
    def us(n: int | float) -> Timeout:
        """Relative timeout of `n` microseconds of simulated time (converted with the clock)."""
        if isinstance(n, bool) or not isinstance(n, (int, float)):
            raise TypeError(f"Timeout.us takes a number of microseconds (an int or a float), "
                            f"got {n!r} ({type(n).__name__}): write Timeout.us(5), or "
                            "Timeout.cycles(n) for cycles")
        if n < 0:
            raise ValueError(f"timeout must not be negative, got {n}")
        return Timeout(_REL_US, round(n * 1000))  # kept in ns for exactness

    @staticmethod
    def cycles(n: int) -> Timeout:
        """Relative timeout of `n` simulated cycles."""
        if not isinstance(n, int):
            raise TypeError(f"cycles must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"timeout must not be negative, got {n}")
        return Timeout(_REL_CYCLES, n)

    @staticmethod
    def at(cycles: int) -> Timeout:
        """Absolute timeout: the point `cycles` of simulated time."""
        if not isinstance(cycles, int):
            raise TypeError(f"cycles must be an int, got {type(cycles).__name__}")
        if cycles < 0:
            raise ValueError(f"timeout must not be negative, got {cycles}")
        return Timeout(_ABS, cycles)

    @property
    def is_never(self) -> bool:
        return self.kind == _NEVER

    @property
    def is_zero(self) -> bool:
        return self.kind == _ZERO

    def deadline(self, now: int, mhz: int) -> int | None:
        """Absolute expiry in cycles; None for never. Zero gives `now`."""
        kind = self.kind
        if kind == _NEVER:
            return None
        if kind == _ZERO:
            return now
        if kind == _REL_CYCLES:
            self._mhz = mhz
            self._rel = self.value
            return now + self.value
        if kind == _REL_US:
            self._mhz = mhz
            self._rel = rel = (self.value * mhz + 999) // 1000
            return now + rel
        if kind == _ABS_US:
            return self.value * mhz
        return self.value

    # Fiasco's 16-bit encoding
    @staticmethod
    def from_raw(raw: int, br: object = None) -> Timeout:
        """Decode one 16-bit timeout half. Absolute ones read µs from `br[raw & 0x3f]`."""
        if not 0 <= raw <= 0xFFFF:
            raise ValueError(f"a raw timeout is 16 bits, got {raw:#x}")
        if raw == 0:
            return NEVER
        if raw & 0x8000:
            if br is None:
                raise ValueError("an absolute raw timeout needs the buffer registers")
            if raw & 0x3F >= BR_COUNT:
                raise ValueError(f"an absolute raw timeout names BR{raw & 0x3F}, "
                                 f"but the UTCB has {BR_COUNT} BRs")
            return Timeout(_ABS_US, int(br[raw & 0x3F]))  # type: ignore[index]
        e = (raw >> 10) & 0x1F
        m = raw & 0x3FF
        if m == 0 and e == 1:
            return ZERO
        return Timeout(_REL_US, (m << e) * 1000)

    @staticmethod
    def raw_from_us(us: int) -> int:
        """Fiasco's encoding of a relative timeout of `us` microseconds."""
        if us < 0:
            raise ValueError(f"timeout must not be negative, got {us}")
        if us == 0:
            return 0x0400
        if us > (1 << 41) - 1:
            return 0
        e = max(0, us.bit_length() - 1 - 9)
        m = -(-us // (1 << e))
        if m > 1023:
            e += 1
            m >>= 1
        if e > 31:
            e, m = 31, 1023
        return e << 10 | m

    def to_raw(self) -> int:
        """This timeout in Fiasco's 16-bit form (relative and special ones only)."""
        if self.kind == _NEVER:
            return 0
        if self.kind == _ZERO:
            return 0x0400
        if self.kind == _REL_US:
            return Timeout.raw_from_us(-(-self.value // 1000))
        raise ValueError("only never, zero and µs timeouts have a relative raw form; "
                         "cycle and absolute timeouts depend on the clock")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timeout) and (other.kind, other.value) == (self.kind, self.value)

    def __hash__(self) -> int:
        return hash((self.kind, self.value))

    def __repr__(self) -> str:
        if self.kind == _NEVER:
            return "Timeout.never()"
        if self.kind == _ZERO:
            return "Timeout.zero()"
        if self.kind == _REL_US:
            return f"Timeout.us({self.value / 1000:g})"
        if self.kind == _REL_CYCLES:
            return f"Timeout.cycles({self.value})"
        if self.kind == _ABS_US:
            return f"Timeout(absolute {self.value} µs)"
        return f"Timeout.at({self.value})"


NEVER: Final = Timeout(_NEVER)
ZERO: Final = Timeout(_ZERO)


# --- flexpages and typed items ------------------------------------------------------

class Fpage:
    """`l4_fpage_t`: rights bits 0-3, type bits 4-5, order bits 6-11, address bits >= 12."""

    __slots__ = ("raw",)

    SPECIAL: Final = 0
    MEMORY: Final = 1
    IO: Final = 2
    OBJECT: Final = 3

    raw: int

    def __init__(self, raw: int) -> None:
        if not 0 <= raw <= WORD_MASK:
            raise OverflowError(f"an fpage is one 64-bit word, got {raw:#x}")
        self.raw = raw

    @classmethod
    def _make(cls, kind: int, base: int, order: int, rights: int) -> Fpage:
        if not 0 <= order < 64:
            raise ValueError(f"order must be in 0..63, got {order}")
        if not 0 <= rights <= 0xF:
            raise ValueError(f"rights must be 4 bits, got {rights:#x}")
        if base < 0:
            raise ValueError(f"base must not be negative, got {base}")
        return cls(((base >> 12) << 12) | order << 6 | kind << 4 | int(rights))

    @classmethod
    def mem(cls, addr: int, order: int, rights: int = Rights.RWX) -> Fpage:
        return cls._make(cls.MEMORY, addr, order, rights)

    @classmethod
    def obj(cls, sel: int, order: int = 0, rights: int = CapRights.ALL) -> Fpage:
        return cls._make(cls.OBJECT, sel << 12, order, rights)

    @classmethod
    def io(cls, port: int, order: int = 0, rights: int = Rights.RW) -> Fpage:
        return cls._make(cls.IO, port << 12, order, rights)

    @classmethod
    def all(cls) -> Fpage:
        return cls(63 << 6 | 0xF)

    @property
    def rights(self) -> int:
        return self.raw & 0xF

    @property
    def type(self) -> int:
        return (self.raw >> 4) & 3

    @property
    def order(self) -> int:
        return (self.raw >> 6) & 0x3F

    @property
    def address(self) -> int:
        """Memory address (the bits below the order are ignored, as in Fiasco)."""
        return self.raw & ~0xFFF & ~((1 << self.order) - 1) & WORD_MASK

    @property
    def index(self) -> int:
        """Port or capability index for I/O and object fpages."""
        return self.raw >> 12

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fpage) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return (f"Fpage(type={self.type}, base={self.raw >> 12 << 12:#x}, order={self.order}, "
                f"rights={self.rights:#x})")


class MapItem:
    """A flexpage send item: w0 = send base | map 8 | grant 2; w1 = the fpage."""

    __slots__ = ("fpage", "send_base", "grant")

    def __init__(self, fpage: Fpage, send_base: int = 0, grant: bool = False) -> None:
        if not isinstance(fpage, Fpage):
            raise TypeError(f"MapItem needs an Fpage, got {type(fpage).__name__}")
        self.fpage = fpage
        self.send_base = send_base
        self.grant = grant

    def words(self) -> tuple[int, int]:
        return ((self.send_base >> 12 << 12) | 8 | (2 if self.grant else 0)) & WORD_MASK, self.fpage.raw


class StringItem:
    """A string send item (user-memory IPC): l4sim's own L4 X.2-style layout."""

    __slots__ = ("addr", "length")

    def __init__(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0:
            raise ValueError("string address and length must not be negative")
        self.addr = addr
        self.length = length

    def words(self) -> tuple[int, int]:
        # w0: length << 12 | string-item marker 0x4; w1: address
        return (self.length << 12 | 0x4) & WORD_MASK, self.addr & WORD_MASK
