"""The result of an IPC operation, as the user sees it. Kept tiny: it is on the hot path."""

from __future__ import annotations

from array import array
from operator import itemgetter
from typing import Any

from .abi import IpcError, MsgTag

_new = tuple.__new__


class IpcResult(tuple[Any, ...]):
    """What an IPC returned: `error` (IpcError, OK = 0), the received `tag`, the sender's
    `label` (gate label, IRQ label or the sending thread's tid) and the received `words`.

    For a call or reply_and_wait the result describes the phase that `error` belongs to:
    the receive phase when the send succeeded. A tuple underneath (error, label, raw
    tag, words array) because it is built on every IPC.
    """

    __slots__ = ()

    def __new__(cls, error: IpcError, label: int = 0, tag: int = 0,
                words: array[int] | None = None) -> IpcResult:
        return _new(cls, (error, label, tag, words))

    error: IpcError = property(itemgetter(0))  # type: ignore[assignment]
    label: int = property(itemgetter(1))  # type: ignore[assignment]

    @property
    def ok(self) -> bool:
        return not self[0]

    @property
    def tag(self) -> MsgTag:
        return MsgTag.from_raw(self[2])

    @property
    def words(self) -> tuple[int, ...]:
        w = self[3]
        return tuple(w) if w is not None else ()

    @property
    def string_bytes(self) -> tuple[int, ...]:
        """Bytes delivered per string item (user-memory IPC arrives with S11)."""
        return ()

    def __repr__(self) -> str:
        return f"IpcResult({self.error.name}, label={self.label}, words={self.words})"
