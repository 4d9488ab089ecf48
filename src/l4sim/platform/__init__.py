"""The emulated platform: an interrupt controller whose numbered lines are
`Irq` objects, and devices that raise them at simulated times — a programmable timer, a
block device, and any device you write by deriving from `Device`. See `devices`.

    from l4sim.platform import Platform, Timer, BlockDevice

    platform = Platform(k)
    timer = platform.add_timer(0)
    disk = platform.add_block_device(1, sectors=16, latency=40_000)
    drv_task.add_cap(platform.irq(1))      # the driver's capability to the disk's line
"""

from .devices import (
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

__all__ = [
    "SECTOR_SIZE", "BlockDevice", "Device", "DeviceError", "InterruptController", "Platform",
    "Raise", "Request", "Timer",
]
