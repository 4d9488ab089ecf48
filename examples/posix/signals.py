"""Signals through the signal server: a handler, a blocked signal, default actions.

A target process has a signal thread (it registers the process and runs its
handlers). It installs a handler for SIGUSR1, ignores SIGUSR2, and blocks SIGHUP. A
sender kills it with SIGUSR1 (the handler runs in the target), SIGUSR2 (ignored) and
SIGHUP (pending while blocked: the target sees it in its pending set); when the target
unblocks SIGHUP, it is delivered: its default action terminates the process, and the
server deletes its task. A later kill finds no such process (ESRCH).

    l4sim run examples/posix/signals.py
"""

from __future__ import annotations

import errno
import signal
from typing import Any

from l4sim import Kernel, RunResult, Timeout
from l4sim.lib.boot import System
from l4sim.lib.framework import Env, PosixError
from l4sim.lib.signals import SIG_BLOCK, SIG_IGN, SIG_UNBLOCK, Signals

USR1, USR2, HUP = int(signal.SIGUSR1), int(signal.SIGUSR2), int(signal.SIGHUP)


async def target(t: Any, env: Env, sigs: Signals, ex: dict[str, Any]) -> None:
    async def on_usr1(t: Any, sig: int) -> None:
        ex["handled"].append((t.name, sig, t.now))

    await sigs.action(t, env, USR1, on_usr1)
    await sigs.action(t, env, USR2, SIG_IGN)
    await sigs.mask(t, env, SIG_BLOCK, {HUP})
    ex["pid"] = await sigs.getpid(t)
    await t.sleep(Timeout.us(200))            # the sender signals us meanwhile
    ex["pending"] = sorted(await sigs.pending(t, env))
    ex["unblocking_at"] = t.now
    await sigs.mask(t, env, SIG_UNBLOCK, {HUP})   # SIGHUP's default action: terminate
    ex["survived"] = True                         # never reached


async def sender(t: Any, env: Env, ex: dict[str, Any]) -> None:
    while "pid" not in ex:
        await t.sleep(Timeout.us(5))
    pid = ex["pid"]
    await Signals.kill(t, env, pid, 0)           # it exists
    for sig in (USR1, USR2, HUP, HUP):
        await Signals.kill(t, env, pid, sig)
        ex["sent"].append(sig)
    for bad, sig in (("bad signal", 999), ("after exit", 0)):
        if bad == "after exit":
            await t.sleep(Timeout.us(400))
        try:
            await Signals.kill(t, env, pid, sig)
        except PosixError as exc:
            ex["errors"][bad] = exc.errno


def build(k: Kernel) -> None:
    system = System(k, servers=("signal",))
    ex: dict[str, Any] = {"handled": [], "sent": [], "errors": {}}
    k.example = ex  # type: ignore[attr-defined]
    sigs = Signals()
    proc = system.process("target")
    proc.thread(sigs.thread_body, name="target-signals", priority=140)
    proc.thread(target, sigs, ex, name="target")
    system.process("sender").thread(sender, ex, name="sender")


def report(k: Kernel, result: RunResult) -> None:
    ex = k.example  # type: ignore[attr-defined]
    print(f"sent {ex['sent']} to pid {ex['pid']}; handlers ran: {ex['handled']}")
    print(f"pending while blocked: {ex['pending']}; unblocked at {ex['unblocking_at']} cycles")
    print("errors:", {k: errno.errorcode[v] for k, v in ex["errors"].items()})
    print("died:", [(th.name, why) for th, why in result.died])
    assert [(name, sig) for name, sig, _ in ex["handled"]] == [("target-signals", USR1)]
    assert ex["pending"] == [HUP] and "survived" not in ex
    assert ex["errors"] == {"bad signal": errno.EINVAL, "after exit": errno.ESRCH}
    assert sorted(th.name for th, why in result.died if why == "deleted") == [
        "target", "target-signals"]


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
