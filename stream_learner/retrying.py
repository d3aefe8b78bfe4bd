"""Retry a call with doubling waits: the one retry loop of the package.

:func:`retry_call` makes a call again while it fails with an error its
``retryable`` predicate accepts, waiting :class:`Backoff` delays in between
(doubling from the first wait up to the longest) and logging each failure.
Any other error passes through at once. With ``give_up_after_s`` it stops
when the next wait would end past that budget and raises the last error;
without, it retries until the call succeeds.

The clock and the sleep are parameters, so the policy is tested without
waiting. Each caller keeps its own policy: which errors are retried, the
waits, and how long (``docs/state.md``, "Failure policies").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

__all__ = ["Backoff", "retry_call"]

_T = TypeVar("_T")

_log = logging.getLogger(__name__)


class Backoff(NamedTuple):
    """Waits that double from ``first_s`` up to ``max_s``.

    Examples
    --------
    >>> waits = Backoff(0.2, 1.0)
    >>> waits.after(None), waits.after(0.2), waits.after(0.8)
    (0.2, 0.4, 1.0)
    """

    #: the wait after the first failure, in seconds
    first_s: float
    #: the longest wait, in seconds
    max_s: float

    def after(self, previous: float | None) -> float:
        """The wait that follows ``previous`` (None: the first wait)."""
        if previous is None:
            return min(self.first_s, self.max_s)
        return min(previous * 2, self.max_s)


def retry_call(
    call: Callable[[], _T],
    what: str,
    retryable: Callable[[Exception], bool],
    backoff: Backoff,
    *,
    give_up_after_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: logging.Logger = _log,
) -> _T:
    """``call()``, made again after each retryable failure, with doubling waits.

    Parameters
    ----------
    call
        What to do; its result is returned.
    what
        What the call does, for the log line of each failure (``"<what> failed (...)"``).
    retryable
        True for an error worth another attempt; any other error is raised at once.
    backoff
        The waits between attempts.
    give_up_after_s
        Budget from the first attempt: when the next wait would end past it, the last
        error is raised. None: retry until the call succeeds.
    clock, sleep
        Monotonic seconds, and how to wait.
    log
        Where each failure is logged (as a warning), by default this module's logger.

    Returns
    -------
    object
        What ``call()`` returned.

    Examples
    --------
    >>> outcomes = [ConnectionError("down"), ConnectionError("down"), "ok"]
    >>> def flaky():
    ...     outcome = outcomes.pop(0)
    ...     if isinstance(outcome, Exception):
    ...         raise outcome
    ...     return outcome
    >>> waits = []
    >>> retry_call(flaky, "a read", lambda e: isinstance(e, ConnectionError),
    ...            Backoff(0.2, 5.0), sleep=waits.append)
    'ok'
    >>> waits
    [0.2, 0.4]
    """
    deadline = None if give_up_after_s is None else clock() + give_up_after_s
    delay = backoff.after(None)
    while True:
        try:
            return call()
        except Exception as exc:
            if not retryable(exc) or (deadline is not None and clock() + delay > deadline):
                raise
            log.warning("%s failed (%s: %s); retrying in %.1fs",
                        what, type(exc).__name__, exc, delay)
        sleep(delay)
        delay = backoff.after(delay)
