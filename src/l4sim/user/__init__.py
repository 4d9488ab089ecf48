"""What a user thread calls: the context `t` passed to every thread body."""

from .context import UserContext

__all__ = ["UserContext"]
