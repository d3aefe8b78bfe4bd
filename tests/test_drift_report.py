"""The drift suite's script (scripts/drift_report.py) on one small case of each kind."""

from __future__ import annotations

import re
from types import ModuleType

import orjson
import pytest

from tests.support.service import load_script


def suite() -> ModuleType:
    return load_script("drift_report")


def test_late_labels_come_as_label_records_100_events_after_their_event() -> None:
    s = suite()
    data = [({"x": float(i)}, i % 2) for i in range(150)]
    records, event_at = s.records(data, "late")
    decoded = [orjson.loads(r) for r in records]
    labels = [(k, r) for k, r in enumerate(decoded) if "features" not in r]
    assert len(labels) == 50 and all("label" not in r for r in decoded if "features" in r)
    first_at, first = labels[0]
    assert first == {"id": 0, "key": "s", "label": 0} and event_at[first_at] == 100


def test_a_drift_run_through_the_service_is_detected_and_reset() -> None:
    s = suite()
    result = s.run_case(s.Case("stagger-abrupt", "linear", 1, "inline", "reset"))
    drifts = result["drifts"]
    assert len(drifts) == 2
    assert all(d["delay"] is not None and 0 <= d["delay"] < 1000 for d in drifts), drifts
    assert result["replaced"] >= 2
    stable = s.run_case(s.Case("sea-stable", "linear", 1, "inline", "alert"))
    assert stable["drifts"] == [] and stable["stable_events"] == s.N_STABLE


def test_a_detection_only_run_has_alert_cases_and_no_action_tables() -> None:
    s = suite()
    todo = s.cases((1,), river=False, actions=("alert",))
    assert todo and {c.action for c in todo} == {"alert"}
    assert len(s.cases((1,), river=False)) > len(todo)  # every action by default
    stable = s.run_case(s.Case("sea-stable", "linear", 1, "inline", "alert"))
    text = s.report([stable], (1,), (), 1.0, 1)
    assert "### Detection and false alarms: tuning seeds 1" in text
    assert "| inline | stable streams | | | | 0 / 10000 | 0.00 |" in text
    assert "| inline | drift streams | 0 / 0 | - |" in text  # no drift stream in this run
    assert "### Drift actions" not in text


def test_a_run_reports_each_case_as_it_finishes(capsys: pytest.CaptureFixture[str]) -> None:
    s = suite()
    assert s.main(["--quick", "--families", "sea-stable", "--actions", "alert", "--workers", "1",
                   "--no-write"]) == 0
    out = capsys.readouterr()
    progress = [line.split(":")[0] for line in out.err.splitlines() if line.startswith("[")]
    # --quick: the tuning seeds 1 and 2
    assert [p.split()[0] for p in progress] == [f"[{i}/8]" for i in range(1, 9)]
    assert sorted(p.split(" ", 1)[1] for p in progress) == sorted(
        f"sea-stable {model} seed {seed} labels {labels} alert"
        for seed in (1, 2) for model in ("linear", "tree") for labels in ("inline", "late")
    )
    assert re.search(r"\| inline \| stable streams \| \| \| \| \d+ / 40000 \|", out.out)


def test_a_run_with_tried_settings_does_not_call_them_the_shipped_defaults() -> None:
    s = suite()
    stable = s.run_case(s.Case("sea-stable", "linear", 1, "inline", "alert"))
    assert "Shipped defaults: `error_detector = \"adwin\"`" in s.report([stable], (1,), (), 1.0, 1)
    s.TRIED.update({"error_detector": "page_hinkley"})
    text = s.report([stable], (1,), (), 1.0, 1)
    assert "Settings tried (changed: error_detector): `error_detector = \"page_hinkley\"`" in text
    assert "`error_params = River's defaults`" in text and "Shipped defaults" not in text


def test_a_missed_drift_shows_its_rise_in_standard_errors_against_the_stable_streams_noise() -> None:
    s = suite()
    stable = s.run_case(s.Case("sea-stable", "linear", 1, "inline", "alert"))
    # pairs of consecutive 1,000-event windows after the first 1,000 events of 10,000
    assert len(stable["noise"]) == 8
    level, pairs = s.noise_level([stable])
    assert pairs == 8 and min(stable["noise"]) <= level <= max(stable["noise"])
    missed = {"case": s.Case("sea-abrupt", "linear", 1, "inline", "alert"), "false": 0,
              "stable_events": 0, "blind_warnings": 0, "drifts": [
                  {"before": 0.1, "after": 0.2, "delay": None, "z": level + 1.0},
                  {"before": 0.1, "after": 0.12, "delay": None, "z": level - 0.5},
                  {"before": 0.1, "after": 0.3, "delay": 40, "z": 20.0}]}
    text = s.report([stable, missed], (1,), (), 1.0, 1)
    rows = [line for line in text.splitlines() if line.startswith("| sea-abrupt |")]
    assert rows == [
        f"| sea-abrupt | linear | 1 | inline | 3000 | 0.100 -> 0.200 (+100 %) | {level + 1:.1f} |",
        f"| sea-abrupt | linear | 1 | inline | 6000 | 0.100 -> 0.120 (+20 %) | {level - 0.5:.1f} |",
    ]
    assert f"by z = {level:.1f} or more in 1 pair of 20 (8 pairs" in text
    assert "1 of the 2 misses rise less than that" in text


def test_the_rise_in_standard_errors_is_welchs_statistic() -> None:
    s = suite()
    assert s.rise_z([0.0, 1.0] * 50, [0.0, 1.0, 1.0, 1.0] * 25) == pytest.approx(0.25 / (0.066144), rel=1e-4)
    assert s.rise_z([1.0] * 5, [1.0] * 5) == 0.0
    assert s.rise_z([1.0] * 5, [2.0] * 5) == float("inf")
    assert s.rise_z([0.0, 1.0] * 50, [0.0, 1.0] * 50) == 0.0
