"""Runs on the local transport that resume from a checkpoint, or fail before their first
record, through the real CLI and real files: the outputs of the earlier run are kept.
Also two runs on one checkpoint folder, and an input whose last line is half written."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from tests.support.service import ROOT, service_command, service_env

DEMO = str(ROOT / "config" / "demo.toml")
KEY = "0123456789abcdef0123456789abcdef"


def cli(*args: str, cwd: Path, stdin: bytes | None = None,
        **overrides: str) -> subprocess.CompletedProcess[bytes]:
    env = {"checkpoint__store": "local", "checkpoint__directory": str(cwd / "ck"),
           "checkpoint_key": KEY, "checkpoint__every_events": "100", **overrides}
    return subprocess.run(
        service_command(*args), env=service_env(**env), capture_output=True, timeout=120,
        check=False, cwd=cwd, input=stdin,
    )


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """600 simulated events with inline labels, one JSON line each."""
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    proc = subprocess.run(
        service_command("simulate", "--count", "600", "--keys", "3", "--output", str(path)),
        env=service_env(), capture_output=True, check=False, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return path.read_bytes().splitlines()


def ids_and_offsets(path: Path) -> list[tuple[int, int]]:
    return [(p["id"], p["source"]["offset"])
            for p in map(orjson.loads, path.read_bytes().splitlines())]


def predictions(path: Path) -> list[dict[str, object]]:
    """Prediction records without their latency (which differs from run to run)."""
    out = []
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        record.pop("latency_ms")
        out.append(record)
    return out


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def run_file(tmp_path: Path, lines: list[bytes] | None = None, output: str = "p.jsonl",
             **overrides: str) -> subprocess.CompletedProcess[bytes]:
    """``run`` on ``events.jsonl`` of ``tmp_path`` (written first when ``lines`` are given)."""
    if lines is not None:
        write(tmp_path / "events.jsonl", lines)
    return cli("run", "-c", DEMO, "--input", "events.jsonl", "--output", output, cwd=tmp_path,
               stdin=None, **overrides)


def one_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The one ERROR line of a run that exited 1, with no traceback."""
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_a_resumed_run_appends_to_the_outputs_of_the_run_it_resumes(
    events: list[bytes], tmp_path: Path,
) -> None:
    # the same file, grown between the two runs, as docs/state.md describes
    out = tmp_path / "p.jsonl"
    assert run_file(tmp_path, events[:250]).returncode == 0
    second = run_file(tmp_path, events)
    assert second.returncode == 0, second.stderr
    assert b"resuming events.jsonl at line 250: the output files are appended to" in second.stderr
    assert ids_and_offsets(out) == [(i, i) for i in range(600)]
    # the same predictions as one run over the whole file
    whole = tmp_path / "whole"
    whole.mkdir()
    assert run_file(whole, events).returncode == 0
    assert predictions(out) == predictions(whole / "p.jsonl")
    # the same command again has nothing left to do, and keeps what is there
    again = run_file(tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(out.read_bytes().splitlines()) == 600


@pytest.mark.parametrize("failure", ["no signing key", "another signing key"])
def test_a_run_that_fails_at_start_keeps_the_outputs_of_the_previous_run(
    events: list[bytes], tmp_path: Path, failure: str,
) -> None:
    assert run_file(tmp_path, events[:300], local__alerts="alerts.jsonl").returncode == 0
    before = (tmp_path / "p.jsonl").read_bytes()
    assert len(before.splitlines()) == 300
    key = "" if failure == "no signing key" else "another key of 16 bytes or more"
    proc = run_file(tmp_path, local__alerts="alerts.jsonl", checkpoint_key=key)
    assert proc.returncode == (2 if failure == "no signing key" else 1), proc.stderr
    assert b"Traceback" not in proc.stderr
    assert (tmp_path / "p.jsonl").read_bytes() == before
    assert (tmp_path / "alerts.jsonl").exists()


def test_a_run_without_checkpoint_still_overwrites_its_outputs(
    events: list[bytes], tmp_path: Path,
) -> None:
    (tmp_path / "p.jsonl").write_bytes(b'{"stale": true}\n' * 1000)
    proc = run_file(tmp_path, events[:100], checkpoint__store="none")
    assert proc.returncode == 0, proc.stderr
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(100)]


