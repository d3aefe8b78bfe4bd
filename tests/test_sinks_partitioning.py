"""KafkaSink picks the same partition for a key as Kafka's default partitioner."""

from __future__ import annotations

from kafka.partitioner.default import DefaultPartitioner

from stream_learner.sinks import KeyPartitioner


class _Cluster:
    """The three calls DefaultPartitioner makes on cluster metadata."""

    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"predictions"}

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, _topic: str) -> set[int]:
        return self.partitions


def test_cached_choice_equals_the_default_partitioner() -> None:
    keys = [f"sensor-{i}".encode() for i in range(500)] + [b"", b"\xff\x00", "pompe-é".encode()]
    for partitions in ({0}, {0, 1, 2}, set(range(12))):
        by_key, default = KeyPartitioner(partitions), DefaultPartitioner()
        cluster = _Cluster(partitions)
        for key in keys + keys:  # second pass hits the cache
            assert by_key(key) == default.partition("predictions", key, key, None, None, cluster)


def test_more_partitions_start_the_cache_over() -> None:
    by_key = KeyPartitioner({0, 1})
    before = {k: by_key(k) for k in (f"k{i}".encode() for i in range(100))}
    by_key.update({0, 1})
    assert {k: by_key(k) for k in before} == before
    by_key.update(range(6))
    default, cluster = DefaultPartitioner(), _Cluster(set(range(6)))
    assert all(
        by_key(k) == default.partition("predictions", k, k, None, None, cluster) for k in before
    )
    assert len(set(by_key(k) for k in before)) > 2  # keys spread over the new partitions


def test_cache_is_bounded() -> None:
    by_key = KeyPartitioner({0, 1, 2})
    for i in range(KeyPartitioner.MAX_KEYS + 10):
        by_key(str(i).encode())
    assert len(by_key._cache) <= KeyPartitioner.MAX_KEYS
