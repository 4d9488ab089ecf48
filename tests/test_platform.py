"""The emulated platform (SPEC S12): interrupt controller, timer and block device; the
timer-server and block-driver examples; `l4sim bench irq`.

Every kernel here runs with `check=True` (S19 invariants after every kernel operation).
All times are simulated cycles: the assertions are exact, nothing depends on the host.
"""

from __future__ import annotations

import itertools
import json
import zlib
from types import ModuleType
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from helpers import EXAMPLES, load_example, thread_named
from l4sim import IpcError, Irq, Kernel, Thread, Timeout
from l4sim.bench.irq import CASES, LINE, SCENARIO, Scenario, run_case, run_irq
from l4sim.bench.irq_cli import irq as irq_command
from l4sim.cli import main
from l4sim.platform import (
    SECTOR_SIZE,
    BlockDevice,
    Device,
    DeviceError,
    InterruptController,
    Platform,
    Raise,
    Request,
    Timer,
)

OK = IpcError.OK
B = BlockDevice


load = load_example
thread = thread_named


def with_driver(k: Kernel, line_irq: Irq, body: Any, *args: Any,
                priority: int = 100) -> Thread:
    """A driver thread in its own task holding a capability to `line_irq`; its body
    gets (t, irq selector, *args)."""
    task = k.new_task("drv")
    sel = task.add_cap(line_irq)
    return task.new_thread(body, sel, *args, name="driver", priority=priority)


def sector_image(sector: int) -> bytes:
    return bytes((sector * 7 + i) & 0xFF for i in range(SECTOR_SIZE))


def words_of(data: bytes, n: int, first: int = 0) -> list[int]:
    return [int.from_bytes(data[8 * i:8 * i + 8], "little") for i in range(first, first + n)]


# --- the interrupt controller ------------------------------------------------------------


def test_controller_lines_are_irqs_and_every_raise_is_recorded() -> None:
    k = Kernel(check=True)
    pic = InterruptController(k, lines=4)
    assert pic.lines == 4
    assert [pic.irq(n).name for n in range(4)] == ["line0", "line1", "line2", "line3"]
    assert all(isinstance(pic.irq(n), Irq) for n in range(4))
    log: list[Any] = []

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 0x42)
        r = await t.irq_receive(sel)
        log.append((t.now, r.error, r.tag.label, r.label))

    with_driver(k, pic.irq(2), driver)
    k.at(10_000, lambda: pic.raise_line(2))
    k.at(20_000, lambda: pic.raise_line(1))       # nobody bound: stays pending
    res = k.run()
    assert res.reason == "done"
    assert log == [(10_000, OK, -1, 0x42)]        # woken at the raise (idle CPU)
    assert pic.log == [Raise(2, 10_000, 10_000), Raise(1, 20_000, 20_000)]
    assert pic.raises(2) == [10_000] and pic.raises(1) == [20_000] and pic.raises(0) == []
    assert pic.last_raise(2) == 10_000 and pic.last_raise(3) is None
    assert pic.irq(1).pending


def test_controller_records_the_device_time_and_the_time_the_kernel_took_it() -> None:
    """A raise that falls inside kernel code is taken at the next preemption point; the
    record keeps both times."""
    k = Kernel(check=True)
    pic = InterruptController(k, lines=1)
    k.at(5_000, lambda: pic.raise_line(0, time=4_000))
    k.run()
    assert pic.log == [Raise(0, 4_000, 5_000)]


