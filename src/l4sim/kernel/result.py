"""The result of an IPC operation, as the user sees it. Kept tiny: it is on the hot path."""

from __future__ import annotations

from array import array

from .abi import IpcError, MsgTag


class IpcResult:
    """What an IPC returned: `error` (IpcError, OK = 0), the received `tag`, the sender's
    `label` (gate label, IRQ label or the sending thread's tid) and the received `words`.

    For a call or reply_and_wait the result describes the phase that `error` belongs to:
    the receive phase when the send succeeded.
    """

    __slots__ = ("error", "label", "_tag", "_words")

    def __init__(self, error: IpcError, label: int = 0, tag: int = 0,
                 words: array[int] | None = None) -> None:
        self.error = error
        self.label = label
        self._tag = tag
        self._words = words

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def tag(self) -> MsgTag:
        return MsgTag.from_raw(self._tag)

    @property
    def words(self) -> tuple[int, ...]:
        w = self._words
        return tuple(w) if w is not None else ()

    @property
    def string_bytes(self) -> tuple[int, ...]:
        """Bytes delivered per string item (user-memory IPC arrives with S11)."""
        return ()

    def __repr__(self) -> str:
        return f"IpcResult({self.error.name}, label={self.label}, words={self.words})"
