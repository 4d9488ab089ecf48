"""Where the kernel finds its boot servers: sigma0 and the anonymous-memory pager.

They are user-level programs, so they live outside the kernel package;
`l4sim.lib.boot_servers` registers them here when `l4sim` is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .kernel import Kernel
    from .objects import Task, Thread
    from .pagershortcut import DefaultServers


class BootServers(Protocol):
    """The user-level servers the kernel starts on first use: sigma0 and the
    anonymous-memory pager."""

    def start_sigma0(self, k: Kernel, task: Task) -> Thread:
        """Start sigma0's thread in `task`, which holds the roots of physical memory."""
        ...

    def start_anon_pager(self, k: Kernel, sigma0: Thread) -> Thread:
        """Start the anonymous-memory pager in a task of its own, paged by `sigma0`."""
        ...

    def default_servers(self, k: Kernel, pager: Thread) -> DefaultServers | None:
        """The default pager `pager` and sigma0 as the page-fault shortcut sees them."""
        ...

    def refusal_reason(self, k: Kernel, pager: Thread, words: tuple[int, ...]) -> str:
        """Why `pager` refused a page fault, from its reply's words ("" if it says not)."""
        ...


_boot_servers: BootServers | None = None


def set_boot_servers(servers: BootServers) -> None:
    """Register the boot servers every kernel starts on first use."""
    global _boot_servers
    _boot_servers = servers


def boot_servers() -> BootServers:
    if _boot_servers is None:
        raise RuntimeError("no boot servers registered: import l4sim, not only l4sim.kernel")
    return _boot_servers