def test_controller_rejects_bad_lines_and_future_raises() -> None:
    k = Kernel(check=True)
    pic = InterruptController(k, lines=2)
    for bad in (-1, 2, "0", 1.0):
        with pytest.raises(ValueError):
            pic.irq(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pic.raise_line(0, time=k.now + 1)
    with pytest.raises(ValueError):
        InterruptController(k, lines=0)
    with pytest.raises(TypeError):
        InterruptController("kernel", lines=1)  # type: ignore[arg-type]


# --- the timer ---------------------------------------------------------------------------


def timer_platform(k: Kernel) -> tuple[Platform, Timer]:
    platform = Platform(k)
    return platform, platform.add_timer(0)


def start(timer: Timer, interval: int, mode: int) -> None:
    timer.write(Timer.MODE, mode)
    timer.write(Timer.INTERVAL, interval)
    timer.write(Timer.CONTROL, Timer.START)


def test_one_shot_timer_raises_exactly_once_at_start_plus_interval() -> None:
    k = Kernel(check=True)
    platform, timer = timer_platform(k)
    log: list[Any] = []

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 1)
        await t.compute(1_234)
        start(timer, 25_000, Timer.ONE_SHOT)          # MMIO from the driver at 1_234 + entry
        log.append(("started", t.now, timer.read(Timer.DEADLINE), timer.read(Timer.CONTROL)))
        r = await t.irq_receive(sel)
        log.append(("irq", r.error, timer.read(Timer.EXPIRIES), timer.read(Timer.CONTROL),
                    timer.read(Timer.DEADLINE)))
        r = await t.irq_receive(sel, receive_timeout=Timeout.cycles(200_000))
        log.append(("again", r.error))

    with_driver(k, platform.irq(0), driver)
    assert k.run().reason == "done"
    started = log[0][1]
    assert started == k.costs.kernel_op + 1_234
    assert log[0] == ("started", started, started + 25_000, 1)
    assert platform.controller.raises(0) == [started + 25_000]
    assert log[1] == ("irq", OK, 1, 0, 0)             # one expiry; stopped, no deadline
    assert log[2] == ("again", IpcError.RETIMEOUT)    # a one-shot raises once
    assert timer.expiries == 1 and not timer.running


def test_periodic_timer_raises_at_every_interval_even_while_the_driver_is_busy() -> None:
    k = Kernel(check=True)
    platform, timer = timer_platform(k)
    start(timer, 10_000, Timer.PERIODIC)             # host code at time 0
    log: list[Any] = []

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 1)
        for _ in range(3):
            await t.irq_receive(sel)
            log.append((t.now, timer.read(Timer.EXPIRIES)))
        await t.compute(35_000)                       # three expiries coalesce meanwhile
        await t.irq_receive(sel)
        log.append((t.now, timer.read(Timer.EXPIRIES)))
        timer.write(Timer.CONTROL, Timer.STOP)

    with_driver(k, platform.irq(0), driver)
    res = k.run()
    assert res.reason == "done"
    raises = platform.controller.raises(0)
    assert raises == [10_000 * i for i in range(1, 7)]       # exact, no drift
    assert [e for _t, e in log] == [1, 2, 3, 6]
    assert [t for t, _e in log[:3]] == [10_000, 20_000, 30_000]
    assert timer.expiries == 6 and not timer.running
    # The expiry armed before the stop (at 70_000) fires as a no-op: the run ends there.
    assert res.now == 70_000


def test_periodic_timer_stop_and_restart_rebases_and_latches_mode_and_interval() -> None:
    k = Kernel(check=True)
    platform, timer = timer_platform(k)
    start(timer, 10_000, Timer.PERIODIC)

    def change() -> None:                             # while running: latched at START
        timer.write(Timer.INTERVAL, 3_000)
        timer.write(Timer.MODE, Timer.ONE_SHOT)

    k.at(15_000, change)
    k.at(35_000, lambda: timer.write(Timer.CONTROL, Timer.STOP))
    k.at(41_000, lambda: timer.write(Timer.CONTROL, Timer.START))   # one-shot of 3_000 now
    k.at(50_000, lambda: start(timer, 7_000, Timer.PERIODIC))
    k.at(64_500, lambda: timer.write(Timer.CONTROL, Timer.START))   # restart: re-based
    k.at(80_000, lambda: timer.write(Timer.CONTROL, Timer.STOP))
    k.run()
    assert platform.controller.raises(0) == [
        10_000, 20_000, 30_000,            # period 10_000 despite the change at 15_000
        44_000,                            # the one-shot started at 41_000
        57_000, 64_000,                    # periodic 7_000 from 50_000
        71_500, 78_500,                    # restarted at 64_500
    ]
    assert timer.expiries == 8


def test_timer_register_misuse_raises_device_errors() -> None:
    k = Kernel(check=True)
    loose = Timer()
    with pytest.raises(DeviceError):
        loose.read(Timer.MODE)                        # not attached
    with pytest.raises(RuntimeError):
        _ = loose.kernel
    _platform, timer = timer_platform(k)
    with pytest.raises(DeviceError):
        timer.write(Timer.CONTROL, Timer.START)       # no interval yet
    with pytest.raises(DeviceError):
        timer.write(Timer.EXPIRIES, 1)                # read-only
    with pytest.raises(DeviceError):
        timer.write(Timer.MODE, 2)
    with pytest.raises(DeviceError):
        timer.write(Timer.CONTROL, 7)
    with pytest.raises(DeviceError):
        timer.read(99)
    for bad in (-1, 1 << 64, 1.5, "1"):
        with pytest.raises(DeviceError):
            timer.write(Timer.INTERVAL, bad)  # type: ignore[arg-type]
    timer.write(Timer.INTERVAL, (1 << 64) - 1)
    assert timer.read(Timer.INTERVAL) == (1 << 64) - 1
    with pytest.raises(DeviceError, match="beyond the end"):
        timer.write(Timer.CONTROL, Timer.START)
    assert not timer.running


