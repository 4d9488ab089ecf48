"""l4sim: an executable L4-style microkernel in Python, built around Fiasco's synchronous IPC.

Everything of the public API is importable from here.
"""

from .kernel import (
    CapRights,
    Chooser,
    Event,
    Fpage,
    IpcError,
    IpcGate,
    IpcResult,
    Irq,
    Kernel,
    KernelInvariantError,
    Label,
    MapItem,
    MsgTag,
    Rights,
    RunResult,
    Schedule,
    ScheduleError,
    StringItem,
    Task,
    Thread,
    Timeout,
)
from .lib import boot_servers as _boot_servers  # noqa: F401 (registers sigma0 and the pager)
from .user import UserContext

__version__ = "0.1.0"

__all__ = [
    "CapRights", "Chooser", "Event", "Fpage", "IpcError", "IpcGate", "IpcResult", "Irq", "Kernel",
    "KernelInvariantError", "Label", "MapItem", "MsgTag", "Rights", "RunResult", "Schedule",
    "ScheduleError", "StringItem",
    "Task", "Thread", "Timeout", "UserContext", "__version__",
]
