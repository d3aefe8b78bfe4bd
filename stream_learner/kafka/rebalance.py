"""Keep the cause of an error raised inside a client's rebalance callback.

Both clients call the partition listener from inside their own code:
kafka-python wraps an exception of the callback in ``KafkaError("User rebalance
callback throws an error")`` (and, while closing, runs it on its I/O thread);
librdkafka passes it through C. :class:`CallbackGuard` catches it in the
callback and raises the original exception once the client call returned, so
the log and the exit line name the real cause.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["CallbackGuard"]

log = logging.getLogger(__name__)


class CallbackGuard:
    """Runs callbacks for a client and holds the first exception one raised.

    Examples
    --------
    >>> guard = CallbackGuard()
    >>> guard.call(int, "x")
    >>> guard.raise_pending()
    Traceback (most recent call last):
    ...
    ValueError: invalid literal for int() with base 10: 'x'
    >>> guard.raise_pending()  # raised once
    """

    def __init__(self) -> None:
        self._error: BaseException | None = None

    def call(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback``; keep (do not raise) what it raises."""
        try:
            callback(*args)
        except BaseException as exc:
            if self._error is None:
                self._error = exc
            else:
                log.error("another rebalance callback failed: %s: %s", type(exc).__name__, exc)

    def raise_pending(self) -> None:
        """Raise the kept exception, if any (once)."""
        error, self._error = self._error, None
        if error is not None:
            raise error

    def log_pending(self, doing: str) -> None:
        """Log the kept exception instead of raising it (while closing after another error)."""
        error, self._error = self._error, None
        if error is not None:
            log.error(
                "%s: a rebalance callback failed: %s: %s", doing, type(error).__name__, error,
                exc_info=error,
            )
