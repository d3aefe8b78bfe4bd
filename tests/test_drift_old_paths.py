"""Checkpoints pickled before the drift modules moved into ``stream_learner/drift/`` still load.

Until the move, the monitors lived in ``stream_learner.drift``, the watch in
``stream_learner.drift_watch`` and the alert records in ``stream_learner.alerts``;
a checkpoint names its classes by those paths. The test pickles a learner with
live drift state (monitors, a reset's replay window, and alerts in the list where
those builds kept them until the service took them) under the old paths, seals it as a checkpoint of the current format, and opens it in a
fresh interpreter that imports only :mod:`stream_learner.checkpoint`: the restored
learner must go on exactly as the original does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.drift import DriftWatch
from stream_learner.events import Event, Origin
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.settings import DriftSettings, ModelSettings

KEY = b"signing-key-0123456789abcdef0123"

#: new module path -> the path a checkpoint written before the move names
OLD_PATHS = {
    b"stream_learner.drift.watch": b"stream_learner.drift_watch",
    b"stream_learner.drift.monitors": b"stream_learner.drift",
    b"stream_learner.drift.alerts": b"stream_learner.alerts",
}

CONTINUE = """
import json, sys
from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.events import Event, Origin
key, config, path, events = sys.argv[1].encode(), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
learner = EnvelopeCodec(key, config).open(open(path, "rb").read()).state
outcomes = [learner.process(Event(*e[:6], Origin("events", 0, e[6]))) for e in events]
out = [o[0].prediction for o in outcomes]
alerts = [a.to_dict("events:0") for o in outcomes for a in o[3]]
print(json.dumps({"predictions": out, "alerts": alerts}))
"""


def _events(start: int, n: int, rng: random.Random) -> list[list[Any]]:
    """Labelled events whose target jumps at offset 600 (the error rises: drift, reset)."""
    rows = []
    for i in range(start, start + n):
        x = rng.uniform(0, 10)
        y = 2 * x + (40.0 if i >= 600 else 0.0) + rng.gauss(0, 0.5)
        rows.append([f"e{i}", "k", float(i), {"x": x}, y, True, i])
    return rows


def _event(row: list[Any]) -> Event:
    return Event(*row[:6], Origin("events", 0, row[6]))


def _old_payload(state: Any) -> bytes:
    """``state`` pickled as a build before the move would: its classes under the old paths.

    Protocol 2 names a class with the text opcode ``c<module>\\n<name>\\n``, so the
    module paths can be rewritten in place.
    """
    payload = pickle.dumps(state, protocol=2)
    for new, old in OLD_PATHS.items():
        assert b"c" + new + b"\n" in payload, new
        payload = payload.replace(b"c" + new + b"\n", b"c" + old + b"\n")
    assert b"stream_learner.drift." not in payload
    return payload


def _reseal(blob: bytes, payload: bytes) -> bytes:
    """The checkpoint ``blob`` with its pickled state replaced by ``payload``, signed again."""
    magic, length = b"SLCKPT1\n", struct.Struct(">I")
    assert blob.startswith(magic)
    (size,) = length.unpack_from(blob, len(magic))
    start = len(magic) + length.size
    header = json.loads(blob[start : start + size])
    header["payload_size"] = len(payload)
    header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    head = json.dumps(header).encode()
    body = magic + length.pack(len(head)) + head + payload
    return body + hmac.new(KEY, body, hashlib.sha256).digest()


def test_a_checkpoint_pickled_with_the_old_drift_module_paths_loads_and_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = ModelSpec.from_settings(ModelSettings())
    drift = DriftSettings(action="reset", warmup_labels=50, cooldown_events=0)
    learner = Learner(spec, drift=drift)
    rng = random.Random(7)
    raised = [a for row in _events(0, 800, rng) for a in learner.process(_event(row))[3]]
    assert any(a.action == "reset" for a in raised), [a.action for a in raised]
    codec = EnvelopeCodec(KEY, spec.config_hash)
    blob = codec.seal("events:0", {("events", 0): 800}, 1, learner, 0.0)
    # those builds kept the alerts in the watch until the service took them
    shape = DriftWatch.__getstate__
    monkeypatch.setattr(DriftWatch, "__getstate__", lambda w: {**shape(w), "outbox": raised})
    blob = _reseal(blob, _old_payload(learner))
    monkeypatch.undo()
    path = tmp_path / "old.ckpt"
    path.write_bytes(blob)

    later = _events(800, 400, rng)
    outcomes = [learner.process(_event(row)) for row in later]
    expected = {
        "predictions": [o[0].prediction for o in outcomes],
        "alerts": [a.to_dict("events:0") for o in outcomes for a in o[3]],
    }
    assert expected["alerts"]  # the drift goes on after the checkpoint
    run = subprocess.run(
        [sys.executable, "-c", CONTINUE, KEY.decode(), spec.config_hash, str(path),
         json.dumps(later)],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(run.stdout) == json.loads(json.dumps(expected))