def test_a_device_error_in_a_driver_kills_only_that_thread() -> None:
    k = Kernel(check=True)
    platform, timer = timer_platform(k)

    async def driver(t: Any, sel: int) -> None:
        timer.write(Timer.DEADLINE, 5)

    th = with_driver(k, platform.irq(0), driver)
    res = k.run()
    assert res.reason == "done"
    assert res.died == [(th, "DeviceError: timer0: register DEADLINE is read-only")]


# --- the block device --------------------------------------------------------------------


def disk_platform(k: Kernel, sectors: int = 8, latency: int = 30_000) -> tuple[Platform, BlockDevice]:
    platform = Platform(k)
    image = b"".join(sector_image(s) for s in range(sectors))
    return platform, platform.add_block_device(1, sectors=sectors, latency=latency, image=image)


def read_window(disk: BlockDevice) -> list[int]:
    return [disk.read(B.DATA + i) for i in range(B.DATA_WORDS)]


def test_block_read_completes_after_exactly_the_latency() -> None:
    k = Kernel(check=True)
    platform, disk = disk_platform(k, latency=30_000)
    log: list[Any] = []

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 0xD)
        await t.compute(5_000)
        disk.write(B.SECTOR, 3)
        disk.write(B.COMMAND, B.READ)
        issued = t.now
        log.append(("issued", issued, disk.read(B.STATUS)))
        await t.compute(10_000)
        log.append(("busy", disk.read(B.STATUS), read_window(disk)))   # nothing yet
        r = await t.irq_receive(sel)
        log.append(("irq", t.now, r.error, r.label, disk.read(B.STATUS), disk.read(B.ERROR)))
        log.append(("data", read_window(disk), disk.read(B.CHECKSUM)))
        disk.write(B.WINDOW, 56)
        log.append(("tail", read_window(disk)))
        disk.write(B.STATUS, 0)
        log.append(("ack", disk.read(B.STATUS)))

    with_driver(k, platform.irq(1), driver)
    assert k.run().reason == "done"
    issued = log[0][1]
    assert issued == k.costs.kernel_op + 5_000
    assert log[0] == ("issued", issued, B.BUSY)
    assert log[1] == ("busy", B.BUSY, [0] * 8)
    assert disk.requests == [Request(B.READ, 3, issued, issued + 30_000)]
    assert platform.controller.raises(1) == [issued + 30_000]
    assert log[2] == ("irq", issued + 30_000, OK, 0xD, B.DONE, B.E_NONE)
    want = sector_image(3)
    assert log[3] == ("data", words_of(want, 8), zlib.crc32(want))
    assert log[4] == ("tail", words_of(want, 8, first=56))
    assert log[5] == ("ack", 0)


def test_block_request_while_busy_sets_error_and_the_first_completes() -> None:
    k = Kernel(check=True)
    platform, disk = disk_platform(k, latency=20_000)
    log: list[Any] = []

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 1)
        disk.write(B.SECTOR, 2)
        disk.write(B.COMMAND, B.READ)
        await t.compute(1_000)
        disk.write(B.SECTOR, 5)
        disk.write(B.COMMAND, B.READ)                 # rejected: busy
        log.append(("second", disk.read(B.STATUS), disk.read(B.ERROR)))
        r = await t.irq_receive(sel)
        log.append(("irq", r.error, disk.read(B.STATUS), read_window(disk)))
        disk.write(B.STATUS, 0)
        log.append(("ack", disk.read(B.STATUS), disk.read(B.ERROR)))
        r = await t.irq_receive(sel, receive_timeout=Timeout.cycles(100_000))
        log.append(("no second irq", r.error))

    with_driver(k, platform.irq(1), driver)
    assert k.run().reason == "done"
    assert log[0] == ("second", B.BUSY | B.ERROR_BIT, B.E_BUSY)
    # The request in flight went on: it read sector 2 (not 5), completed and raised.
    assert log[1] == ("irq", OK, B.DONE | B.ERROR_BIT, words_of(sector_image(2), 8))
    assert log[2] == ("ack", 0, B.E_NONE)
    assert log[3] == ("no second irq", IpcError.RETIMEOUT)
    assert [(r.command, r.sector) for r in disk.requests] == [(B.READ, 2)]
    assert len(platform.controller.raises(1)) == 1


