"""The emulated platform: an interrupt controller and devices that raise its
lines at simulated times.

Interrupt controller
    `InterruptController(kernel, lines)` owns `lines` numbered interrupt lines, each an
    `Irq` made with `kernel.new_irq("line<n>")`. A driver thread gets a capability to a
    line's `Irq` (`task.add_cap(platform.irq(n))`), binds to it and receives it.
    `raise_line(n, time)` triggers the line's `Irq` and records the raise — the time the
    device raised it and the time the kernel took it — so latencies can be measured.

Devices
    A device is a plain Python object derived from `Device`. It is attached to a kernel
    and one line (`Platform.add(device, line)`), and from then on:

    - drivers program it through a small MMIO-like API: `device.write(register, value)`
      and `device.read(register) -> int`. Registers are small ints (class constants of
      the device), values unsigned 64-bit words. These are plain synchronous Python calls
      made from the driver's body: atomic like an MMIO access, no kernel entry, no
      simulated time. The device object stands for the register page mapped into the
      driver's task: pass it to the driver thread as an argument. Misuse (an unknown
      register, a read-only register written, a value out of range) raises
      `DeviceError` in the driver's code, as a bus error would;
    - it acts later only through the kernel's event queue: `self.at(time, callback)`
      (`kernel.at`), so it is as deterministic as the kernel: simulated time only.
      When something completes it raises its line with `self.raise_line(time)`.

    To write a device: subclass `Device`, list the registers in `REGISTERS` (number ->
    name) and the read-only ones in `READ_ONLY`, and implement `on_read(register)` and
    `on_write(register, value)` (called after the register and value were checked).
    `on_attach()` is called once the device has its kernel and line.

    `kernel.at` gives no handle to cancel an event, so a device that can be stopped keeps
    a generation number and lets stale callbacks do nothing (see `Timer`). A stale event
    still ends the kernel's idling at its time: a run may end at that time.

Built-in devices: `Timer` (one-shot or periodic) and `BlockDevice` (sectors of 512 bytes,
requests complete after a latency). `Platform(kernel)` makes the controller and adds
devices: `platform.add_timer(line)`, `platform.add_block_device(line, sectors, latency)`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, TypeVar

from ..kernel import Irq, Kernel
from ..kernel.sched import INFINITY  # the end of simulated time

WORD_MAX = (1 << 64) - 1
SECTOR_SIZE = 512
SECTOR_WORDS = SECTOR_SIZE // 8


class DeviceError(ValueError):
    """A driver misused a device's registers (a bus error): raised in the driver's code."""


class Raise(NamedTuple):
    """One raise of an interrupt line: `time` when the device raised it, `taken` the
    simulated time at which the kernel processed it (a preemption point at or after
    `time`; later than `time` only when kernel code was running)."""

    line: int
    time: int
    taken: int


class InterruptController:
    """Numbered interrupt lines, each an `Irq` of the kernel; every raise is recorded."""

    def __init__(self, kernel: Kernel, lines: int = 16) -> None:
        if not isinstance(kernel, Kernel):
            raise TypeError(f"an interrupt controller needs a Kernel, got {type(kernel).__name__}")
        if type(lines) is not int or lines <= 0:
            raise ValueError(f"lines must be a positive int, got {lines!r}")
        self.kernel = kernel
        self._irqs = [kernel.new_irq(f"line{n}") for n in range(lines)]
        self.log: list[Raise] = []

    @property
    def lines(self) -> int:
        return len(self._irqs)

    def _check_line(self, line: int) -> int:
        if type(line) is not int or not 0 <= line < len(self._irqs):
            raise ValueError(f"line must be an int in 0..{len(self._irqs) - 1}, got {line!r}")
        return line

    def irq(self, line: int) -> Irq:
        """The `Irq` of `line`: give a driver a capability to it."""
        return self._irqs[self._check_line(line)]

    def raise_line(self, line: int, time: int | None = None) -> None:
        """Raise `line` (host code: a device's event, a test): trigger its `Irq` and record
        the raise. `time` is when the device raised it (default: now); not in the future."""
        self._check_line(line)
        now = self.kernel.now
        if time is None:
            time = now
        elif type(time) is not int or not 0 <= time <= now:
            raise ValueError(f"a raise time is an int of cycles in 0..now ({now}), got {time!r}")
        self.log.append(Raise(line, time, now))
        self._irqs[line].trigger()

    def raises(self, line: int) -> list[int]:
        """The times at which `line` was raised, in order."""
        self._check_line(line)
        return [r.time for r in self.log if r.line == line]

    def last_raise(self, line: int) -> int | None:
        """The time of the last raise of `line`, or None."""
        self._check_line(line)
        for r in reversed(self.log):
            if r.line == line:
                return r.time
        return None


class Device:
    """Base class of emulated devices: registers read and written by drivers, events at
    simulated times through the kernel, one interrupt line. See the module docstring."""

    REGISTERS: ClassVar[Mapping[int, str]] = {}
    READ_ONLY: ClassVar[frozenset[int]] = frozenset()

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()
        self._kernel: Kernel | None = None
        self._controller: InterruptController | None = None
        self._line = -1

    # --- attachment ---------------------------------------------------------------------

    def attach(self, controller: InterruptController, line: int) -> None:
        """Connect the device to `controller`'s `line` (done by `Platform.add`)."""
        if self._controller is not None:
            raise ValueError(f"{self!r} is already attached to line {self._line}")
        controller.irq(line)  # checks the line
        self._controller = controller
        self._kernel = controller.kernel
        self._line = line
        self.on_attach()

    @property
    def attached(self) -> bool:
        return self._controller is not None

    @property
    def kernel(self) -> Kernel:
        if self._kernel is None:
            raise RuntimeError(f"{self!r} is not attached to a platform")
        return self._kernel

    @property
    def controller(self) -> InterruptController:
        if self._controller is None:
            raise RuntimeError(f"{self!r} is not attached to a platform")
        return self._controller

    @property
    def line(self) -> int:
        """The interrupt line this device raises."""
        if self._controller is None:
            raise RuntimeError(f"{self!r} is not attached to a platform")
        return self._line

    @property
    def irq(self) -> Irq:
        """The `Irq` of this device's line."""
        return self.controller.irq(self._line)

    @property
    def now(self) -> int:
        """Simulated time (cycles)."""
        return self.kernel.now

    # --- what subclasses use --------------------------------------------------------------

    def at(self, time: int, callback: Callable[[], Any]) -> None:
        """Run `callback()` at simulated `time` (the kernel's event queue)."""
        self.kernel.at(time, callback)

    def raise_line(self, time: int | None = None) -> None:
        """Raise this device's interrupt line; `time` when it was raised (default now)."""
        self.controller.raise_line(self._line, time)

    def on_attach(self) -> None:
        """Called once the device has its kernel and line."""

    def on_read(self, register: int) -> int:
        raise NotImplementedError

    def on_write(self, register: int, value: int) -> None:
        raise NotImplementedError

    # --- the MMIO-like driver API ---------------------------------------------------------

    def _check_register(self, register: int) -> None:
        if type(register) is not int or register not in self.REGISTERS:
            known = ", ".join(f"{n}={r}" for r, n in sorted(self.REGISTERS.items()))
            raise DeviceError(f"{self.name}: no register {register!r} (registers: {known})")
        if self._controller is None:
            raise DeviceError(f"{self.name}: not attached to a platform")

    def read(self, register: int) -> int:
        """Read a register: an unsigned 64-bit word."""
        self._check_register(register)
        return self.on_read(register)

    def write(self, register: int, value: int) -> None:
        """Write an unsigned 64-bit word to a register."""
        self._check_register(register)
        if register in self.READ_ONLY:
            raise DeviceError(f"{self.name}: register {self.REGISTERS[register]} is read-only")
        if type(value) is not int or not 0 <= value <= WORD_MAX:
            raise DeviceError(f"{self.name}: a register value is an unsigned 64-bit int, "
                              f"got {value!r}")
        self.on_write(register, value)

    def __repr__(self) -> str:
        where = f" line {self._line}" if self._controller is not None else ""
        return f"<{type(self).__name__} {self.name}{where}>"


class Timer(Device):
    """A programmable timer: one-shot or periodic, in cycles of the simulated clock.

    Registers:
      MODE      (rw) ONE_SHOT = 0 or PERIODIC = 1
      INTERVAL  (rw) cycles from the start to the first expiry and between expiries (>= 1)
      CONTROL   (rw) write START = 1 to (re)start, STOP = 0 to stop; reads 1 while running
      EXPIRIES  (r)  expiries signalled since the timer was attached (never reset)
      DEADLINE  (r)  simulated time of the next expiry, 0 when stopped
    MODE and INTERVAL are latched at START. At each expiry the timer counts it and raises
    its line; periodic, it re-arms at the previous deadline + INTERVAL (no drift), one-shot,
    it stops.
    """

    MODE, INTERVAL, CONTROL, EXPIRIES, DEADLINE = range(5)
    ONE_SHOT, PERIODIC = 0, 1
    STOP, START = 0, 1
    REGISTERS: ClassVar[Mapping[int, str]] = {
        MODE: "MODE", INTERVAL: "INTERVAL", CONTROL: "CONTROL", EXPIRIES: "EXPIRIES",
        DEADLINE: "DEADLINE"}
    READ_ONLY: ClassVar[frozenset[int]] = frozenset({EXPIRIES, DEADLINE})

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.mode = self.ONE_SHOT
        self.interval = 0
        self.running = False
        self.expiries = 0
        self.deadline = 0
        self._period = 0
        self._periodic = False
        self._generation = 0

    def on_read(self, register: int) -> int:
        if register == self.MODE:
            return self.mode
        if register == self.INTERVAL:
            return self.interval
        if register == self.CONTROL:
            return int(self.running)
        if register == self.EXPIRIES:
            return self.expiries
        return self.deadline if self.running else 0

    def on_write(self, register: int, value: int) -> None:
        if register == self.MODE:
            if value not in (self.ONE_SHOT, self.PERIODIC):
                raise DeviceError(f"{self.name}: MODE is ONE_SHOT (0) or PERIODIC (1), got {value}")
            self.mode = value
        elif register == self.INTERVAL:
            self.interval = value
        elif value == self.START:
            self.start()
        elif value == self.STOP:
            self.stop()
        else:
            raise DeviceError(f"{self.name}: CONTROL is STOP (0) or START (1), got {value}")

    def start(self) -> None:
        """CONTROL <- START: the first expiry comes INTERVAL cycles from now."""
        if self.interval <= 0:
            raise DeviceError(f"{self.name}: set INTERVAL (>= 1 cycle) before START")
        if self.now + self.interval >= INFINITY:
            raise DeviceError(f"{self.name}: INTERVAL {self.interval} reaches beyond the end "
                              f"of simulated time")
        self._generation += 1
        self._period = self.interval
        self._periodic = self.mode == self.PERIODIC
        self.running = True
        self._arm(self.now + self._period)

    def stop(self) -> None:
        """CONTROL <- STOP: no further expiry (an already raised line stays raised)."""
        self._generation += 1
        self.running = False
        self.deadline = 0

    def _arm(self, deadline: int) -> None:
        self.deadline = deadline
        generation = self._generation
        self.at(deadline, lambda: self._expire(generation, deadline))

    def _expire(self, generation: int, deadline: int) -> None:
        if generation != self._generation:
            return  # stopped or restarted since this expiry was armed
        self.expiries += 1
        if self._periodic:
            self._arm(deadline + self._period)
        else:
            self.running = False
            self.deadline = 0
        self.raise_line(deadline)


class Request(NamedTuple):
    """One block-device request: what, when it was issued and when it completes."""

    command: int
    sector: int
    issued: int
    completes: int


class BlockDevice(Device):
    """A block device: `sectors` sectors of 512 bytes in a bytearray; a request completes
    `latency` cycles after it was issued, then raises the line.

    The device has a sector buffer of 64 words; drivers see it through a window of
    `DATA_WORDS` (8) words starting at buffer word WINDOW.

    Registers:
      SECTOR    (rw) the sector of the next request
      COMMAND   (rw) write READ = 1 or WRITE = 2 to issue a request; reads the last command
      STATUS    (rw) bits BUSY = 1, DONE = 2, ERROR = 4; a write acknowledges: clears DONE
                     and ERROR (and the ERROR code), BUSY is unaffected
      ERROR     (r)  why ERROR is set: E_BUSY = 1 (a request while busy), E_SECTOR = 2 (no
                     such sector), E_COMMAND = 3 (no such command)
      WINDOW    (rw) the buffer word shown at DATA + 0 (0..56)
      CHECKSUM  (r)  CRC-32 of the 512-byte buffer
      SECTORS   (r)  the number of sectors
      DATA + i  (rw) buffer word WINDOW + i (little-endian), i < DATA_WORDS
    Protocol: set SECTOR, (for a WRITE, fill the buffer through the window), write COMMAND,
    read STATUS: BUSY means accepted — the line is raised when it completes, then STATUS
    is DONE and, for a READ, the buffer holds the sector; ERROR means rejected, and no
    interrupt follows (a request while BUSY is rejected; the one in flight goes on). A
    WRITE takes the buffer as it is at COMMAND and stores it when it completes.
    """

    SECTOR, COMMAND, STATUS, ERROR, WINDOW, CHECKSUM, SECTORS = range(7)
    DATA = 8
    DATA_WORDS = 8
    READ, WRITE = 1, 2
    BUSY, DONE, ERROR_BIT = 1, 2, 4
    E_NONE, E_BUSY, E_SECTOR, E_COMMAND = range(4)
    REGISTERS: ClassVar[Mapping[int, str]] = {
        SECTOR: "SECTOR", COMMAND: "COMMAND", STATUS: "STATUS", ERROR: "ERROR",
        WINDOW: "WINDOW", CHECKSUM: "CHECKSUM", SECTORS: "SECTORS",
        **{reg: f"DATA{i}" for i, reg in enumerate(range(DATA, DATA + DATA_WORDS))}}
    READ_ONLY: ClassVar[frozenset[int]] = frozenset({ERROR, CHECKSUM, SECTORS})

    def __init__(self, sectors: int = 64, latency: int = 100_000, name: str | None = None,
                 image: bytes | None = None) -> None:
        super().__init__(name)
        if type(sectors) is not int or sectors <= 0:
            raise ValueError(f"sectors must be a positive int, got {sectors!r}")
        if type(latency) is not int or latency < 0:
            raise ValueError(f"latency must be a non-negative int of cycles, got {latency!r}")
        self.sectors = sectors
        self.latency = latency
        self.data = bytearray(sectors * SECTOR_SIZE)   # the medium
        if image is not None:
            if len(image) > len(self.data):
                raise ValueError(f"the image ({len(image)} bytes) exceeds the device "
                                 f"({len(self.data)} bytes)")
            self.data[:len(image)] = image
        self.buffer = bytearray(SECTOR_SIZE)
        self.sector = 0
        self.command = 0
        self.status = 0
        self.error = self.E_NONE
        self.window = 0
        self.requests: list[Request] = []     # every accepted request, in order
        self._pending: bytes | None = None    # a WRITE's buffer, taken at COMMAND

    # --- host side: the disk image ----------------------------------------------------------

    def load(self, sector: int, data: bytes) -> None:
        """Write `data` (at most 512 bytes) at the start of `sector` of the medium (host
        code, e.g. at build time; no request, no interrupt)."""
        self._check_sector(sector)
        if len(data) > SECTOR_SIZE:
            raise ValueError(f"a sector holds {SECTOR_SIZE} bytes, got {len(data)}")
        at = sector * SECTOR_SIZE
        self.data[at:at + len(data)] = data

    def read_sector(self, sector: int) -> bytes:
        """The 512 bytes of `sector` on the medium (host code)."""
        self._check_sector(sector)
        at = sector * SECTOR_SIZE
        return bytes(self.data[at:at + SECTOR_SIZE])

    def _check_sector(self, sector: int) -> None:
        if type(sector) is not int or not 0 <= sector < self.sectors:
            raise ValueError(f"sector must be an int in 0..{self.sectors - 1}, got {sector!r}")

    # --- registers --------------------------------------------------------------------------

    def on_read(self, register: int) -> int:
        if register >= self.DATA:
            at = 8 * (self.window + register - self.DATA)
            return int.from_bytes(self.buffer[at:at + 8], "little")
        if register == self.SECTOR:
            return self.sector
        if register == self.COMMAND:
            return self.command
        if register == self.STATUS:
            return self.status
        if register == self.ERROR:
            return self.error
        if register == self.WINDOW:
            return self.window
        if register == self.CHECKSUM:
            return zlib.crc32(self.buffer)
        return self.sectors

    def on_write(self, register: int, value: int) -> None:
        if register >= self.DATA:
            at = 8 * (self.window + register - self.DATA)
            self.buffer[at:at + 8] = value.to_bytes(8, "little")
        elif register == self.SECTOR:
            self.sector = value
        elif register == self.COMMAND:
            self._issue(value)
        elif register == self.STATUS:
            self.status &= self.BUSY
            self.error = self.E_NONE
        else:  # WINDOW
            if value > SECTOR_WORDS - self.DATA_WORDS:
                raise DeviceError(f"{self.name}: WINDOW is 0..{SECTOR_WORDS - self.DATA_WORDS}, "
                                  f"got {value}")
            self.window = value

    def _reject(self, error: int) -> None:
        self.status |= self.ERROR_BIT
        self.error = error

    def _issue(self, command: int) -> None:
        self.command = command
        if self.status & self.BUSY:
            self._reject(self.E_BUSY)
            return
        if command not in (self.READ, self.WRITE):
            self._reject(self.E_COMMAND)
            return
        if self.sector >= self.sectors:
            self._reject(self.E_SECTOR)
            return
        now = self.now
        request = Request(command, self.sector, now, now + self.latency)
        self.requests.append(request)
        self.status = self.BUSY
        self.error = self.E_NONE
        self._pending = bytes(self.buffer) if command == self.WRITE else None
        self.at(request.completes, lambda: self._complete(request))

    def _complete(self, request: Request) -> None:
        at = request.sector * SECTOR_SIZE
        if request.command == self.READ:
            self.buffer[:] = self.data[at:at + SECTOR_SIZE]
        else:
            assert self._pending is not None
            self.data[at:at + SECTOR_SIZE] = self._pending
            self._pending = None
        self.status = (self.status & ~self.BUSY) | self.DONE
        self.raise_line(request.completes)


D = TypeVar("D", bound=Device)

# The attribute of the kernel object that names its platform: the kernel keeps its
# platform alive as long as itself, and no global table keeps either alive.
_ATTR = "_l4sim_platform"


class Platform:
    """The machine around a kernel: an interrupt controller and the devices on its lines.

    One platform per kernel; `Platform.of(kernel)` finds it again (e.g. in an example's
    `report`). One device per line."""

    def __init__(self, kernel: Kernel, lines: int = 16) -> None:
        if getattr(kernel, _ATTR, None) is not None:
            raise ValueError("this kernel already has a platform (Platform.of(kernel))")
        self.kernel = kernel
        self.controller = InterruptController(kernel, lines)
        self.devices: dict[int, Device] = {}
        setattr(kernel, _ATTR, self)

    @staticmethod
    def of(kernel: Kernel) -> Platform:
        """The platform made for `kernel`."""
        platform = getattr(kernel, _ATTR, None)
        if not isinstance(platform, Platform):
            raise LookupError("this kernel has no platform")
        return platform

    def add(self, device: D, line: int) -> D:
        """Attach `device` to `line` (any `Device` subclass: yours too). Returns it."""
        if not isinstance(device, Device):
            raise TypeError(f"a device derives from Device, got {type(device).__name__}")
        self.controller.irq(line)  # checks the line
        if line in self.devices:
            raise ValueError(f"line {line} already has {self.devices[line]!r}")
        device.attach(self.controller, line)
        self.devices[line] = device
        return device

    def add_timer(self, line: int, name: str | None = None) -> Timer:
        return self.add(Timer(name or f"timer{line}"), line)

    def add_block_device(self, line: int, sectors: int = 64, latency: int = 100_000,
                         name: str | None = None, image: bytes | None = None) -> BlockDevice:
        return self.add(BlockDevice(sectors, latency, name or f"disk{line}", image), line)

    def irq(self, line: int) -> Irq:
        """The `Irq` of `line`."""
        return self.controller.irq(line)

    def device(self, line: int) -> Device:
        """The device on `line`."""
        try:
            return self.devices[line]
        except KeyError:
            raise LookupError(f"no device on line {line}") from None
