"""An early label that expires is dead-lettered in the field names its producer used.

Reproduced through the CLI on real files: with ``[schema]`` renaming the id and
label fields, the learn dead letter of a label whose event never came must be
readable by the same schema (it is re-encoded, as its original bytes are gone).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from tests.support.service import service_command, service_env

CONFIG = """
[service]
transport = "local"

[local]
output = "{out}"
dead_letters = "{dead}"
learn_dead_letters = "{learn_dead}"

[schema]
id = "rid"
label = "y"

[labels]
early_max_count = 1

[model]
task = "regression"
metric = "metrics.MAE"

[[model.pipeline]]
step = "linear_model.LinearRegression"
"""


def test_an_expired_early_label_keeps_the_schemas_field_names(tmp_path: Path) -> None:
    out, dead, learn_dead = (tmp_path / n for n in ("out.jsonl", "dead.jsonl", "learn.jsonl"))
    config = tmp_path / "renamed.toml"
    config.write_text(CONFIG.format(out=out, dead=dead, learn_dead=learn_dead))
    source = tmp_path / "in.jsonl"
    records = [
        {"rid": "never-1", "key": "pump-7", "ts": 10.0, "y": 1.5},  # its event never comes
        {"rid": "never-2", "key": "pump-7", "ts": 11.0, "y": 2.5},  # pushes the first out
        {"rid": "e-1", "key": "pump-7", "ts": 12.0, "features": {"x": 1.0}},
    ]
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))

    proc = subprocess.run(
        service_command("run", "-c", str(config), "--input", str(source)),
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )

    assert proc.returncode == 0, proc.stderr
    letters = [orjson.loads(line) for line in learn_dead.read_bytes().splitlines()]
    expired = [d for d in letters if d["headers"]["__stream_learner.errors.reason"] == "unknown_id"]
    # never-1 expired, never-2 still waited when the run ended (no checkpoint store)
    assert [orjson.loads(d["value"]) for d in expired] == [
        {"rid": "never-1", "key": "pump-7", "ts": 10.0, "y": 1.5},
        {"rid": "never-2", "key": "pump-7", "ts": 11.0, "y": 2.5},
    ]
    assert len(out.read_bytes().splitlines()) == 1  # the one event is still predicted
