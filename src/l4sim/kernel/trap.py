"""The one place where a thread's coroutine chain yields to the CPU loop.

A kernel path that must block awaits `switch(next)`: the chain is suspended and the
CPU loop resumes `next` (a direct switch) or, for None, whatever the scheduler picks.
When the blocked thread is dispatched again, its kernel path continues after the
await and must re-check its state word.
"""

from __future__ import annotations

import types
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .objects import Thread


@types.coroutine
def switch(next_thread: Thread | None) -> Generator[Thread | None, Any, None]:
    yield next_thread
