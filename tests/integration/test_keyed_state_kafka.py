"""Keyed state on the real broker and Redis: 3,000 sensors, one model each, 400 in memory;
workers SIGKILLed after incremental checkpoints and rebalanced between two workers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.events import Codec, Origin
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.settings import LimitSettings, SchemaSettings
from stream_learner.stores import RedisStore
from tests.support.kafka import consume_all
from tests.support.workers import (
    CHECKPOINT_KEY,
    MODEL,
    Worker,
    labelled_events,
    paced_producer,
    write_config,
)
from tests.support.workers import check_predictions as _check_predictions
from tests.support.workers import worker_settings as _settings
from tests.support.workers import worker_topics as _topics

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITIONS = 2
SENSORS = 3000
N_EVENTS = 9000
KEYED = '[model]\nscope = "key"\nmax_resident = 400\n'
KEYED_MODEL = MODEL.model_copy(update={"scope": "key", "max_resident": 400})


def _reference(records: list[tuple[int, bytes, bytes]]) -> tuple[dict[tuple[int, int], Any], dict[int, Learner]]:
    """One per-key learner per partition, fed in production order."""
    spec = ModelSpec.from_settings(KEYED_MODEL)
    codec = Codec(SchemaSettings(), LimitSettings(), spec.task)
    learners = {p: Learner(spec) for p in range(PARTITIONS)}
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    out: dict[tuple[int, int], Any] = {}
    for partition, key, value in records:
        offset = offsets[partition]
        offsets[partition] += 1
        prediction = learners[partition].process(codec.decode(value, key, 0, Origin("e", partition, offset)))[0]
        assert prediction is not None
        out[(partition, offset)] = orjson.loads(orjson.dumps(
            {"prediction": prediction.prediction, **prediction.fields}, option=orjson.OPT_NON_STR_KEYS
        ))
    return out, learners


def _kill_after_restore(worker: Worker, rng: random.Random, restores: int) -> None:
    """SIGKILL a worker some time after its ``restores``-th restore (whatever the start-up)."""
    deadline = time.monotonic() + 90
    while worker.log().count("restore from") < restores and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(rng.uniform(1.5, 3.0))
    worker.kill()


def test_keyed_state_survives_sigkills_and_rebalances(
    kafka_bootstrap: str, redis_url: str, make_topic: Any, tmp_path: Path,
    redis_prefixes: Callable[[str], str],
) -> None:
    topics = _topics(make_topic)
    prefix = redis_prefixes("keyed")
    records = labelled_events(N_EVENTS, PARTITIONS, sensors=SENSORS)
    expected, learners = _reference(records)
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[model]\n", KEYED, 1))
    settings = _settings(kafka_bootstrap, redis_url, topics, prefix,
                         checkpoint__every_events="400", checkpoint__every_seconds="0.5")
    rng = random.Random(14)
    producer = paced_producer(kafka_bootstrap, topics["events"], records, seconds=20.0)
    log = tmp_path / "worker.log"
    # one worker, killed after checkpoints; then two (a rebalance), one of them killed
    first = Worker(config, log, **settings)
    _kill_after_restore(first, rng, 2)
    second = Worker(config, log, **settings)
    restores = log.read_text().count("restore from")
    third = Worker(config, log, **settings)  # joins: the group rebalances between the two
    _kill_after_restore(third, rng, restores + 2)
    second.kill()
    producer.join(60)
    final = Worker(config, log, **settings, service__idle_timeout_s="6")
    assert final.wait(240) == 0, final.log()[-3000:]
    text = log.read_text()
    assert text.count("restore from checkpoint") >= 2, "the kills should land after checkpoints"

    rows = consume_all(kafka_bootstrap, topics["predictions"], len(expected), timeout_s=120)
    _check_predictions(rows, expected, exactly_once=False)

    # the store holds every key's model as the uninterrupted run left it
    store = RedisStore(redis_url, prefix)
    codec = EnvelopeCodec(CHECKPOINT_KEY.encode(), ModelSpec.from_settings(KEYED_MODEL).config_hash)
    try:
        for partition, learner in learners.items():
            shard = f"{topics['events']}:{partition}"
            head = codec.open(store.latest(shard)[1])  # type: ignore[index]
            assert head.header["keyed"]["keys"] == learner.models.n_keys  # type: ignore[attr-defined]
            assert head.state.n_learned == learner.n_learned
            assert store.n_entries(shard) == learner.models.n_keys  # type: ignore[attr-defined]
            for sensor in range(partition, SENSORS, 97 * PARTITIONS):
                key = f"sensor-{sensor}"
                entry = codec.open_entry(shard, key, store.entry(shard, key))  # type: ignore[arg-type]
                slot = head.state.models.decode(entry)
                want = learner.models.get(key)
                assert slot.n_learned == want.n_learned
                assert slot.model.predict_proba_one({"salary": 5e4, "age": 40}) == \
                    want.model.predict_proba_one({"salary": 5e4, "age": 40})
    finally:
        store.close()