def test_standard_input_resumed_from_a_checkpoint_continues_the_stream(
    events: list[bytes], tmp_path: Path,
) -> None:
    # producer | stream-learner run --input -: the second producer sends what comes next,
    # whose first line is line 250 of the stream; before, it was skipped as already seen
    first = b"".join(line + b"\n" for line in events[:250])
    rest = b"".join(line + b"\n" for line in events[250:])
    args = ("run", "-c", DEMO, "--input", "-", "--output", "p.jsonl")
    assert cli(*args, cwd=tmp_path, stdin=first).returncode == 0
    proc = cli(*args, cwd=tmp_path, stdin=rest)
    assert proc.returncode == 0, proc.stderr
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(600)]
    whole = tmp_path / "whole"
    whole.mkdir()
    assert cli(*args, cwd=whole, stdin=first + rest).returncode == 0
    assert predictions(tmp_path / "p.jsonl") == predictions(whole / "p.jsonl")


def test_an_input_shorter_than_its_checkpoint_is_refused_in_one_line(
    events: list[bytes], tmp_path: Path,
) -> None:
    # another file under the same name: it ends before the line the checkpoint resumes at
    assert run_file(tmp_path, events[:400]).returncode == 0
    before = (tmp_path / "p.jsonl").read_bytes()
    error = one_error(run_file(tmp_path, events[:150]))
    assert ("input events.jsonl has 150 lines, but its checkpoint resumes at line 400: "
            "it is not the input the checkpoint was made from") in error
    assert (tmp_path / "p.jsonl").read_bytes() == before


def test_a_tampered_key_entry_stops_the_run_in_one_line(
    events: list[bytes], tmp_path: Path,
) -> None:
    # it was each of that key's events as an unexpected_error dead letter, with a
    # traceback in the log, and exit 0: one key silently stopped getting predictions
    import sqlite3

    assert run_file(tmp_path, events[:300], model__scope="key").returncode == 0
    [db] = (tmp_path / "ck").glob("*/keys.sqlite")
    with sqlite3.connect(db) as conn:
        blob = bytearray(conn.execute(
            "SELECT blob FROM entries WHERE key = 'sensor-1'").fetchone()[0])
        blob[len(blob) // 2] ^= 1
        conn.execute("UPDATE entries SET blob = ? WHERE key = 'sensor-1'", (bytes(blob),))
    error = one_error(run_file(tmp_path, events, model__scope="key"))
    assert "entry of key 'sensor-1'" in error and "signature does not verify" in error


def test_a_rollback_on_the_local_transport_resumes_after_what_was_processed(
    events: list[bytes], tmp_path: Path,
) -> None:
    # with no committed offsets the rolled-back run went back to the old checkpoint's line
    # and predicted (and appended) those events a second time
    assert run_file(tmp_path, events[:400], service__batch_size="50").returncode == 0
    listed = cli("checkpoints", "list", "-c", DEMO, "events.jsonl:0", cwd=tmp_path)
    ids = [int(line.split("\t")[1]) for line in listed.stdout.decode().splitlines()]
    assert len(ids) == 3, listed.stdout  # checkpoint.keep, every 100 records
    rolled = cli("checkpoints", "rollback", "-c", DEMO, "events.jsonl:0", str(ids[0]),
                 cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stderr
    proc = run_file(tmp_path, events)
    assert proc.returncode == 0, proc.stderr
    assert b"resuming events.jsonl at line 400" in proc.stderr
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(600)]


def test_per_key_entries_lost_from_the_store_stop_the_run_in_one_line(
    events: list[bytes], tmp_path: Path,
) -> None:
    # every key started afresh, unnoticed, though the checkpoint knows how many it has
    assert run_file(tmp_path, events[:300], model__scope="key").returncode == 0
    [db] = (tmp_path / "ck").glob("*/keys.sqlite")
    db.unlink()
    error = one_error(run_file(tmp_path, events, model__scope="key"))
    assert "has 3 per-key models but the store holds 0 entries" in error


def test_a_line_left_unfinished_by_a_killed_run_is_cut_before_the_resumed_run_appends(
    events: list[bytes], tmp_path: Path,
) -> None:
    # a worker killed with SIGKILL while writing a line left half of it at the end of the
    # file; the resumed run appended to it, which made one line that no reader can parse
    # and lost the record written after it
    assert run_file(tmp_path, events[:250], local__alerts="alerts.jsonl").returncode == 0
    whole = tmp_path / "whole"
    whole.mkdir()
    assert run_file(whole, events, local__alerts="alerts.jsonl").returncode == 0
    # what the kill leaves: the first bytes of the next prediction, past the checkpoint
    fragment = (whole / "p.jsonl").read_bytes().splitlines()[250][:40]
    with (tmp_path / "p.jsonl").open("ab") as out:
        out.write(fragment)
    second = run_file(tmp_path, events, local__alerts="alerts.jsonl")
    assert second.returncode == 0, second.stderr
    assert (b"p.jsonl: cut a last line of 40 bytes left unfinished by an earlier run"
            in second.stderr), second.stderr
    assert predictions(tmp_path / "p.jsonl") == predictions(whole / "p.jsonl")
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(600)]


