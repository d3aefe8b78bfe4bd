"""A model that breaks on chosen records, for the stages after decoding.

``model.factory = "tests.support.fragile_model:fragile"``; the feature ``boom``
of an event says what the model does with it (tests/test_poison.py,
tests/integration/test_bad_input.py).
"""

from __future__ import annotations

from typing import Any

from river import base, linear_model

#: feature ``boom`` of an event: what the model does with it
PREDICT_RAISES, LEARN_RAISES, EXITS, UNENCODABLE, BREAKS_DRIFT, BREAKS_METRIC = 1, 2, 3, 4, 5, 6


class Explosive(float):
    """A prediction that encodes as JSON but cannot be read as a float by a monitor."""

    def __float__(self) -> float:
        raise ValueError("this number cannot be read")

    def item(self) -> float:
        return float.__float__(self)


class Fragile(base.Regressor):  # type: ignore[misc]
    """A linear regression that raises, exits or returns an object JSON cannot hold."""

    def __init__(self) -> None:
        self.inner = linear_model.LinearRegression()

    def predict_one(self, x: dict[str, Any]) -> Any:
        boom = x.get("boom")
        if boom == PREDICT_RAISES:
            raise RecursionError("maximum recursion depth exceeded")
        if boom == EXITS:
            raise SystemExit(3)  # what some libraries do on a fatal condition
        if boom == UNENCODABLE:
            return object()
        if boom == BREAKS_DRIFT:
            return Explosive(0.5)
        if boom == BREAKS_METRIC:
            return "0.5"
        return self.inner.predict_one(_clean(x))

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        if x.get("boom") == LEARN_RAISES:
            raise OverflowError("math range error")
        if "boom" not in x:
            self.inner.learn_one(_clean(x), y)


def _clean(x: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in x.items() if k != "boom"}


def fragile() -> Fragile:
    """The model factory (``model.factory = "tests.support.fragile_model:fragile"``)."""
    return Fragile()
