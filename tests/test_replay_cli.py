"""``replay`` with a warm start, through the real CLI on real files: what a user meets
when the checkpoint cannot be written, and the ``--summary-json`` file it leaves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support.service import one_line_error, service_command, service_env

KEY = "0123456789abcdef0123456789abcdef"
PREVIOUS = b'{"records": 1, "from": "the previous replay"}'


def cli(*args: str, cwd: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        service_command(*args), env=service_env(**overrides), capture_output=True, text=True,
        timeout=120, check=False, cwd=cwd,
    )


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 simulated events with inline labels (300 simulated, ten times over)."""
    folder = tmp_path_factory.mktemp("history")
    one = folder / "one.jsonl"
    proc = cli("simulate", "--count", "300", "--keys", "3", "--output", str(one), cwd=folder)
    assert proc.returncode == 0, proc.stderr
    big = folder / "big.jsonl"
    big.write_bytes(one.read_bytes() * 10)
    return big


# -- the signing key ----------------------------------------------------------------------


@pytest.mark.parametrize(("target", "kind"), [("ck", "folder"), ("redis", "Redis")])
def test_a_warm_start_without_a_key_names_the_store_asked_for_and_the_key(
    events: Path, tmp_path: Path, target: str, kind: str
) -> None:
    # it said "checkpoint.store = 'none' needs a signing key": the config's store, not
    # the one --checkpoint-to asked for
    proc = cli("replay", str(events), "--checkpoint-to", target, "--resume-offset", "0",
               "--quiet", "--summary-json", "sm.json", cwd=tmp_path)
    line = one_line_error(proc, 2)
    assert f"--checkpoint-to {target}" in line and kind in line, line
    assert "checkpoint.store" not in line, line
    assert "STREAM_LEARNER_CHECKPOINT_KEY" in line and "16 bytes" in line, line
    assert list(tmp_path.iterdir()) == []


def test_a_warm_start_names_the_key_variable_the_settings_choose(
    events: Path, tmp_path: Path
) -> None:
    proc = cli("replay", str(events), "--checkpoint-to", "ck", "--resume-offset", "0", "--quiet",
               cwd=tmp_path, checkpoint__key_env="WARM_KEY")
    line = one_line_error(proc, 2)
    assert "WARM_KEY" in line and "--checkpoint-to ck" in line, line


# -- --max-events -------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "overrides", "named"), [
    (("--max-events", "300"), {}, "--max-events 300"),
    ((), {"service__max_events": "300"}, "service.max_events = 300"),
])
def test_a_warm_start_that_max_events_would_cut_is_refused_before_the_replay(
    events: Path, tmp_path: Path, flags: tuple[str, ...], overrides: dict[str, str], named: str
) -> None:
    # it replayed the whole input, then failed: no summary, and an empty --summary-json
    summary = tmp_path / "sm.json"
    summary.write_bytes(PREVIOUS)
    proc = cli("replay", str(events), "--checkpoint-to", "ck9", "--resume-offset", "0", *flags,
               "--quiet", "--summary-json", str(summary), cwd=tmp_path, checkpoint_key=KEY,
               **overrides)
    line = one_line_error(proc, 2)
    assert named in line and "--checkpoint-to ck9" in line, line
    assert summary.read_bytes() == PREVIOUS  # a replay that never started keeps it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm.json"]


def test_max_events_0_lifts_the_settings_cap_for_a_warm_start(
    events: Path, tmp_path: Path
) -> None:
    proc = cli("replay", str(events), "--checkpoint-to", "ck", "--resume-offset", "0",
               "--max-events", "0", "--quiet", cwd=tmp_path, checkpoint_key=KEY,
               service__max_events="300")
    assert proc.returncode == 0, proc.stderr
    assert "3000 records" in proc.stderr and "warm start:" in proc.stderr, proc.stderr


# -- --summary-json: whole or not at all ---------------------------------------------------


def test_a_replay_that_fails_after_running_leaves_the_summary_file_whole(
    events: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    summary = tmp_path / "sm.json"
    summary.write_bytes(PREVIOUS)
    # the checkpoint folder cannot be made: the replay runs, then its warm start fails
    proc = cli("replay", str(events), "--checkpoint-to", str(blocker / "ck"),
               "--resume-offset", "0", "--quiet", "--summary-json", str(summary),
               cwd=tmp_path, checkpoint_key=KEY)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert summary.read_bytes() == PREVIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "sm.json"]


def test_a_replay_replaces_the_summary_file_whole(events: Path, tmp_path: Path) -> None:
    summary = tmp_path / "sm.json"
    summary.write_bytes(PREVIOUS * 100)  # longer than the new summary
    proc = cli("replay", str(events), "--quiet", "--summary-json", str(summary), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(summary.read_bytes())["records"] == 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm.json"]


def test_a_summary_path_that_is_a_folder_is_refused_before_the_replay(
    events: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    proc = cli("replay", str(events), "--quiet", "--summary-json", str(folder), cwd=tmp_path)
    line = one_line_error(proc, 2)
    assert f"--summary-json {folder}" in line, line
