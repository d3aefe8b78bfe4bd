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


# -- resuming a stream (simulate --resume) ---------------------------------------------------

SEA_THRESHOLD = {0: 8, 1: 9}  # River's SEA: the label is x0 + x1 > the variant's threshold


def _variant_of(record: dict[str, object]) -> set[int]:
    """The SEA variants whose concept the event's label fits."""
    x = record["features"]
    assert isinstance(x, dict)
    return {v for v, t in SEA_THRESHOLD.items() if (x["0"] + x["1"] > t) == record["label"]}


def test_a_resumed_stream_goes_on_counting_with_fresh_samples() -> None:
    first = [orjson.loads(v) for v in _values(SimulationPlan(count=100, keys=5, seed=3))]
    resumed_plan = SimulationPlan(count=50, keys=5, seed=3, first_id=100)
    resumed = [orjson.loads(v) for v in _values(resumed_plan)]
    assert [r["id"] for r in resumed] == list(range(100, 150))
    assert [r["ts"] for r in resumed] == [round(first[0]["ts"] + i * 0.01, 6)
                                          for i in range(100, 150)]
    assert _values(resumed_plan) == _values(resumed_plan)  # deterministic
    # not the first run's samples again (what a restart with the same seed repeated)
    assert not {orjson.dumps(r["features"]) for r in resumed} & {
        orjson.dumps(r["features"]) for r in first}


def test_a_resumed_stream_keeps_the_drift_points_where_they_were() -> None:
    def variants(first_id: int) -> list[set[int]]:
        plan = SimulationPlan(source="sea", count=400, seed=1, drift_at=(1000,),
                              first_id=first_id)
        return [_variant_of(orjson.loads(v)) for v in _values(plan)]

    before = variants(700)  # events 700..1099: variant 0, then 1 from event 1000
    assert all(0 in v for v in before[:300]) and all(1 in v for v in before[300:])
    assert any(v == {0} for v in before[:300]) and any(v == {1} for v in before[300:])
    after = variants(1500)  # past the drift: variant 1 from its first event
    assert all(1 in v for v in after) and any(v == {1} for v in after)


def test_a_resumed_stream_owes_labels_of_its_own_events_only() -> None:
    records = [orjson.loads(v) for v in _values(SimulationPlan(count=30, label_delay=4,
                                                               first_id=70))]
    labels = [r["id"] for r in records if "features" not in r]
    assert labels == list(range(70, 100))


def test_resuming_a_bundled_dataset_is_refused() -> None:
    with pytest.raises(SettingsError, match="cannot be resumed"):
        SimulationPlan(source="river:Phishing", first_id=5)
    with pytest.raises(SettingsError, match="first event id"):
        SimulationPlan(first_id=-1)


def _ids(path: Path) -> list[int]:
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()
            if b'"features"' in line]


def test_cli_resume_appends_after_the_last_event_of_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.jsonl"
    args = ["simulate", "--count", "100", "--keys", "4", "--label-delay", "3",
            "--output", str(out)]
    assert main(args) == 0
    assert main([*args[:2], "60", *args[3:], "--resume"]) == 0
    assert "resuming after event id 99 in " in capsys.readouterr().err
    assert _ids(out) == list(range(160))
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(r["id"] for r in lines if "features" not in r) == list(range(160))
    ts = [r["ts"] for r in lines if "features" in r]
    assert ts == sorted(set(ts))


def test_cli_resume_cuts_a_half_written_line_and_starts_a_new_file_at_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = tmp_path / "new.jsonl"
    assert main(["simulate", "--count", "5", "--output", str(fresh), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().err
    assert _ids(fresh) == list(range(5))
    with fresh.open("ab") as handle:  # a publisher killed in the middle of a line
        handle.write(b'{"id": 5, "key": "sensor-1", "ts": 17672')
    assert main(["simulate", "--count", "5", "--output", str(fresh), "--resume"]) == 0
    assert _ids(fresh) == list(range(10))


def test_cli_resume_needs_somewhere_to_read_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["simulate", "--count", "5", "--resume"]) == 2
    assert "--resume needs" in caplog.text
    out = tmp_path / "unused.jsonl"
    assert main(["simulate", "--count", "5", "--source", "river:Phishing", "--resume",
                 "--output", str(out)]) == 2
    assert not out.exists()
