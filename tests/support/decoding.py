"""What every decoded record must look like, whatever bytes it came from.

Shared by the property-based tests (tests/test_properties.py) and the fuzz tests
(tests/test_fuzz.py).
"""

from __future__ import annotations

import math

from stream_learner.events import Event, Label
from stream_learner.settings import LimitSettings, ModelSettings

#: Tight limits, so that generated records reach them.
LIMITS = LimitSettings(max_record_bytes=4096, max_features=8, max_id_length=32)

CLASSIFIER = ModelSettings(
    task="classification",
    pipeline=(
        {"step": "preprocessing.StandardScaler"},
        {"step": "linear_model.LogisticRegression"},
    ),
)
MODELS = {"regression": ModelSettings(), "classification": CLASSIFIER}


def check_decoded(item: Event | Label) -> None:
    """Fail unless ``item`` has a valid id, key, timestamp and features under ``LIMITS``."""
    assert isinstance(item.id, str | int) and not isinstance(item.id, bool)
    assert isinstance(item.key, str) and len(item.key) <= LIMITS.max_id_length
    assert math.isfinite(item.ts)
    if isinstance(item, Event):
        assert len(item.features) <= LIMITS.max_features
        for value in item.features.values():
            assert value is None or isinstance(value, bool | int | float | str)
            assert not isinstance(value, float) or math.isfinite(value)
        assert item.has_label == (item.label is not None and item.label_error is None)