def test_block_write_then_read_back() -> None:
    k = Kernel(check=True)
    platform, disk = disk_platform(k, latency=10_000)
    new = [0x1111_0000 + i for i in range(64)]
    log: list[Any] = []

    async def request(t: Any, sel: int, command: int, sector: int) -> None:
        disk.write(B.SECTOR, sector)
        disk.write(B.COMMAND, command)
        r = await t.irq_receive(sel)
        assert r.ok and disk.read(B.STATUS) == B.DONE
        disk.write(B.STATUS, 0)

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 1)
        for w in range(0, 64, B.DATA_WORDS):          # fill the whole buffer through the window
            disk.write(B.WINDOW, w)
            for i in range(B.DATA_WORDS):
                disk.write(B.DATA + i, new[w + i])
        disk.write(B.SECTOR, 6)
        disk.write(B.COMMAND, B.WRITE)
        disk.write(B.WINDOW, 0)
        disk.write(B.DATA, 0xBAD)                     # after COMMAND: not written
        r = await t.irq_receive(sel)
        log.append(("written", t.now, r.ok, disk.read(B.STATUS)))
        disk.write(B.STATUS, 0)
        await request(t, sel, B.READ, 0)              # the buffer now holds sector 0
        log.append(("other", read_window(disk)))
        await request(t, sel, B.READ, 6)
        whole = []
        for w in range(0, 64, B.DATA_WORDS):
            disk.write(B.WINDOW, w)
            whole += read_window(disk)
        log.append(("read back", whole, disk.read(B.CHECKSUM)))

    with_driver(k, platform.irq(1), driver)
    assert k.run().reason == "done"
    new_bytes = b"".join(w.to_bytes(8, "little") for w in new)
    assert log[0][2:] == (True, B.DONE)
    assert log[1] == ("other", words_of(sector_image(0), 8))
    assert log[2] == ("read back", new, zlib.crc32(new_bytes))
    assert disk.read_sector(6) == new_bytes
    assert disk.read_sector(5) == sector_image(5) and disk.read_sector(7) == sector_image(7)
    reqs = disk.requests
    assert [(r.command, r.sector) for r in reqs] == [(B.WRITE, 6), (B.READ, 0), (B.READ, 6)]
    assert all(r.completes - r.issued == 10_000 for r in reqs)
    assert platform.controller.raises(1) == [r.completes for r in reqs]


def test_block_rejected_requests_raise_no_interrupt() -> None:
    k = Kernel(check=True)
    platform, disk = disk_platform(k, sectors=4)
    log: list[Any] = []

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 1)
        for sector, command in ((4, B.READ), (1, 9)):
            disk.write(B.SECTOR, sector)
            disk.write(B.COMMAND, command)
            log.append((disk.read(B.STATUS), disk.read(B.ERROR)))
            disk.write(B.STATUS, 0)
        r = await t.irq_receive(sel, receive_timeout=Timeout.cycles(500_000))
        log.append(r.error)

    with_driver(k, platform.irq(1), driver)
    k.run()
    assert log == [(B.ERROR_BIT, B.E_SECTOR), (B.ERROR_BIT, B.E_COMMAND), IpcError.RETIMEOUT]
    assert disk.requests == [] and platform.controller.raises(1) == []


def test_block_device_registers_and_host_helpers() -> None:
    k = Kernel(check=True)
    _platform, disk = disk_platform(k, sectors=4)
    assert disk.read(B.SECTORS) == 4
    disk.write(B.WINDOW, 56)
    with pytest.raises(DeviceError):
        disk.write(B.WINDOW, 57)
    for reg in (B.ERROR, B.CHECKSUM, B.SECTORS):
        with pytest.raises(DeviceError):
            disk.write(reg, 0)
    with pytest.raises(DeviceError):
        disk.read(B.DATA + B.DATA_WORDS)
    with pytest.raises(ValueError):
        disk.load(4, b"x")
    with pytest.raises(ValueError):
        disk.load(0, bytes(SECTOR_SIZE + 1))
    disk.load(1, b"\x01\x02")
    assert disk.read_sector(1)[:3] == b"\x01\x02" + sector_image(1)[2:3]
    with pytest.raises(ValueError):
        BlockDevice(sectors=0)
    with pytest.raises(ValueError):
        BlockDevice(latency=-1)
    with pytest.raises(ValueError):
        BlockDevice(sectors=1, image=bytes(SECTOR_SIZE + 1))




