"""simulate: deterministic with a seed, records of the event contract, label delays, pacing."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from stream_learner.cli import main
from stream_learner.errors import SettingsError
from stream_learner.simulate import Simulated, SimulationPlan, publish, simulate
from tests.support.service import ROOT

EVENT_SCHEMA = json.loads((ROOT / "stream_learner" / "schemas" / "event.json").read_text())


def _values(plan: SimulationPlan) -> list[bytes]:
    return [r.value for r in simulate(plan)]


def test_same_seed_same_bytes_other_seed_other_stream() -> None:
    plan = SimulationPlan(count=500, keys=7, seed=3, drift_at=(200,), label_delay=5)
    assert _values(plan) == _values(plan)
    assert _values(plan) != _values(SimulationPlan(count=500, keys=7, seed=4, drift_at=(200,)))


def test_records_follow_the_event_contract() -> None:
    validator = Draft202012Validator(EVENT_SCHEMA)
    for source in ("agrawal", "sea", "friedman", "river:Phishing"):
        for value in _values(SimulationPlan(source=source, count=50, keys=5, label_delay=3)):
            record = orjson.loads(value)
            assert not list(validator.iter_errors(record)), (source, record)
            assert record["key"] in {f"sensor-{i}" for i in range(5)}


def test_label_record_follows_the_kth_later_event() -> None:
    records = [orjson.loads(v) for v in _values(SimulationPlan(count=100, label_delay=4))]
    events = [r["id"] for r in records if "features" in r]
    assert events == list(range(100))
    for position, record in enumerate(records):
        if "features" not in record:
            seen = [r["id"] for r in records[:position] if "features" in r]
            assert seen[-1] == min(record["id"] + 4, 99)
    assert sum("label" in r for r in records) == 100


def test_drift_changes_the_concept_at_the_chosen_event() -> None:
    plain = _values(SimulationPlan(source="sea", count=300, seed=1))
    drifting = _values(SimulationPlan(source="sea", count=300, seed=1, drift_at=(100,)))
    assert plain[:100] == drifting[:100] and plain[100:] != drifting[100:]
    gradual = _values(SimulationPlan(source="sea", count=3000, seed=1, drift_at=(2000,),
                                     drift_width=200))
    assert len(gradual) == 3000


@pytest.mark.parametrize("bad", [
    {"source": "nope"}, {"drift_at": (5, 5)}, {"source": "friedman", "drift_at": (10,)},
    {"source": "river:Phishing", "drift_at": (10,)}, {"keys": 0},
])
def test_bad_plans_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(SettingsError):
        SimulationPlan(**bad)  # type: ignore[arg-type]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _Writer:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, key: bytes, value: bytes) -> None:
        self.written.append(value)

    def close(self) -> None:
        self.closed = True


def test_publish_paces_events_against_a_schedule() -> None:
    clock, writer = _Clock(), _Writer()
    records = [Simulated(b"k", b"e%d" % i, True) for i in range(10)]
    records.insert(3, Simulated(b"k", b"label", False))
    stats = publish(records, writer, rate=100.0, clock=clock, sleep=clock.sleep)
    assert writer.closed and len(writer.written) == 11
    assert stats.events == 10 and stats.records == 11
    assert clock.now == pytest.approx(0.09)  # event i due at i / rate: no drift
    assert stats.rate == pytest.approx(10 / 0.09)


def test_cli_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert main(["simulate", "--count", "20", "--keys", "3", "--seed", "9",
                 "--output", str(out)]) == 0
    expected = _values(SimulationPlan(count=20, keys=3, seed=9))
    assert out.read_bytes().splitlines() == expected
    assert list(itertools.islice(simulate(SimulationPlan(count=0)), 5))  # count 0: unbounded
