"""Helpers of the in-memory crash tests: the data, settings and state comparisons.

Shared by tests/test_recovery.py and tests/test_acked_checkpoints.py.
"""

from __future__ import annotations

from typing import Any

from stream_learner.events import Codec, Origin
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics
from stream_learner.settings import Settings
from stream_learner.sources import TopicPartition
from stream_learner.stores import MemoryStore
from tests.support.memory import TOPIC, TP0, TP1, codec_for, make_settings, phishing


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


PROBE_SETTINGS = make_settings()
_PROBE_CODEC = Codec(PROBE_SETTINGS.schema_, PROBE_SETTINGS.limits, "classification")
PROBE = [
    _PROBE_CODEC.decode(v, None, 0, Origin(TOPIC, 9, i)).features  # type: ignore[union-attr]
    for i, v in enumerate(phishing(1000, 1040))
]


def probe(learner: Learner) -> list[dict[Any, float]]:
    return [learner.model.predict_proba_one(x) for x in PROBE]


def assert_same_state(restored: Learner, reference: Learner) -> None:
    assert probe(restored) == probe(reference)
    assert restored.n_learned == reference.n_learned
    assert restored.n_predicted == reference.n_predicted
    assert restored.metric_value == reference.metric_value


def checkpoint_offsets(store: MemoryStore, sid: str, settings: Settings) -> dict[TopicPartition, int] | None:
    latest = store.latest(sid)
    if latest is None:
        return None
    header = codec_for(settings).read_header(latest[1])
    return {(t, p): o for t, p, o in header["offsets"]}


DATA = {TP0: phishing(0, 160), TP1: phishing(400, 530)}


def crash_settings(every_events: int) -> Settings:
    # 20 per poll = 10 per partition (FairSource)
    return make_settings(service__batch_size=20, checkpoint__every_events=every_events)
