"""replay: the live service's code path over history; CSV, event-time order, delayed labels,
warm-start checkpoints (unit level; the broker-level checks are in tests/integration)."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from stream_learner.backtest import BacktestOptions, run_backtest, write_warm_start
from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.events import Origin
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer
from stream_learner.replay import DriftPoints, LabelDelay, Progress, ReplaySource, delay_labels
from stream_learner.service import Service
from stream_learner.settings import CheckpointSettings, LocalSettings, SchemaSettings, Settings
from stream_learner.simulate import SimulationPlan, simulate
from stream_learner.sources import Record
from stream_learner.stores import LocalStore
from stream_learner.testing import MemorySink, MemorySource
from tests.support.workers import MODEL

SETTINGS = Settings(model=MODEL)
SPEC = ModelSpec.from_settings(MODEL)
KEY = b"k" * 32


def _events(n: int = 400, **plan: object) -> list[bytes]:
    return [r.value for r in simulate(SimulationPlan(count=n, keys=4, seed=5, **plan))]  # type: ignore[arg-type]


def _predictions(sink: MemorySink) -> list[dict[str, object]]:
    return [{k: v for k, v in p.items() if k != "latency_ms"} for p in sink.decoded("predictions")]


def _live(values: list[bytes]) -> list[dict[str, object]]:
    sink = MemorySink()
    Service(SETTINGS, SPEC, MemorySource({("h", 0): values}), sink).run()
    return _predictions(sink)


def _replayed(records: list[Record], settings: Settings = SETTINGS) -> list[dict[str, object]]:
    sink = MemorySink()
    Service(settings, SPEC, ReplaySource([("h", 0)], records), sink).run()
    return _predictions(sink)


def _records(values: list[bytes]) -> list[Record]:
    return [Record(v, None, 0, Origin("h", 0, i)) for i, v in enumerate(values)]


def test_replay_source_gives_the_live_predictions() -> None:
    values = _events()
    assert _replayed(_records(values)) == _live(values)


def test_fixed_label_delay_equals_a_stream_with_label_records() -> None:
    inline = _events()
    delayed = _events(label_delay=7)
    replayed = _replayed(list(delay_labels(_records(inline), SchemaSettings(), LabelDelay(events=7))))
    assert [p["prediction"] for p in replayed] == [p["prediction"] for p in _live(delayed)]


def test_label_time_field_reemits_labels_in_event_time_order() -> None:
    raw = [
        {"id": 1, "ts": 1.0, "features": {"x": 1}, "label": True, "label_ts": 2.5},
        {"id": 2, "ts": 2.0, "features": {"x": 2}, "label": False, "label_ts": 2.1},
        {"id": 3, "ts": 3.0, "features": {"x": 3}},
    ]
    out = list(delay_labels(_records([orjson.dumps(r) for r in raw]), SchemaSettings(),
                            LabelDelay(field="label_ts")))
    got = [orjson.loads(r.value) for r in out]
    assert [(g["id"], "label" in g) for g in got] == [(1, False), (2, False), (2, True), (1, True), (3, False)]
    assert [r.origin.offset for r in out] == [0, 1, 2, 3, 4]
    assert "label_ts" not in got[0] and got[3]["ts"] == 2.5


def test_csv_history_with_a_schema_mapping(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text("sensor_id,when,temp,vib,target\np-1,3,20.5,0.1,1\np-2,1,19.0,0.3,0\n"
                       "p-1,2,21.0,0.2,1\n")
    out = tmp_path / "predictions.jsonl"
    settings = Settings(
        model=MODEL, schema=SchemaSettings(id="when", key="sensor_id", ts="when", label="target"),
        local=LocalSettings(output=str(out), dead_letters=str(tmp_path / "dl.jsonl")),
    )
    result = run_backtest(settings, SPEC, {}, BacktestOptions(inputs=(str(history),),
                                                              sort_by_ts=True))
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(r["key"], r["ts"]) for r in rows] == [("p-2", 1.0), ("p-1", 2.0), ("p-1", 3.0)]
    assert result.summary.predictions == 3 and result.summary.labels == 3
    assert "drift points: none" in result.render()


def test_file_warm_start_restores_the_replayed_state(tmp_path: Path) -> None:
    values = _events(300)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(values[:200]) + b"\n")
    store = LocalStore(tmp_path / "ckpt")
    codec = EnvelopeCodec(KEY, SPEC.config_hash)
    settings = Settings(model=MODEL, local=LocalSettings(quiet=True,
                                                          dead_letters=str(tmp_path / "d")))
    result = run_backtest(settings, SPEC, {}, BacktestOptions(inputs=(str(history),),
                                                              resume_offset=200),
                          store, codec)
    assert result.checkpoints == {"events:0": 1}
    # The live worker: the whole topic, restored from the checkpoint with no committed offset.
    checkpointer = Checkpointer(store, codec, CheckpointSettings(), Metrics(), lambda: 0.0,
                                lambda: 0.0)
    sink = MemorySink()
    Service(SETTINGS, SPEC, MemorySource({("events", 0): values}), sink,
            checkpointer=checkpointer).run()
    resumed = [{k: v for k, v in p.items() if k != "source"} for p in _predictions(sink)]
    whole = [{k: v for k, v in p.items() if k != "source"} for p in _live(values)]
    assert resumed == whole[200:]


def test_warm_start_keeps_the_store_epoch(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for _ in range(4):
        store.claim("events:0")
    sink = MemorySink()
    service = Service(SETTINGS, SPEC, ReplaySource([("events", 0)], _records(_events(10))), sink)
    service.run()
    codec = EnvelopeCodec(KEY, SPEC.config_hash)
    write_warm_start(store, codec, {("events", 0): (service.shards[("events", 0)], 10)}, 0.0)
    latest = store.latest("events:0")
    assert latest is not None and codec.open(latest[1]).epoch == 4


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_only() -> None:
    quiet = io.StringIO()
    Progress(10, quiet).update(5)
    assert quiet.getvalue() == ""
    tty = _Tty()
    progress = Progress(10, tty)
    progress.update(5)
    progress.close()
    assert "replay 5/10 (50%)" in tty.getvalue() and tty.getvalue().endswith("\n")


def _alert(severity: str, start: int, end: int) -> bytes:
    return orjson.dumps({
        "schema_version": 1, "severity": severity, "signal": "error", "series": "error",
        "detector": "ADWIN", "key": None, "shard": "events:0",
        "offsets": {"topic": "events", "partition": 0, "from": start, "to": end},
        "event_time": {"from": 1.0, "to": 2.0}, "message": "m",
    })


def test_drift_points_are_the_confirmed_drifts_with_where_they_were_seen() -> None:
    sink = MemorySink()
    points = DriftPoints(sink)
    for severity, start, end in (("warning", 10, 20), ("drift", 11, 30), ("resolved", 40, 50),
                                 ("drift", 100, 130)):
        points.send("alerts", None, _alert(severity, start, end))
    assert len(sink.decoded("alerts")) == 4  # every alert record still reaches the output
    text = points.render()
    assert text.startswith("drift points (2): ")
    assert "?" not in text
    assert "events:0 error (ADWIN) offsets 11..30" in text
    assert "events:0 error (ADWIN) offsets 100..130" in text


def test_progress_shows_the_total_and_an_eta_and_log_lines_do_not_break_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging
    import sys

    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)  # the terminal the CLI logs to
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress = Progress(1000)
        progress.update(100)
        logging.getLogger("stream_learner.test").warning("a log line")
        progress.update(100)
        progress.close()
        assert handler in root.handlers  # given back after the progress line
    finally:
        root.removeHandler(handler)
    text = tty.getvalue()
    assert "replay 200/1000 (20%)" in text and "ETA" in text
    # the log line is on a line of its own, never glued to a progress line
    assert "a log line" in text.replace("\r", "\n").split("\n")


def test_replay_of_files_knows_its_total(tmp_path: Path) -> None:
    from stream_learner.replay import count_records

    path = tmp_path / "h.jsonl"
    path.write_bytes(b'{"id": 1}\n\n{"id": 2}\n')
    csv_path = tmp_path / "h.csv"
    csv_path.write_text("id,x\n1,2\n3,4\n5,6\n")
    assert count_records([str(path), str(csv_path)]) == 5
    assert count_records(["-"]) is None


def test_progress_of_a_replay_cut_by_max_events_counts_to_max_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from stream_learner.settings import ServiceSettings

    tty = _Tty()
    tty.buffer = io.BytesIO()  # type: ignore[misc]  # what the sinks hand bytes to
    monkeypatch.setattr(sys, "stderr", tty)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(_events(300)) + b"\n")
    settings = Settings(model=MODEL, service=ServiceSettings(max_events=120),
                        local=LocalSettings(quiet=True, dead_letters=str(tmp_path / "d"),
                                            learn_dead_letters=str(tmp_path / "l")))
    result = run_backtest(settings, SPEC, {}, BacktestOptions(inputs=(str(history),)))
    assert result.summary.records == 120
    assert "replay 120/120 (100%)" in tty.getvalue()  # it said 120/300, with an ETA for 300
