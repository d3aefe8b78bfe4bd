"""A record whose content breaks a stage of the loop is a dead letter, never a stopped worker.

From the outside: the CLI on the local transport, real files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import service_command, service_env

STEPS = {
    "classification": "linear_model.LogisticRegression",
    "regression": "linear_model.LinearRegression",
    "anomaly": "anomaly.HalfSpaceTrees",
}


def cli(tmp_path: Path, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI on the local transport with its outputs in ``tmp_path``."""
    return subprocess.run(
        service_command(*args),
        env=service_env(
            local__dead_letters=str(tmp_path / "dlq.jsonl"),
            local__learn_dead_letters=str(tmp_path / "learn-dlq.jsonl"),
            metrics__enabled="false",
            **overrides,
        ),
        capture_output=True, text=True, timeout=120, check=False,
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def reason(letter: dict[str, Any]) -> str:
    return str(letter["headers"]["__stream_learner.errors.reason"])


def test_a_label_nested_1000_levels_deep_is_a_dead_letter_not_a_crash(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([
        b'{"id":1,"key":"k","features":{"x":1.0},"label":1.5}',
        b'{"id":2,"key":"k","label":' + nested(1000) + b"}",
        b'{"id":3,"key":"k","features":{"x":2.0},"label":2.5}',
    ]) + b"\n")
    out = tmp_path / "out.jsonl"
    proc = cli(tmp_path, "run", "--input", str(source), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p["id"] for p in lines(out)] == [1, 3]
    assert lines(tmp_path / "dlq.jsonl") == []
    letters = lines(tmp_path / "learn-dlq.jsonl")
    assert [reason(d) for d in letters] == ["invalid_label"]
    assert letters[0]["value_base64"] and letters[0]["value"].startswith('{"id":2,')
    assert letters[0]["headers"]["__stream_learner.errors.offset"] == "1"


def test_deep_labels_features_and_ids_on_every_task(tmp_path: Path) -> None:
    """Inline, label-record, regression and anomaly labels share the path that broke."""
    deep = nested(1000)
    for task, good in (("classification", b"1"), ("regression", b"1.5"), ("anomaly", b"0")):
        source = tmp_path / f"{task}.jsonl"
        source.write_bytes(b"\n".join([
            b'{"id":1,"key":"k","features":{"x":1.0},"label":' + good + b"}",
            b'{"id":2,"key":"k","features":{"x":1.0},"label":' + deep + b"}",
            b'{"id":3,"key":"k","label":' + deep + b"}",
            b'{"id":' + deep + b',"key":"k","features":{"x":1.0}}',
            b'{"id":5,"key":' + deep + b',"features":{"x":1.0}}',
            b'{"id":6,"key":"k","ts":' + deep + b',"features":{"x":1.0}}',
            b'{"id":7,"key":"k","features":' + deep + b"}",
            b'{"id":8,"key":"k","features":{"x":' + deep + b"}}",
            b'{"id":9,"key":"k","features":{"x":3.0},"label":' + good + b"}",
        ]) + b"\n")
        out = tmp_path / f"{task}-out.jsonl"
        config = tmp_path / f"{task}.toml"
        threshold = "anomaly_threshold = 0.9\n" if task == "anomaly" else ""
        config.write_text(
            f'[model]\ntask = "{task}"\n{threshold}\n[[model.pipeline]]\nstep = "{STEPS[task]}"\n'
        )
        proc = cli(tmp_path, "run", "-c", str(config), "--input", str(source), "--output", str(out))
        assert proc.returncode == 0, (task, proc.stderr[-3000:])
        assert [p["id"] for p in lines(out)] == [1, 2, 9], task
        learn = lines(tmp_path / "learn-dlq.jsonl")
        inputs = lines(tmp_path / "dlq.jsonl")
        assert [reason(d) for d in learn] == ["invalid_label", "invalid_label"], task
        assert [reason(d) for d in inputs] == [
            "invalid_id", "invalid_key", "invalid_ts", "features_not_object", "feature_not_scalar"
        ], task
        for path in (tmp_path / "learn-dlq.jsonl", tmp_path / "dlq.jsonl"):
            path.unlink()