def test_block_device_with_zero_latency_interrupts_at_the_next_preemption_point() -> None:
    k = Kernel(check=True)
    platform, disk = disk_platform(k, latency=0)
    log: list[Any] = []

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 1)
        disk.write(B.COMMAND, B.READ)
        issued = t.now
        r = await t.irq_receive(sel)
        log.append((issued, t.now, r.error, read_window(disk)))

    with_driver(k, platform.irq(1), driver)
    assert k.run().reason == "done"
    issued, now, err, words = log[0]
    assert platform.controller.raises(1) == [issued]
    assert platform.controller.log[0].taken >= issued
    assert (err, words) == (OK, words_of(sector_image(0), 8))
    assert now == issued + k.costs.ipc_cost(0)        # the receive's entry, then at once


# --- the platform and devices of your own ------------------------------------------------


class Doorbell(Device):
    """A user-written device: a write to RING raises the line DELAY cycles later; COUNT
    reads the rings so far."""

    RING, COUNT = 0, 1
    REGISTERS: ClassVar[dict[int, str]] = {RING: "RING", COUNT: "COUNT"}
    READ_ONLY: ClassVar[frozenset[int]] = frozenset({COUNT})
    DELAY = 777

    def __init__(self) -> None:
        super().__init__("doorbell")
        self.count = 0
        self.attached_line = -1

    def on_attach(self) -> None:
        self.attached_line = self.line

    def on_read(self, register: int) -> int:
        return self.count if register == self.COUNT else 0

    def on_write(self, register: int, value: int) -> None:
        when = self.now + self.DELAY

        def ring() -> None:
            self.count += 1
            self.raise_line(when)

        self.at(when, ring)


def test_a_user_written_device_on_the_platform() -> None:
    k = Kernel(check=True)
    platform = Platform(k, lines=8)
    bell = platform.add(Doorbell(), 5)
    assert bell.attached_line == 5 and bell.irq is platform.irq(5) and platform.device(5) is bell
    log: list[Any] = []

    async def driver(t: Any, sel: int) -> None:
        await t.irq_bind(sel, 0xBE11)
        bell.write(Doorbell.RING, 1)
        rung = t.now
        r = await t.irq_receive(sel)
        log.append((rung, t.now, r.label, bell.read(Doorbell.COUNT)))

    with_driver(k, platform.irq(5), driver)
    k.run()
    rung, now, label, count = log[0]
    assert platform.controller.raises(5) == [rung + Doorbell.DELAY]
    assert (now, label, count) == (rung + Doorbell.DELAY, 0xBE11, 1)


def test_platform_bookkeeping() -> None:
    k = Kernel(check=True)
    platform = Platform(k)
    assert Platform.of(k) is platform
    with pytest.raises(ValueError):
        Platform(k)                                   # one per kernel
    with pytest.raises(LookupError):
        Platform.of(Kernel(check=True))
    timer = platform.add_timer(0)
    assert timer.name == "timer0" and timer.line == 0 and repr(timer) == "<Timer timer0 line 0>"
    with pytest.raises(ValueError):
        platform.add_timer(0)                         # one device per line
    with pytest.raises(ValueError):
        platform.add_timer(16)                        # no such line
    with pytest.raises(ValueError):
        platform.add(timer, 1)                        # attached already
    with pytest.raises(TypeError):
        platform.add(object(), 2)  # type: ignore[type-var]
    with pytest.raises(LookupError):
        platform.device(3)
    disk = platform.add_block_device(2, sectors=3, latency=5)
    assert (disk.name, disk.sectors, disk.latency) == ("disk2", 3, 5)
    assert platform.devices == {0: timer, 2: disk}


# --- the timer-server example -------------------------------------------------------------


@pytest.fixture(scope="module")
def timer_server() -> ModuleType:
    return load("timer_server")


