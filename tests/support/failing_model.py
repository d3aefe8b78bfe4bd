"""A model whose backend breaks for good mid-stream, for the shutdown-after-error tests.

From the event whose feature ``x`` reaches ``FAILING_MODEL_FROM_X`` on, every call
raises :class:`BackendGone`: a failure that is not about one record's content, so it
stops the worker in the middle of a batch.
"""

from __future__ import annotations

import os
from typing import Any

from river import base, linear_model

MESSAGE = "model backend gone"


class BackendGone(BaseException):
    """Not an ``Exception``: no per-record handler turns it into a dead letter."""


class BreaksFrom(base.Regressor):
    """Linear regression until ``x >= threshold``, then an error on every call."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.model = linear_model.LinearRegression()

    def _check(self, x: dict[str, Any]) -> None:
        if x["x"] >= self.threshold:
            raise BackendGone(f"{MESSAGE} (x={x['x']:g})")

    def predict_one(self, x: dict[str, Any]) -> Any:
        self._check(x)
        return self.model.predict_one(x)

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        self._check(x)
        self.model.learn_one(x, y)


def model() -> BreaksFrom:
    """The factory named in ``model.factory``."""
    return BreaksFrom(float(os.environ["FAILING_MODEL_FROM_X"]))