class Running:
    """A ``run --input -`` started in the background, fed its standard input piece by piece."""

    def __init__(self, cwd: Path, output: str = "p.jsonl", **overrides: str) -> None:
        env = {"checkpoint__store": "local", "checkpoint__directory": str(cwd / "ck"),
               "checkpoint_key": KEY, "checkpoint__every_events": "100",
               "service__batch_size": "50", **overrides}
        self.stderr = (cwd / f"{output}.stderr").open("w+b")
        self.proc = subprocess.Popen(
            service_command("run", "-c", DEMO, "--input", "-", "--output", output),
            env=service_env(**env), cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        """A test that failed half-way leaves no run behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()

    def feed(self, lines: list[bytes]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(line + b"\n" for line in lines))
        self.proc.stdin.flush()

    def end(self, lines: Sequence[bytes] = ()) -> subprocess.CompletedProcess[bytes]:
        """Send the last ``lines``, close the input and wait for the exit."""
        self.proc.communicate(b"".join(line + b"\n" for line in lines), timeout=120)
        self.stderr.seek(0)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, b"",
                                           self.stderr.read())


def wait_for_checkpoint(folder: Path, line: int) -> None:
    """Until a checkpoint of ``folder`` resumes at ``line`` (the newest one, by its name)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        heads = sorted(folder.glob("*/*.ckpt"))
        if heads and f'"-",0,{line}]'.encode() in heads[-1].read_bytes():
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at line {line} in {folder}")


def test_a_run_whose_checkpoint_folder_another_run_took_over_stops_in_one_line(
    events: list[bytes], tmp_path: Path,
) -> None:
    # its next checkpoint was refused: it logged a warning, dropped its only shard, read the
    # rest of its input for nothing and exited 0 with a summary, as if it had finished
    with Running(tmp_path) as first:
        first.feed(events[:250])
        wait_for_checkpoint(tmp_path / "ck", 200)
        # another run took the folder over: here an operator's rollback (a new epoch)
        rolled = cli("checkpoints", "rollback", "-c", DEMO, "--", "-:0", "1", cwd=tmp_path)
        assert rolled.returncode == 0, rolled.stderr
        proc = first.end(events[250:])
    error = one_error(proc)
    assert (f"another run took over checkpoint folder {tmp_path / 'ck'} for input -" in error
            ), error
    assert b"records (" not in proc.stderr  # no summary: the run did not finish its input
    # nothing after the batch whose checkpoint was refused (line 300, every 100 records)
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(300)]


