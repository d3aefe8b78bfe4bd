"""Finite numbers too large for a model's arithmetic, through the real CLI and real files:
one such feature or label made the model's sums infinite for good, and every later
prediction ``null``, with no dead letter. They are now refused on their own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support.service import service_command, service_env


def run(tmp_path: Path, rows: list[dict[str, object]], *args: str) -> list[dict[str, object]]:
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    proc = subprocess.run(
        service_command("run", "--input", "in.jsonl", "--output", "p.jsonl",
                        "--summary-json", "s.json", *args),
        env=service_env(local__dead_letters="dl.jsonl", local__learn_dead_letters="ldl.jsonl"),
        capture_output=True, timeout=120, check=False, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return [orjson.loads(line) for line in (tmp_path / "p.jsonl").read_bytes().splitlines()]


def dead(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_bytes().splitlines():
        headers = orjson.loads(line)["headers"]
        out.append((headers["__stream_learner.errors.offset"],
                    headers["__stream_learner.errors.reason"]))
    return out


@pytest.mark.parametrize("huge", [1e160, -1.7976931348623157e308])
def test_a_huge_feature_is_dead_lettered_and_the_model_keeps_predicting(
    tmp_path: Path, huge: float,
) -> None:
    rows: list[dict[str, object]] = [
        {"id": i, "features": {"a": 1.0 + i % 3}, "label": 1.0 + i % 3} for i in range(10)]
    rows[3]["features"] = {"a": huge}
    predictions = run(tmp_path, rows)
    assert dead(tmp_path / "dl.jsonl") == [("3", "non_finite")]
    assert [p["id"] for p in predictions] == [i for i in range(10) if i != 3]
    assert all(isinstance(p["prediction"], float) for p in predictions[1:])


def test_a_huge_regression_label_is_a_learn_dead_letter(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"id": i, "features": {"a": 1.0 + i % 3}, "label": 1.0 + i % 3} for i in range(10)]
    rows[3]["label"] = 1e300
    predictions = run(tmp_path, rows)
    assert dead(tmp_path / "ldl.jsonl") == [("3", "invalid_label")]
    assert len(predictions) == 10
    assert all(isinstance(p["prediction"], float) for p in predictions[1:])
