"""The kernel's internal exceptions: a leaf module that every other kernel module may import.

None of these is an L4 error: those are values (`abi.IpcError`) returned to user code.
These unwind a thread's coroutine chain, or report a bug in l4sim itself.
"""

from __future__ import annotations


class KernelInvariantError(RuntimeError):
    """A kernel invariant does not hold: a bug in l4sim, never a user error."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"kernel invariant violated: {invariant}: {detail}")
        self.invariant = invariant


class ThreadDeleted(BaseException):
    """Raised inside the chain of a deleted thread to unwind it: the thread deleted
    itself, was deleted at a preemption point, or (its chain being closed) tries to
    enter the kernel again from a `finally:` block. A BaseException, so that a user's
    `except Exception` does not stop it."""


class ThreadKilled(BaseException):
    """Raised inside the chain of a thread the kernel kills (a fault nobody resolves, an
    exception with no handler), to unwind it; the CPU loop ends the thread with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
