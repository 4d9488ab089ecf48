"""The boot servers: sigma0 and the anonymous-memory pager, started by the kernel on
first use. They are user-level programs built on the user API, so the kernel does not
import them: this module registers them with the kernel when `l4sim` is imported."""

from __future__ import annotations

from ..kernel.boot import set_boot_servers
from ..kernel.kernel import Kernel
from ..kernel.objects import Task, Thread
from ..kernel.pagershortcut import DefaultServers
from .anon_pager import REQUEST, ZERO_PAGE, AnonPagerBooks, anon_pager_body
from .sigma0 import REASONS, Ownership, sigma0_body


class _BootServers:
    def start_sigma0(self, k: Kernel, task: Task) -> Thread:
        return task.new_thread(sigma0_body, k.memory, Ownership(k.memory), name="sigma0",
                               priority=254, pager=None)

    def start_anon_pager(self, k: Kernel, sigma0: Thread) -> Thread:
        task = k.new_task("anon-pager")
        sel = task.add_cap(sigma0)
        return task.new_thread(anon_pager_body, sel, AnonPagerBooks(), name="anon-pager",
                               priority=250, pager=sigma0)

    def default_servers(self, k: Kernel, pager: Thread) -> DefaultServers | None:
        sigma0 = k._sigma0
        if sigma0 is None or pager.body is not anon_pager_body or sigma0.body is not sigma0_body:
            return None
        sel, books = pager.args
        _, own = sigma0.args
        return DefaultServers(pager, anon_pager_body.__code__, books, sel, REQUEST, ZERO_PAGE,
                              sigma0, sigma0_body.__code__, own)

    def refusal_reason(self, k: Kernel, pager: Thread, words: tuple[int, ...]) -> str:
        """sigma0 says why it refuses in MR0 of its reply."""
        if pager is k._sigma0 and words:
            return REASONS.get(words[0], "")
        return ""


set_boot_servers(_BootServers())
