"""Measure what a checkpoint costs: seal + save time, size, and restore (load + verify + unpickle).

    python scripts/bench_checkpoint.py [--events 10000] [--repeat 7] [--redis URL]

For each model, a shard's learner (the real state a checkpoint holds: model,
metric, label book) learns ``--events`` labelled Agrawal events, then is
checkpointed ``--repeat`` times into the local store (a tmp folder, fsynced)
and into Redis (``--redis``, else ``STREAM_LEARNER_TEST_REDIS``; skipped when
neither is given). The table shows medians, as Markdown for docs/state.md.

Columns: ``seal`` pickles the state and signs it (HMAC-SHA256); ``save`` is the
store write alone (one Lua script in Redis; write, fsync, rename in a folder);
``restore`` reads the newest checkpoint, verifies it and unpickles it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from river import datasets  # noqa: E402

from stream_learner.checkpoint import EnvelopeCodec  # noqa: E402
from stream_learner.datasets import sample_to_event  # noqa: E402
from stream_learner.events import Codec, Origin  # noqa: E402
from stream_learner.learner import Learner  # noqa: E402
from stream_learner.models import ModelSpec  # noqa: E402
from stream_learner.settings import LimitSettings, ModelSettings, SchemaSettings  # noqa: E402
from stream_learner.stores import CheckpointStore, LocalStore, RedisStore  # noqa: E402

#: name -> (pipeline, events learned; 0: ``--events``)
MODELS: dict[str, tuple[tuple[dict[str, Any], ...], int]] = {
    "linear (StandardScaler + LogisticRegression)": (
        ({"step": "preprocessing.StandardScaler"}, {"step": "linear_model.LogisticRegression"}),
        0,
    ),
    "tree (HoeffdingTreeClassifier)": (({"step": "tree.HoeffdingTreeClassifier"},), 0),
    # a model of about 1 MiB: what restore costs as state grows
    "forest (ARFClassifier, 3 trees)": (
        ({"step": "forest.ARFClassifier", "params": {"n_models": 3, "seed": 1}},),
        1000,
    ),
    # a large model: seal and restore grow with the pickled size
    "forest (ARFClassifier, 10 trees)": (
        ({"step": "forest.ARFClassifier", "params": {"n_models": 10, "seed": 1}},),
        0,
    ),
}

SHARD = "events:0"


def trained(pipeline: tuple[dict[str, Any], ...], n: int) -> tuple[Learner, str]:
    """A learner that saw ``n`` labelled events, and its model configuration hash."""
    spec = ModelSpec.from_settings(
        ModelSettings(name="bench", task="classification", pipeline=pipeline)
    )
    codec = Codec(SchemaSettings(), LimitSettings(), spec.task)
    learner = Learner(spec)
    stream = datasets.synth.Agrawal(classification_function=2, seed=11)
    for i, (x, y) in enumerate(itertools.islice(stream, n)):
        event = sample_to_event(i, f"sensor-{i % 12}", x, y)
        item = codec.decode(orjson.dumps(event), None, 0, Origin("events", 0, i))
        learner.process(item)
    return learner, spec.config_hash


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = action()
    return (time.perf_counter() - t0) * 1000.0, result


def measure(
    store: CheckpointStore, codec: EnvelopeCodec, learner: Learner, n: int, repeat: int
) -> dict[str, float]:
    seal, save, restore, size = [], [], [], 0
    for i in range(repeat):
        ms, blob = timed(lambda: codec.seal(SHARD, {("events", 0): n}, 1, learner, time.time()))
        seal.append(ms)
        size = len(blob)
        ms, _id = timed(partial(store.save, SHARD, 1, blob))
        save.append(ms)

        def load() -> Any:
            latest = store.latest(SHARD)
            assert latest is not None
            return codec.open(latest[1]).state

        ms, state = timed(load)
        restore.append(ms)
        assert state.n_learned == learner.n_learned, i
    return {
        "bytes": size,
        "seal_ms": statistics.median(seal),
        "save_ms": statistics.median(save),
        "restore_ms": statistics.median(restore),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--redis", default=os.environ.get("STREAM_LEARNER_TEST_REDIS", ""))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pipeline, events) in MODELS.items():
            events = events or args.events
            learner, config_hash = trained(pipeline, events)
            codec = EnvelopeCodec(b"k" * 32, config_hash)
            stores: list[tuple[str, CheckpointStore]] = [
                ("local", LocalStore(Path(tmp) / uuid.uuid4().hex, keep=3))
            ]
            if args.redis:
                stores.append(("redis", RedisStore(args.redis, f"bench-{uuid.uuid4().hex[:8]}")))
            for store_name, store in stores:
                r = measure(store, codec, learner, events, args.repeat)
                rows.append((name, events, store_name, r))
                if isinstance(store, RedisStore):
                    keys = store._redis.keys(f"{store.prefix}:*")
                    if keys:
                        store._redis.delete(*keys)
                store.close()

    print(f"median of {args.repeat}; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| model | events | store | checkpoint size | seal (pickle + HMAC) | save "
          "| restore (load + verify + unpickle) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, events, store_name, r in rows:
        print(
            f"| {name} | {events:,} | {store_name} | {r['bytes'] / 1024:,.1f} KiB "
            f"| {r['seal_ms']:.2f} ms "
            f"| {r['save_ms']:.2f} ms | {r['restore_ms']:.2f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
