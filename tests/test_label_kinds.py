"""One classification label of another kind (a string among numbers) through the real CLI
and real files: it is dead-lettered, and the model it would have broken keeps serving."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import orjson

from tests.support.service import service_command, service_env

CONFIG = """
[service]
transport = "local"

[local]
output = "p.jsonl"
dead_letters = "dl.jsonl"
learn_dead_letters = "ldl.jsonl"

[checkpoint]
store = "local"
directory = "ck"
every_events = 100

[model]
task = "classification"

[[model.pipeline]]
step = "tree.HoeffdingTreeClassifier"
params = {grace_period = 50}
"""


def events(n: int, bad_at: int, bad_label: object) -> list[bytes]:
    rng = random.Random(5)
    out = []
    for i in range(n):
        a = rng.random()
        label = bad_label if i == bad_at else int(a > 0.5)
        out.append(orjson.dumps({"id": i, "key": "k", "features": {"a": a}, "label": label}))
    return out


def run(tmp_path: Path, lines: list[bytes]) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "c.toml").write_text(CONFIG)
    (tmp_path / "in.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return subprocess.run(
        service_command("run", "-c", "c.toml", "--input", "in.jsonl"),
        env=service_env(checkpoint_key="0123456789abcdef0123456789abcdef"),
        capture_output=True, timeout=120, check=False, cwd=tmp_path,
    )


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_a_string_label_among_numbers_is_dead_lettered_and_the_model_keeps_serving(
    tmp_path: Path,
) -> None:
    # the tree learned "cat" next to 0 and 1, then raised on every event (River sorts its
    # classes): 1,000 model failures in a row stopped the worker, and each restart again
    proc = run(tmp_path, events(3000, 5, "cat"))
    assert proc.returncode == 0, proc.stderr
    assert lines(tmp_path / "dl.jsonl") == []
    [dead] = lines(tmp_path / "ldl.jsonl")
    headers = dead["headers"]
    assert isinstance(headers, dict)
    assert headers["__stream_learner.errors.reason"] == "invalid_label"
    assert headers["__stream_learner.errors.offset"] == "5"
    message = headers["__stream_learner.errors.exception.message"]
    assert "'cat'" in message and "numbers" in message, message
    predictions = lines(tmp_path / "p.jsonl")
    assert [p["id"] for p in predictions] == list(range(3000))
    # the model never saw "cat": its classes are those of the other labels
    assert all(set(p["proba"]) <= {"0", "1"} for p in predictions)  # type: ignore[arg-type]


def test_a_number_label_record_among_strings_is_dead_lettered_too(tmp_path: Path) -> None:
    # the same through a label record that comes after its event (a late label)
    rows = [orjson.loads(line) for line in events(400, -1, None)]
    for row in rows:
        row["label"] = "high" if row["label"] else "low"
    del rows[7]["label"]
    late = orjson.dumps({"id": 7, "key": "k", "label": 3})
    proc = run(tmp_path, [orjson.dumps(row) for row in rows] + [late])
    assert proc.returncode == 0, proc.stderr
    [dead] = lines(tmp_path / "ldl.jsonl")
    headers = dead["headers"]
    assert isinstance(headers, dict)
    assert headers["__stream_learner.errors.reason"] == "invalid_label"
    assert headers["__stream_learner.errors.offset"] == "400"
    assert "(strings), got 3" in headers["__stream_learner.errors.exception.message"]
    predictions = lines(tmp_path / "p.jsonl")
    assert len(predictions) == 400
    assert all(set(p["proba"]) <= {"high", "low"} for p in predictions)  # type: ignore[arg-type]