def test_timer_server_wakes_every_client_at_its_tick(timer_server: ModuleType,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    k = Kernel(check=True)
    timer_server.build(k)
    res = k.run()
    timer_server.report(k, res)                        # raises if any sleep was wrong
    assert "every client was woken at its tick" in capsys.readouterr().out
    assert res.reason == "done" and res.died == []
    assert [t.name for t in res.blocked] == ["timer"]  # the server idles in its open wait
    platform = Platform.of(k)
    raises = platform.controller.raises(timer_server.TIMER_LINE)
    log = timer_server.server_log(k)
    woken = timer_server.wake_times(k)
    tick = timer_server.TICK
    sleeps = 0
    for name, _prio, plan in timer_server.CLIENTS:
        th = thread(k, name)
        assert [s["n"] for s in th.result] == [n for _w, n in plan]
        for s, w in zip(th.result, woken[th.tid], strict=True):
            assert s["tick"] == s["wake_tick"] == s["request_tick"] + s["n"]
            assert raises[s["wake_tick"] - 1] <= w <= s["woke_at"]      # not before its tick
            if s["wake_tick"] < len(raises):
                assert w < raises[s["wake_tick"]]                      # and before the next
            assert s["woke_at"] - s["asked_at"] > (s["n"] - 1) * tick
            sleeps += 1
    assert sleeps == sum(len(plan) for _n, _p, plan in timer_server.CLIENTS)
    # The timer ran only while someone slept: stopped when the last sleeper was woken,
    # started again for the next; while running, its ticks are exactly TICK apart.
    starts = [e[0] for e in log if e[1] == "start"]
    stops = [e[0] for e in log if e[1] == "stop"]
    assert len(starts) == len(stops) >= 2
    assert not any(e[1] == "late" for e in log)
    for a, b in itertools.pairwise(raises):
        restarted = any(a < s < b for s in starts)
        assert b - a == tick or restarted
    # A client was woken in time but ran later, behind a higher-priority client: the
    # server's wake-up is what "at the tick" means.
    assert any(s["woke_at"] - w > tick for name, _p, _pl in timer_server.CLIENTS
               for s, w in zip(thread(k, name).result, woken[thread(k, name).tid], strict=True))


def test_timer_server_retries_a_client_not_yet_waiting_and_rounds_zero_up(
        timer_server: ModuleType) -> None:
    """A client that sends its request and computes for 2.5 ticks before it receives is
    not waited for: the wake-up is retried at each tick until it waits. n = 0 sleeps
    until the next tick."""
    tick = timer_server.TICK
    k = Kernel(check=True)
    platform = Platform(k)
    timer = platform.add_timer(0)
    stask = k.new_task("timer")
    irq_sel = stask.add_cap(platform.irq(0))
    clients: dict[int, int] = {}
    log: list[Any] = []
    srv = stask.new_thread(timer_server.timer_server, irq_sel, timer, clients, log,
                           name="timer", priority=200)
    seen: list[Any] = []

    async def slow(t: Any, srv_sel: int) -> None:
        await t.send(srv_sel, words=[1])
        await t.compute(tick * 5 // 2)
        r = await t.receive(srv_sel)
        seen.append(("slow", t.now, r.words))

    async def zero(t: Any, srv_sel: int) -> None:
        await t.compute(10_000)
        await t.send(srv_sel, words=[0])
        r = await t.receive(srv_sel)
        seen.append(("zero", t.now, r.words))

    for body, prio in ((slow, 100), (zero, 150)):
        ctask = k.new_task(body.__name__)
        th = ctask.new_thread(body, ctask.add_cap(srv), name=body.__name__, priority=prio)
        clients[th.tid] = stask.add_cap(th)
    res = k.run()
    assert res.reason == "done" and res.died == []
    raises = platform.controller.raises(0)
    names = {th.tid: th.name for th in k.threads.values()}
    by_kind = [(e[1], names[e[2]], e[3], e[4]) for e in log if e[1] in ("wake", "late")]
    # zero (the higher priority: it asked first): 0 ticks at tick 0, woken at tick 1;
    # slow: due at tick 1, not waiting at ticks 1 and 2, woken at tick 3 (it waits from
    # 2.5 ticks on).
    assert by_kind == [("wake", "zero", 1, 1), ("late", "slow", 1, 1), ("late", "slow", 1, 2),
                       ("wake", "slow", 1, 3)]
    assert [s[0] for s in seen] == ["zero", "slow"]
    assert seen[0][2] == (0, 1, 1) and seen[1][2] == (0, 1, 3)
    assert raises[2] <= seen[1][1] < raises[2] + tick


def test_timer_server_check_catches_wrong_wakeups(timer_server: ModuleType) -> None:
    """The report's check is not vacuous: an early, a late and a wrong-tick wake-up fail."""
    tick = timer_server.TICK
    raises = [tick * i for i in range(1, 6)]
    right = {"n": 2, "asked_at": 5_000, "request_tick": 0, "wake_tick": 2, "tick": 2,
             "woke_at": 2 * tick + 500}
    assert timer_server.check_sleep(right, 2 * tick + 100, raises) is None
    assert "before tick 2" in timer_server.check_sleep(right, 2 * tick - 1, raises)
    assert "after tick 3" in timer_server.check_sleep(right, 3 * tick, raises)
    assert "expected 2" in timer_server.check_sleep({**right, "tick": 3, "wake_tick": 3},
                                                    3 * tick + 100, raises)
    assert "before the server" in timer_server.check_sleep(right, 2 * tick + 600, raises)


def test_timer_server_is_deterministic(timer_server: ModuleType) -> None:
    runs = []
    for _ in range(2):
        k = Kernel(check=True)
        timer_server.build(k)
        res = k.run()
        runs.append((res.now, res.steps, timer_server.server_log(k),
                     Platform.of(k).controller.log))
    assert runs[0] == runs[1]


# --- the block-driver example ---------------------------------------------------------------


@pytest.fixture(scope="module")
def block_driver() -> ModuleType:
    return load("block_driver")


def test_block_driver_serves_every_client_correctly(block_driver: ModuleType,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    k = Kernel(check=True)
    block_driver.build(k)
    res = k.run()
    block_driver.report(k, res)
    assert "every client got its data" in capsys.readouterr().out
    assert res.reason == "done" and res.died == []
    assert [t.name for t in res.blocked] == ["driver"]
    disk = Platform.of(k).device(block_driver.DISK_LINE)
    assert isinstance(disk, BlockDevice)
    for name, _prio, requests in block_driver.CLIENTS:
        got = [list(x["reply"]) for x in thread(k, name).result]
        assert got == block_driver.expected_replies(requests)
        written: dict[int, int] = {}
        for req, reply in zip(requests, got, strict=True):
            if req[0] == "write":
                written[req[1]] = req[2]
                assert reply == [0]
            elif req[1] >= block_driver.SECTORS:
                assert reply == [B.E_SECTOR]          # the device rejected it
            elif req[1] in written:                   # its own write, read back
                assert reply[2:] == block_driver.written_words(written[req[1]])
            else:                                     # the image made at build time
                assert reply[2:] == [block_driver.pattern(req[1], i) for i in range(8)]
                assert reply[1] == zlib.crc32(block_driver.image_sector(req[1]))
    # What the writes left on the medium: 8 new words, the rest of the sector kept.
    for sector, first in ((7, 0xF5_0000), (20, 0xDB_0000)):
        data = disk.read_sector(sector)
        assert words_of(data, 8) == block_driver.written_words(first)
        assert data[64:] == block_driver.image_sector(sector)[64:]
    # One request at a time, each exactly LATENCY long; reads 1 device request, writes 2.
    reqs = disk.requests
    n_reads = sum(1 for _n, _p, rq in block_driver.CLIENTS for r in rq
                  if r[0] == "read" and r[1] < block_driver.SECTORS)
    n_writes = sum(1 for _n, _p, rq in block_driver.CLIENTS for r in rq if r[0] == "write")
    assert len(reqs) == n_reads + 2 * n_writes
    assert all(b.issued >= a.completes for a, b in itertools.pairwise(reqs))
    assert all(r.completes - r.issued == block_driver.LATENCY for r in reqs)
    assert Platform.of(k).controller.raises(block_driver.DISK_LINE) == [r.completes for r in reqs]


def test_block_driver_queues_callers_while_the_device_works(block_driver: ModuleType) -> None:
    """Clients called while the driver waited for another client's interrupt: they waited
    in its sender queue (the driver serializes), and were served after."""
    k = Kernel(check=True)
    block_driver.build(k)
    k.run()
    log = block_driver.driver_log(k)       # (issued, irq taken, command, sector, client tid)
    queued = 0
    for name, _prio, _requests in block_driver.CLIENTS:
        th = thread(k, name)
        for x in th.result:
            busy_for_other = [e for e in log if e[4] != th.tid and e[0] <= x["called"] < e[1]]
            if busy_for_other:
                queued += 1
                assert x["answered"] > max(e[1] for e in busy_for_other)
    assert queued >= 3


def test_block_driver_is_deterministic(block_driver: ModuleType) -> None:
    runs = []
    for _ in range(2):
        k = Kernel(check=True)
        block_driver.build(k)
        res = k.run()
        runs.append((res.now, res.steps, block_driver.driver_log(k)))
    assert runs[0] == runs[1]


# --- both examples through `l4sim run` --------------------------------------------------------


@pytest.mark.parametrize(("name", "says"), [
    ("timer_server", "every client was woken at its tick"),
    ("block_driver", "every client got its data"),
])
def test_examples_through_l4sim_run(name: str, says: str) -> None:
    result = CliRunner().invoke(main, ["run", str(EXAMPLES / f"{name}.py"), "--check"])
    assert result.exit_code == 0, result.output
    assert says in result.output
    assert "done" in result.output


# --- l4sim bench irq ---------------------------------------------------------------------


def expected_latencies(k: Kernel, s: Scenario = SCENARIO) -> dict[str, int]:
    """From the scenario's parameters and the cost profile:
    - waiting: the switch to the driver's thread and address space;
    - busy, higher priority: the driver started computing after irq_bind (a kernel op),
      finishes, and irq_receive takes the queued interrupt in its entry;
    - busy, lower priority: the hog ran first (its sleep's entry), the switch to the
      driver, its irq_bind; the hog's sleep expires at hog_wakes, the timer tick wakes it,
      it preempts the driver and computes to its end, with a switch there and back; then
      the rest of the driver's work and the entry."""
    c = k.costs
    entry = c.ipc_cost(0)
    switch = c.thread_switch + c.space_switch
    return {
        "waiting-driver": switch,
        "busy-higher-priority-driver": c.kernel_op + s.driver_work + entry - s.raise_at,
        "busy-lower-priority-driver": (entry + switch + c.kernel_op + s.driver_work
                                       + c.timer_tick + 2 * switch + s.hog_work + entry
                                       - s.raise_at),
    }


@pytest.mark.parametrize("profile", ["core2-sysenter", "core2-int30"])
def test_irq_bench_exact_latencies(profile: str) -> None:
    out = run_irq(profile=profile, check=True)
    want = expected_latencies(Kernel(profile=profile, check=True))
    got = {r["case"]: r["latency_cycles"] for r in out["rows"]}
    assert got == want
    w, hi, lo = (got[c.name] for c in CASES)
    assert w < hi <= lo


SYSENTER_TICK = Kernel(profile="core2-sysenter").costs.timer_tick


def test_irq_bench_sysenter_figures() -> None:
    got = [r["latency_cycles"] for r in run_irq(check=True)["rows"]]
    assert got == [284, 40_314, 91_330 + SYSENTER_TICK]      # the hog's wake-up costs a tick


def test_irq_bench_json_structure() -> None:
    result = CliRunner().invoke(irq_command, ["--json", "--check"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["frequency_mhz"] == 2663 and data["profile"] == "core2-sysenter"
    assert [r["case"] for r in data["rows"]] == [
        "waiting-driver", "busy-higher-priority-driver", "busy-lower-priority-driver"]
    for r in data["rows"]:
        assert set(r) >= {"case", "latency_cycles", "latency_ns"}
        assert isinstance(r["latency_cycles"], int) and r["latency_cycles"] > 0
        assert r["latency_ns"] == pytest.approx(r["latency_cycles"] * 1000 / 2663)
        assert r["raised_at"] == SCENARIO.raise_at
        assert r["driver_ran_at"] - r["raised_at"] == r["latency_cycles"]
    assert data == run_irq(check=True)                 # deterministic, same as the API
    assert data["scenario"]["raise_at"] == SCENARIO.raise_at


def test_irq_bench_table_and_frequency() -> None:
    result = CliRunner().invoke(irq_command, ["--check", "--frequency-mhz", "1000"])
    assert result.exit_code == 0, result.output
    assert "busy-lower-priority-driver" in result.output
    lower = 91_330 + SYSENTER_TICK
    assert f"{lower:,}" in result.output and f"{lower:,}.0" in result.output   # 1 cycle = 1 ns


def test_irq_bench_scenario_is_parameterized() -> None:
    s = Scenario(raise_at=70_000, driver_work=90_000, hog_wakes=10_000, hog_work=80_000)
    k = Kernel(check=True)
    want = expected_latencies(k, s)
    for case in CASES:
        assert run_case(case, check=True, scenario=s)["latency_cycles"] == want[case.name]


def test_irq_bench_driver_receives_its_own_line() -> None:
    row = run_case(CASES[0], check=True)
    assert row["driver_priority"] == SCENARIO.high and row["hog_priority"] == SCENARIO.mid
    assert LINE == 3


def test_irq_bench_through_l4sim_bench_when_registered() -> None:
    from l4sim.bench.cli import bench

    if "irq" not in bench.commands:
        pytest.skip("`irq` is not registered in the bench group yet")
    result = CliRunner().invoke(main, ["bench", "irq", "--json", "--check"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == run_irq(check=True)
