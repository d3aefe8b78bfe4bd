"""Checkpoints through the command line: resume, refusal, and ``checkpoints list|show|rollback``.

Every test runs ``python -m stream_learner`` in a subprocess on a JSON Lines
input (local transport), with the local store, or the Redis store under a
unique key prefix.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.models import ModelSpec
from stream_learner.stores import LocalStore, RedisStore
from tests.support.service import service_command, service_env
from tests.support.workers import CHECKPOINT_KEY, MODEL, MODEL_TOML, labelled_events

OTHER_MODEL_TOML = MODEL_TOML.replace(
    'step = "linear_model.LogisticRegression"',
    'step = "linear_model.LogisticRegression"\nparams = { l2 = 0.01 }',
)


def _events(path: Path, n: int) -> None:
    path.write_bytes(b"".join(value + b"\n" for _p, _k, value in labelled_events(n, 1)))


def _config(tmp_path: Path, model_toml: str = MODEL_TOML, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text('[service]\ntransport = "local"\nbatch_size = 50\n' + model_toml)
    return path


def _cli(
    args: list[str], store: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = service_env(checkpoint__every_events="100", **store)
    env["STREAM_LEARNER_CHECKPOINT_KEY"] = CHECKPOINT_KEY
    proc = subprocess.run(
        service_command(*args), env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"stream-learner {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def _run(
    tmp_path: Path, input_path: Path, output: Path, store: dict[str, str],
    model_toml: str = MODEL_TOML, check: bool = True,
) -> subprocess.CompletedProcess[str]:
    config = _config(tmp_path, model_toml)
    outputs = {  # every local output in the test's folder, none in the working directory
        f"local__{name}": str(tmp_path / f"{name}.jsonl")
        for name in ("dead_letters", "learn_dead_letters", "alerts", "metrics")
    }
    return _cli(
        ["run", "-c", str(config), "--input", str(input_path), "--output", str(output)],
        {**store, **outputs},
        check,
    )


def _predictions(path: Path) -> list[dict[str, Any]]:
    """What must not depend on how the run was split: offset, prediction, probabilities."""
    out = []
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        source = record["source"]
        out.append({"source": (source["partition"], source["offset"]),
                    "prediction": record["prediction"], "proba": record["proba"]})
    return out


def _local(tmp_path: Path, name: str = "ckpt") -> dict[str, str]:
    return {"checkpoint__store": "local", "checkpoint__directory": str(tmp_path / name)}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _codec() -> EnvelopeCodec:
    return EnvelopeCodec(CHECKPOINT_KEY.encode(), ModelSpec.from_settings(MODEL).config_hash)


# -- resume -------------------------------------------------------------------------------


def test_second_run_on_a_longer_file_continues_where_the_first_stopped(tmp_path: Path):
    whole = tmp_path / "whole"
    whole.mkdir()
    _events(whole / "events.jsonl", 1000)
    _run(whole, whole / "events.jsonl", whole / "out.jsonl", _local(whole))

    split = tmp_path / "split"
    split.mkdir()
    _events(split / "events.jsonl", 600)
    _run(split, split / "events.jsonl", split / "first.jsonl", _local(split))
    _events(split / "events.jsonl", 1000)  # the same input, grown
    second = _run(split, split / "events.jsonl", split / "second.jsonl", _local(split))

    assert "restore from checkpoint" in second.stderr
    first_part, second_part = _predictions(split / "first.jsonl"), _predictions(split / "second.jsonl")
    assert [p["source"] for p in second_part] == [(0, o) for o in range(600, 1000)]
    assert first_part + second_part == _predictions(whole / "out.jsonl")

    shard = f"{split / 'events.jsonl'}:0"
    expected_state = _codec().open(LocalStore(whole / "ckpt").latest(f"{whole / 'events.jsonl'}:0")[1])
    got = _codec().open(LocalStore(split / "ckpt").latest(shard)[1])  # type: ignore[index]
    assert got.offsets == {(str(split / "events.jsonl"), 0): 1000}
    assert got.state.n_learned == expected_state.state.n_learned == 1000


# -- refusal ------------------------------------------------------------------------------


def _first_run(tmp_path: Path) -> tuple[Path, dict[str, str], LocalStore, str]:
    events = tmp_path / "events.jsonl"
    _events(events, 300)
    store = _local(tmp_path)
    _run(tmp_path, events, tmp_path / "out.jsonl", store)
    return events, store, LocalStore(tmp_path / "ckpt"), f"{events}:0"


def test_a_tampered_checkpoint_is_refused_with_one_clear_line(tmp_path: Path):
    events, store, local, shard = _first_run(tmp_path)
    newest = local._dir(shard) / f"{local.ids(shard)[-1]:012d}.ckpt"
    blob = bytearray(newest.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    newest.write_bytes(bytes(blob))

    proc = _run(tmp_path, events, tmp_path / "again.jsonl", store, check=False)

    assert proc.returncode == 1
    lines = _error_lines(proc.stderr)
    refused = [line for line in lines if "signature does not verify" in line]
    assert len(refused) == 1, proc.stderr
    assert "ERROR" in refused[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "again.jsonl").exists() or not (tmp_path / "again.jsonl").read_bytes()


def test_a_checkpoint_of_another_model_configuration_is_refused(tmp_path: Path):
    events, store, _local_store, _shard = _first_run(tmp_path)
    proc = _run(tmp_path, events, tmp_path / "again.jsonl", store, OTHER_MODEL_TOML, check=False)
    assert proc.returncode == 1
    refused = [line for line in _error_lines(proc.stderr) if "another model configuration" in line]
    assert len(refused) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_checkpoint_of_another_river_version_is_refused(tmp_path: Path):
    events, store, local, shard = _first_run(tmp_path)
    newest = _codec().open(local.latest(shard)[1])  # type: ignore[index]
    versions = {**_codec().versions, "river": "0.0.1"}
    other = EnvelopeCodec(CHECKPOINT_KEY.encode(), _codec().config_hash, versions)
    local.save(shard, newest.epoch, other.seal(
        shard, newest.offsets, newest.epoch, newest.state, created_at=newest.created_at
    ))

    proc = _run(tmp_path, events, tmp_path / "again.jsonl", store, check=False)

    assert proc.returncode == 1
    refused = [line for line in _error_lines(proc.stderr) if "written with river '0.0.1'" in line]
    assert len(refused) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


# -- stream-learner checkpoints list | show | rollback ------------------------------------


def _admin(
    tmp_path: Path, store: dict[str, str], *args: str, check: bool = True,
    model_toml: str = MODEL_TOML,
) -> subprocess.CompletedProcess[str]:
    config = _config(tmp_path, model_toml, name="admin.toml")
    return _cli(["checkpoints", "-c", str(config), *args], store, check)


def _exercise_admin(tmp_path: Path, store: dict[str, str], open_store: Any) -> None:
    events = tmp_path / "events.jsonl"
    _events(events, 450)
    _run(tmp_path, events, tmp_path / "out.jsonl", store)
    shard = f"{events}:0"

    listed = _admin(tmp_path, store, "list").stdout.splitlines()
    # every 100 records, plus the final one at 450; the last 3 are kept
    assert [line.split("\t")[:2] for line in listed] == [[shard, "3"], [shard, "4"], [shard, "5"]]
    assert [line.split("\t")[3] for line in listed] == [
        f"{events}[0]@300", f"{events}[0]@400", f"{events}[0]@450"
    ]
    assert all(line.split("\t")[4] == "epoch=1" and line.endswith("B") for line in listed)
    assert _admin(tmp_path, store, "list", shard).stdout.splitlines() == listed

    header = orjson.loads(_admin(tmp_path, store, "show", shard).stdout)
    assert header["offsets"] == [[str(events), 0, 450]]
    assert header["config_hash"] == _codec().config_hash
    assert orjson.loads(_admin(tmp_path, store, "show", shard, "3").stdout)["offsets"] == [
        [str(events), 0, 300]
    ]
    missing = _admin(tmp_path, store, "show", shard, "1", check=False)
    assert missing.returncode == 1 and "has no checkpoint 1 (kept: [3, 4, 5])" in missing.stderr

    rolled = _admin(tmp_path, store, "rollback", shard, "4")
    assert f"shard {shard}: checkpoint 4 is now checkpoint 6" in rolled.stdout
    listed = _admin(tmp_path, store, "list").stdout.splitlines()
    assert [line.split("\t")[1] for line in listed] == ["4", "5", "6"]
    assert listed[-1].endswith("\trollback") and f"{events}[0]@400" in listed[-1]
    newest = orjson.loads(_admin(tmp_path, store, "show", shard).stdout)
    assert newest["resume_at_committed"] is True and newest["rollback_of"] == 4

    opened = open_store()
    try:
        rolled_back = _codec().open(opened.get(shard, 6))
        original = _codec().open(opened.get(shard, 4))
    finally:
        opened.close()
    assert rolled_back.state.n_learned == original.state.n_learned == 400

    refused = _admin(tmp_path, store, "rollback", shard, check=False)
    assert refused.returncode == 2
    assert "rollback: error: the following arguments are required: id" in refused.stderr


def test_checkpoints_list_show_rollback_with_the_local_store(tmp_path: Path):
    store = _local(tmp_path)
    _exercise_admin(tmp_path, store, lambda: LocalStore(tmp_path / "ckpt"))


@pytest.mark.redis
def test_checkpoints_list_show_rollback_with_the_redis_store(
    tmp_path: Path, redis_url: str, redis_prefixes: Callable[[str], str],
) -> None:
    prefix = redis_prefixes("cli")
    store = {"checkpoint__store": "redis", "checkpoint__redis_url": redis_url,
             "checkpoint__key_prefix": prefix}
    _exercise_admin(tmp_path, store, lambda: RedisStore(redis_url, prefix))


def test_checkpoints_list_shows_a_tampered_checkpoint_as_refused(tmp_path: Path):
    _events_path, store, local, shard = _first_run(tmp_path)
    newest_id = local.ids(shard)[-1]
    path = local._dir(shard) / f"{newest_id:012d}.ckpt"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x80
    path.write_bytes(bytes(blob))
    listed = _admin(tmp_path, store, "list").stdout.splitlines()
    assert listed[-1] == f"{shard}\t{newest_id}\tREFUSED: checkpoint signature does not verify " \
        "(wrong key or tampered data)"
    shown = _admin(tmp_path, store, "show", shard, check=False)
    assert shown.returncode == 1 and "signature does not verify" in shown.stderr


def test_checkpoints_list_and_show_say_a_worker_of_this_configuration_would_refuse_them(
    tmp_path: Path,
):
    # an operator changed the model, then asks what the store holds before starting workers
    _events_path, store, local, shard = _first_run(tmp_path)
    other = MODEL.model_copy(update={"pipeline": (
        MODEL.pipeline[0], {"step": "linear_model.LogisticRegression", "params": {"l2": 0.01}})})
    running = ModelSpec.from_settings(other).config_hash
    why = (f"checkpoint was written for another model configuration (hash "
           f"{_codec().config_hash[:12]}..., running {running[:12]}...)")

    listed = _admin(tmp_path, store, "list", model_toml=OTHER_MODEL_TOML).stdout.splitlines()
    assert len(listed) == len(local.ids(shard)) == 3
    assert all(line.endswith(f"B\tNOT RESTORABLE: {why}") for line in listed), listed
    shown = orjson.loads(_admin(tmp_path, store, "show", shard, model_toml=OTHER_MODEL_TOML).stdout)
    assert shown["restorable"] is False and shown["refused"] == why
    assert shown["config_hash"] == _codec().config_hash

    same = _admin(tmp_path, store, "list").stdout.splitlines()
    assert same == [line.split("\tNOT RESTORABLE")[0] for line in listed]
    assert orjson.loads(_admin(tmp_path, store, "show", shard).stdout)["restorable"] is True
    refused = _admin(tmp_path, store, "rollback", shard, str(local.ids(shard)[0]),
                     check=False, model_toml=OTHER_MODEL_TOML)
    assert refused.returncode == 1 and why in refused.stderr


def test_checkpoints_list_and_rollback_of_keyed_state(tmp_path: Path):
    # one model per sensor (12), 5 in memory: checkpoints are incremental, parks go to the store
    store = {**_local(tmp_path), "model__scope": "key", "model__max_resident": "5"}
    events = tmp_path / "events.jsonl"
    _events(events, 450)
    _run(tmp_path, events, tmp_path / "whole.jsonl", store)
    shard = f"{events}:0"
    listed = _admin(tmp_path, store, "list").stdout.splitlines()
    assert [line.split("\t")[1] for line in listed] == ["3", "4", "5"]
    assert all("\tkeys=12 changed=" in line for line in listed), listed
    header = orjson.loads(_admin(tmp_path, store, "show", shard, "4").stdout)
    assert header["keyed"]["keys"] == 12 and header["offsets"] == [[str(events), 0, 400]]

    rolled = _admin(tmp_path, store, "rollback", shard, "4")
    assert f"shard {shard}: checkpoint 4 is now checkpoint 6" in rolled.stdout
    listed = _admin(tmp_path, store, "list").stdout.splitlines()
    assert [line.split("\t")[1] for line in listed] == ["3", "4", "6"]  # 5 no longer matches
    # the next run resumes with every sensor's model as it was at 400, where the newest
    # checkpoint was (450: no committed offsets on the local transport), as a worker resumes
    # at its group's committed offsets: what came after 400 is not learned, and nothing is
    # output twice
    again = _run(tmp_path, events, tmp_path / "again.jsonl", store)
    assert "restore from checkpoint 6 (rollback)" in again.stderr
    assert f"seek {{('{events}', 0): 450}}" in again.stderr
    assert _predictions(tmp_path / "again.jsonl") == []
    # ... and the models are those of 400: on the file grown to 600 events, the predictions
    # of 450.. are those of a run that never saw 400..449
    _events(events, 600)
    _run(tmp_path, events, tmp_path / "grown.jsonl", store)
    lines = events.read_bytes().splitlines(keepends=True)
    skipped = tmp_path / "skipped.jsonl"
    skipped.write_bytes(b"".join(lines[:400] + lines[450:]))
    _run(tmp_path, skipped, tmp_path / "reference.jsonl", {"model__scope": "key"})
    grown = [(p["prediction"], p["proba"]) for p in _predictions(tmp_path / "grown.jsonl")]
    reference = _predictions(tmp_path / "reference.jsonl")[400:]
    assert len(grown) == 150
    assert grown == [(p["prediction"], p["proba"]) for p in reference]