def test_a_second_run_on_a_checkpoint_folder_in_use_is_refused_at_start(
    events: list[bytes], tmp_path: Path,
) -> None:
    # it took the shard over: both runs scored the lines up to the first one's next
    # checkpoint, and the first was fenced there
    with Running(tmp_path) as first:
        first.feed(events[:250])
        wait_for_checkpoint(tmp_path / "ck", 200)
        (tmp_path / "p2.jsonl").write_bytes(b"kept\n")
        second = cli("run", "-c", DEMO, "--input", "-", "--output", "p2.jsonl", cwd=tmp_path,
                     stdin=b"".join(line + b"\n" for line in events[250:]))
        error = one_error(second)
        assert (f"checkpoint folder {tmp_path / 'ck'} is in use by another run (process "
                f"{first.proc.pid}) on shard -:0" in error), error
        assert (tmp_path / "p2.jsonl").read_bytes() == b"kept\n"
        # the first run goes on as if nothing happened
        done = first.end(events[250:])
    assert done.returncode == 0, done.stderr
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(600)]
    # and once it has ended, the next run may resume
    again = cli("run", "-c", DEMO, "--input", "-", "--output", "p.jsonl", cwd=tmp_path,
                stdin=b"")
    assert again.returncode == 0, again.stderr


def test_a_half_written_last_line_is_left_for_the_run_on_the_grown_file(
    events: list[bytes], tmp_path: Path,
) -> None:
    # it became a not_json dead letter and the checkpoint went past it: the run on the
    # finished file resumed at the next line, and that event never got a prediction
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in events[:250]) + events[250][:40])
    first = run_file(tmp_path, local__dead_letters="dl.jsonl")
    assert first.returncode == 0, first.stderr
    assert (b"the last line of events.jsonl (line 250) has no newline and is not valid JSON: "
            b"left for the next run") in first.stderr
    assert (tmp_path / "dl.jsonl").read_bytes() == b""
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(250)]
    write(path, events)  # the writer finished the line and went on
    second = run_file(tmp_path, local__dead_letters="dl.jsonl")
    assert second.returncode == 0, second.stderr
    assert b"resuming events.jsonl at line 250" in second.stderr
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(600)]
    whole = tmp_path / "whole"
    whole.mkdir()
    assert run_file(whole, events).returncode == 0
    assert predictions(tmp_path / "p.jsonl") == predictions(whole / "p.jsonl")


def test_a_last_line_without_newline_is_processed_when_it_is_whole_or_nothing_resumes(
    events: list[bytes], tmp_path: Path,
) -> None:
    # many files lack the last newline; and without a checkpoint, nothing would read a
    # half-written line again: it stays a dead letter
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(events[:100]))
    whole = run_file(tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert b"no newline" not in whole.stderr
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(100)]
    path.write_bytes(b"".join(line + b"\n" for line in events[:100]) + events[100][:40])
    proc = run_file(tmp_path, checkpoint__store="none", local__dead_letters="dl.jsonl")
    assert proc.returncode == 0, proc.stderr
    [dead] = map(orjson.loads, (tmp_path / "dl.jsonl").read_bytes().splitlines())
    assert dead["headers"]["__stream_learner.errors.reason"] == "not_json", dead


def test_a_half_written_last_line_of_standard_input_is_left_for_the_next_run(
    events: list[bytes], tmp_path: Path,
) -> None:
    # the next producer sends that line whole, as the first line of what comes next
    args = ("run", "-c", DEMO, "--input", "-", "--output", "p.jsonl")
    partial = b"".join(line + b"\n" for line in events[:250]) + events[250][:40]
    first = cli(*args, cwd=tmp_path, stdin=partial)
    assert first.returncode == 0, first.stderr
    assert b"the last line of - (line 250) has no newline" in first.stderr
    rest = b"".join(line + b"\n" for line in events[250:])
    assert cli(*args, cwd=tmp_path, stdin=rest).returncode == 0
    assert ids_and_offsets(tmp_path / "p.jsonl") == [(i, i) for i in range(600)]
