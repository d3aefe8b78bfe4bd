"""The retry helper: attempts, doubling waits and their cap, giving up, errors passed through.

A fake clock moves only when the helper sleeps, so nothing here waits.
"""

from __future__ import annotations

import logging

import pytest

from stream_learner.errors import ConnectionFailed
from stream_learner.keyed_state import STORE_FIRST_WAIT_S, read_store
from stream_learner.retrying import Backoff, retry_call


class FakeTime:
    """A monotonic clock that advances by exactly what is slept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Flaky:
    """Raises the given errors in turn, then returns ``result``."""

    def __init__(self, errors: list[Exception], result: str = "done") -> None:
        self.errors = list(errors)
        self.result = result
        self.attempts = 0

    def __call__(self) -> str:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def is_connection_error(exc: Exception) -> bool:
    return isinstance(exc, ConnectionError)


def test_backoff_doubles_from_the_first_wait_up_to_the_cap() -> None:
    waits = Backoff(0.2, 1.0)
    seq = [waits.after(None)]
    for _ in range(5):
        seq.append(waits.after(seq[-1]))
    assert seq == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert Backoff(2.0, 0.5).after(None) == 0.5  # a first wait above the cap is capped


def test_retries_until_the_call_succeeds_with_doubling_capped_waits() -> None:
    t = FakeTime()
    call = Flaky([ConnectionError(f"down {i}") for i in range(6)])
    result = retry_call(call, "a read", is_connection_error, Backoff(0.2, 1.0),
                        clock=t.clock, sleep=t.sleep)
    assert result == "done"
    assert call.attempts == 7
    assert t.slept == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_a_call_that_succeeds_at_once_never_sleeps() -> None:
    t = FakeTime()
    call = Flaky([])
    assert retry_call(call, "a read", is_connection_error, Backoff(0.2, 1.0),
                      sleep=t.sleep) == "done"
    assert call.attempts == 1 and t.slept == []


def test_gives_up_within_the_budget_and_raises_the_last_error() -> None:
    t = FakeTime()
    errors: list[Exception] = [ConnectionError(f"down {i}") for i in range(10)]
    call = Flaky(errors)
    with pytest.raises(ConnectionError) as info:
        retry_call(call, "a read", is_connection_error, Backoff(0.2, 5.0),
                   give_up_after_s=1.0, clock=t.clock, sleep=t.sleep)
    # waits 0.2 and 0.4 fit in 1 s; the next (0.8, ending at 1.4 s) would not
    assert t.slept == [0.2, 0.4]
    assert call.attempts == 3
    assert str(info.value) == "down 2"  # the last error itself, not the first
    assert t.now <= 1.0


def test_without_a_budget_it_retries_as_long_as_it_takes() -> None:
    t = FakeTime()
    call = Flaky([ConnectionError("down")] * 50)
    assert retry_call(call, "a commit", is_connection_error, Backoff(0.2, 5.0),
                      clock=t.clock, sleep=t.sleep) == "done"
    assert call.attempts == 51
    assert max(t.slept) == 5.0 and t.slept == sorted(t.slept)


def test_a_non_retryable_error_passes_through_at_once() -> None:
    t = FakeTime()
    fatal = ValueError("refused")
    call = Flaky([fatal])
    with pytest.raises(ValueError) as info:
        retry_call(call, "a read", is_connection_error, Backoff(0.2, 1.0),
                   give_up_after_s=60.0, clock=t.clock, sleep=t.sleep)
    assert info.value is fatal
    assert call.attempts == 1 and t.slept == []


def test_a_non_retryable_error_after_retries_stops_them() -> None:
    t = FakeTime()
    fatal = ValueError("refused")
    call = Flaky([ConnectionError("down"), ConnectionError("down"), fatal])
    with pytest.raises(ValueError) as info:
        retry_call(call, "a read", is_connection_error, Backoff(0.2, 1.0),
                   clock=t.clock, sleep=t.sleep)
    assert info.value is fatal
    assert call.attempts == 3 and t.slept == [0.2, 0.4]


def test_each_failure_is_logged_with_what_failed_and_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = FakeTime()
    mine = logging.getLogger("stream_learner.test_caller")
    call = Flaky([ConnectionError("broker down"), ConnectionError("broker down")])
    with caplog.at_level("WARNING"):
        retry_call(call, "offset commit", is_connection_error, Backoff(0.2, 1.0),
                   sleep=t.sleep, log=mine)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "offset commit failed (ConnectionError: broker down); retrying in 0.2s",
        "offset commit failed (ConnectionError: broker down); retrying in 0.4s",
    ]
    assert {r.name for r in caplog.records} == {"stream_learner.test_caller"}


# -- store reads at restore (keyed_state.read_store) -------------------------------------


def test_store_read_gives_up_with_an_error_that_names_what_and_how_long() -> None:
    t = FakeTime()
    down = ConnectionFailed("cannot reach Redis at redis://cache:6379/0")
    call = Flaky([down] * 100)
    with pytest.raises(ConnectionFailed, match=r"^claim events:0: store unreachable for 5s: ") as info:
        read_store(call, "claim events:0", 5.0, 30.0, clock=t.clock, sleep=t.sleep)
    assert "redis://cache:6379/0" in str(info.value)
    assert info.value.__cause__ is down
    assert t.slept[0] == STORE_FIRST_WAIT_S and t.now <= 5.0


def test_store_read_waits_are_capped_by_max_backoff() -> None:
    t = FakeTime()
    call = Flaky([ConnectionFailed("down")] * 8)
    assert read_store(call, "load events:0", 60.0, 1.0, clock=t.clock, sleep=t.sleep) == "done"
    assert t.slept == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_store_read_passes_other_errors_through_at_once() -> None:
    t = FakeTime()
    broken = RuntimeError("not a connection problem")
    call = Flaky([broken])
    with pytest.raises(RuntimeError) as info:
        read_store(call, "load events:0", 60.0, 30.0, clock=t.clock, sleep=t.sleep)
    assert info.value is broken and t.slept == []
