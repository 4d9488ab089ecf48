"""The run report as one self-contained HTML page (filled in below)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel, RunResult


def kernel_html(k: Kernel) -> str:
    return f"<pre>{k!r}</pre>"


def result_html(result: RunResult) -> str:
    return f"<pre>{result!r}</pre>"
