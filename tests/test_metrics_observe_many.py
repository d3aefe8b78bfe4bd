"""observe_many records exactly what one observe per value records."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

from stream_learner.metrics import LATENCY_BUCKETS, observe_many


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _twins() -> tuple[CollectorRegistry, CollectorRegistry, Histogram, Histogram]:
    """Two registries, each with the same latency histogram: one per value, one per batch."""
    one, bulk = CollectorRegistry(), CollectorRegistry()
    return (one, bulk,
            Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=one),
            Histogram("x_seconds", "x", buckets=LATENCY_BUCKETS, registry=bulk))


def test_same_buckets_count_and_sum_as_observe() -> None:
    rng = random.Random(3)
    values = [rng.choice([0.0, 1e-5, 0.0001, 0.25, 10.0, 99.0]) for _ in range(200)]
    values += [rng.expovariate(100.0) for _ in range(2000)]
    one, bulk, h_one, h_bulk = _twins()
    for value in values:
        h_one.observe(value)
    for start in range(0, len(values), 300):  # batch by batch, as the service does
        observe_many(h_bulk, values[start : start + 300])
    observe_many(h_bulk, [])
    expected, got = _samples(one), _samples(bulk)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        if name[0].endswith("_sum"):
            assert abs(got[name] - value) <= 1e-9 * max(1.0, value)
        else:
            assert got[name] == value, name


def test_sum_is_the_same_float_and_nan_goes_to_no_bucket() -> None:
    rng = random.Random(5)
    values = [rng.uniform(0.0, 1e6) / 7.0 for _ in range(1000)] + [float("nan"), 0.1, 1e300]
    one, bulk, h_one, h_bulk = _twins()
    for value in values[:500]:  # the batches add to what is there already
        h_one.observe(value)
        h_bulk.observe(value)
    for value in values[500:]:
        h_one.observe(value)
    for start in range(500, len(values), 97):
        observe_many(h_bulk, values[start : start + 97])
    expected, got = _samples(one), _samples(bulk)
    assert repr(got) == repr(expected)  # NaN == NaN as text; floats to the last bit


def test_small_batches_count_as_observe() -> None:
    """Batches smaller than the number of buckets take the per-value path."""
    rng = random.Random(11)
    values = [rng.choice([0.0, 0.0001, 0.00025, 10.0, float("inf")]) for _ in range(100)]
    values += [rng.expovariate(300.0) for _ in range(900)]
    one, bulk, h_one, h_bulk = _twins()
    for value in values:
        h_one.observe(value)
    start = 0
    while start < len(values):  # batches of 1 to 9 values, always below 17 buckets
        size = rng.randint(1, 9)
        observe_many(h_bulk, values[start : start + size])
        start += size
    assert repr(_samples(bulk)) == repr(_samples(one))


def test_small_batches_of_one_value_count_as_observe() -> None:
    """Batches whose values are all equal (inline labels: every delay 0) take one search."""
    batches = [[0.0] * 8, [0] * 3, [0.0001] * 5, [0.00025, 0.00025], [float("inf")] * 4,
               [10.0] * 16, [float("nan"), 0.5, 0.5], [float("nan")] * 2, [7.0], [0.0, 0]]
    one, bulk, h_one, h_bulk = _twins()
    for batch in batches:
        for value in batch:
            h_one.observe(value)
        observe_many(h_bulk, batch)
    assert repr(_samples(bulk)) == repr(_samples(one))
