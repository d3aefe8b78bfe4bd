"""Label records still waiting for their events when a run ends, through the real CLI and
real files: without a checkpoint store they are learn dead letters, with one they are kept
and the summary says so. Before, they were counted as applied and vanished."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import orjson

from tests.support.service import ROOT, service_command, service_env

DEMO = str(ROOT / "config" / "demo.toml")
LINES = [
    {"id": 1, "key": "k", "features": {"a": 1.0}, "label": True},
    {"id": "nope", "key": "k", "label": False},
    {"id": 2, "key": "k", "features": {"a": 2.0}},
]


def run(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in LINES))
    env = service_env(local__learn_dead_letters="ldl.jsonl", local__output="p.jsonl",
                      checkpoint_key="0123456789abcdef0123456789abcdef", **overrides)
    return subprocess.run(
        service_command("run", "-c", DEMO, "--input", "in.jsonl", "--summary-json", "s.json"),
        env=env, capture_output=True, timeout=120, check=False, cwd=tmp_path,
    )


def test_without_a_store_a_label_still_waiting_at_the_end_is_a_learn_dead_letter(
    tmp_path: Path,
) -> None:
    proc = run(tmp_path, checkpoint__store="none")
    assert proc.returncode == 0, proc.stderr
    [dead] = [orjson.loads(x) for x in (tmp_path / "ldl.jsonl").read_bytes().splitlines()]
    headers = dead["headers"]
    assert headers["__stream_learner.errors.reason"] == "unknown_id"
    assert headers["__stream_learner.errors.offset"] == "1"
    assert "before the run ended" in headers["__stream_learner.errors.exception.message"]
    assert orjson.loads(dead["value"]) == {"id": "nope", "key": "k", "ts": 0.0, "label": False}
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["labels_expired"] == 1 and summary["learn_dead_letters"] == 1
    assert summary["input_dead_letters"] + summary["learn_dead_letters"] == (
        summary["dead_letters"] + summary["inline_labels_rejected"] + summary["labels_expired"])
    assert b"1 label record still waits for its event as the run ends" in proc.stderr


def test_with_a_store_a_label_still_waiting_is_kept_and_the_summary_says_so(
    tmp_path: Path,
) -> None:
    proc = run(tmp_path, checkpoint__store="local", checkpoint__directory="ck")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "ldl.jsonl").read_bytes()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["labelling"]["waiting_labels"] == 1
    assert b"1 label record waits for its event (kept in the checkpoint)" in proc.stderr
