"""A message's words into the MRs, as the user API loads them: all or nothing, with a
clear error for a word that does not fit a 64-bit MR (raised where the operation is
awaited, before any kernel entry: the caller's misuse, not a kernel failure).

The fast path (`fastpath.py`), the general path's entries (`user/context.py`) and the
general path's two-word load when the IPC runs (`ipc.py`) share these.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from .abi import MR_COUNT
from .diagnose import word_error


def load_two_words(mr: array[int], words: Sequence[int]) -> None:
    """A message of two words into MR0 and MR1, all or nothing, as a longer message is
    loaded (through an array first): a word that does not fit a 64-bit MR raises
    (`word_error`) and leaves the MRs as they were."""
    old = mr[0]
    try:
        mr[0], mr[1] = words
    except (OverflowError, TypeError) as exc:
        mr[0] = old
        raise word_error(words, exc) from None


def load_words(mr: array[int], words: Sequence[int]) -> int:
    """A message of `words` into the MRs, all or nothing; its length. A word that does
    not fit a 64-bit MR raises (`word_error`), more than the MRs hold a ValueError."""
    n = len(words)  # (not a sequence: raises here, as any Python call would)
    if n == 2:
        load_two_words(mr, words)
    elif n:
        if n > MR_COUNT:
            raise ValueError(f"at most {MR_COUNT} words fit the MRs, got {n}")
        try:
            if n == 1:
                mr[0] = words[0]
            else:
                mr[:n] = array("Q", words)
        except (OverflowError, TypeError) as exc:
            raise word_error(words, exc) from None
    return n
