"""The worker's handle on a running session (a leaf module: the worker,
the engine and the plugin dispatcher all import it, it imports nothing).

The worker passes a `SessionControl` to `run_session`; to end a session at
once (second TERM, the stop grace period over) its signal handler raises
`AbortSession` in the middle of whatever the engine is doing.
"""

from __future__ import annotations

from typing import Protocol


class AbortSession(BaseException):
    """Raised by the worker (from a signal handler) to end a session now.
    A BaseException so that `except Exception` in plugins cannot eat it."""


class SessionControl(Protocol):
    """What the engine asks of the worker while a session runs."""

    @property
    def stopping(self) -> bool:
        """The worker is stopping: a session idle between commands (no
        transaction in flight) gets 421 and is closed."""
        ...

    def touch(self) -> None:
        """Called on every line and DATA chunk received (a heartbeat)."""
        ...
