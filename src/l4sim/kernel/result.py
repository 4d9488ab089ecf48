"""The result of an IPC operation, as the user sees it. Kept tiny: it is on the hot path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .abi import IpcError, MsgTag

if TYPE_CHECKING:
    from array import array

    WordsSnapshot = Sequence[int] | array[int] | None


class IpcResult:
    """What an IPC returned: `error` (IpcError, OK = 0), the received `tag`, the sender's
    `label` (gate label, IRQ label or the sending thread's tid) and the received `words`.

    For a call or reply_and_wait the result describes the phase that `error` belongs to:
    the receive phase when the send succeeded. Immutable by convention; the fast path
    builds it with `object.__new__` and four slot stores (cheaper than any constructor).
    """

    __slots__ = ("error", "label", "_tag", "_words")

    error: IpcError
    label: int
    _tag: int
    _words: WordsSnapshot  # a snapshot: a tuple, or an array slice taken at the transfer

    def __init__(self, error: IpcError, label: int = 0, tag: int = 0,
                 words: WordsSnapshot = None) -> None:
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
        """Bytes delivered per string item; () for an IPC without strings."""
        return ()

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, IpcResult) and self.error == other.error
                and self.label == other.label and self._tag == other._tag
                and self.words == other.words)

    def __hash__(self) -> int:
        return hash((self.error, self.label, self._tag, self.words))

    def __repr__(self) -> str:
        return f"IpcResult({self.error.name}, label={self.label}, words={self.words})"


class LongIpcResult(IpcResult):
    """The result of an IPC with string items: also the bytes each string delivered."""

    __slots__ = ("_strings",)

    def __init__(self, error: IpcError, label: int = 0, tag: int = 0,
                 words: WordsSnapshot = None, strings: tuple[int, ...] = ()) -> None:
        super().__init__(error, label, tag, words)
        self._strings = strings

    @property
    def string_bytes(self) -> tuple[int, ...]:
        return self._strings

    def __repr__(self) -> str:
        return (f"IpcResult({self.error.name}, label={self.label}, words={self.words}, "
                f"string_bytes={self._strings})")


def result_with(err: IpcError, label: int, tag: int, words: WordsSnapshot,
                strings: tuple[int, ...] | None) -> IpcResult:
    """An IpcResult, or a LongIpcResult when the IPC carried strings."""
    if strings is None:
        return IpcResult(err, label, tag, words)
    return LongIpcResult(err, label, tag, words, strings)


new_result = object.__new__
