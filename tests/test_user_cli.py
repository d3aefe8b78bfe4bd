"""What a new user meets first, through the real CLI: files, exit codes, messages."""

from __future__ import annotations

import array
import fcntl
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.support.service import ROOT, one_line_error, service_command, service_env

DEMO = str(ROOT / "config" / "demo.toml")


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 120, **overrides: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        service_command(*args), env=service_env(**overrides), capture_output=True, text=True,
        timeout=timeout, check=False, cwd=cwd,
    )


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 simulated events with their labels 5 events late (600 records)."""
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    proc = cli("simulate", "--count", "300", "--keys", "3", "--label-delay", "5",
               "--output", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


# -- output files ------------------------------------------------------------------------


def test_outputs_are_overwritten_by_default(events: Path, tmp_path: Path) -> None:
    out, alerts = tmp_path / "predictions.jsonl", tmp_path / "alerts.jsonl"
    for _ in range(2):
        proc = cli("run", "-c", DEMO, "--input", str(events), "--output", str(out),
                   local__alerts=str(alerts))
        assert proc.returncode == 0, proc.stderr
    assert len(lines(out)) == 300


def test_outputs_are_appended_when_asked(events: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.jsonl"
    for _ in range(2):
        proc = cli("run", "-c", DEMO, "--input", str(events), "--output", str(out), "--append")
        assert proc.returncode == 0, proc.stderr
    assert len(lines(out)) == 600


def test_run_without_arguments_writes_no_file(tmp_path: Path) -> None:
    proc = cli("run", "--max-events", "300", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []
    assert len(proc.stdout.splitlines()) == 300


@pytest.mark.parametrize("flag", ["--output", "--summary-json"])
def test_unwritable_output_fails_before_the_first_record(
    events: Path, tmp_path: Path, flag: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "out.jsonl"  # a path under a regular file cannot be created
    other = "--summary-json" if flag == "--output" else "--output"
    written = tmp_path / "other.jsonl"
    proc = cli("run", "-c", DEMO, "--input", str(events), flag, str(target), other, str(written))
    line = one_line_error(proc, 2)
    assert str(target) in line
    assert not written.exists() or written.read_bytes() == b"", "a record was written"


def test_unwritable_alerts_file_fails_before_the_first_record(
    events: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = tmp_path / "p.jsonl"
    proc = cli("run", "-c", DEMO, "--input", str(events), "--output", str(out),
               local__alerts=str(blocker / "alerts.jsonl"))
    assert "local.alerts" in one_line_error(proc, 2)
    assert not out.exists() or out.read_bytes() == b""


# -- one-line errors ---------------------------------------------------------------------


def test_missing_input_file_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(cli("run", "--input", str(tmp_path / "nope.jsonl")), 2)
    assert "nope.jsonl" in line


def test_directory_as_input_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(cli("run", "--input", str(tmp_path)), 2)
    assert str(tmp_path) in line


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "-c", "{tmp}"], "settings file {tmp} is a folder, not a TOML file"),
    (["check", "-c", "{tmp}/latin1.toml"], "{tmp}/latin1.toml is not UTF-8 text"),
    (["replay", "{tmp}/nope.jsonl", "--quiet"],
     "replay FILE: cannot read {tmp}/nope.jsonl: no such file or directory"),
    (["replay", "{tmp}", "--quiet"], "replay FILE: {tmp} is a folder"),
    (["replay", "{tmp}/a.jsonl", "{tmp}/b.csv", "--quiet"],
     "replay FILE: {tmp}/b.csv is CSV but {tmp}/a.jsonl is not"),
    (["simulate", "--count", "5", "--output", "{tmp}/a.jsonl/x.jsonl"],
     "--output {tmp}/a.jsonl/x.jsonl: cannot write: not a directory"),
    (["simulate", "--count", "5", "--output", "{tmp}"], "--output {tmp}: cannot write"),
    (["report", "--metrics", "{tmp}/metrics.jsonl", "-o", "{tmp}/a.jsonl/r.html"],
     "--output {tmp}/a.jsonl/r.html: cannot write: not a directory"),
    (["report", "--metrics", "{tmp}/a.jsonl", "-o", "{tmp}/r.html"],
     "--metrics {tmp}/a.jsonl: none of its 1 records is a metrics snapshot"),
    (["report", "--metrics", "{tmp}/nope.jsonl", "-o", "{tmp}/r.html"],
     "report --metrics: cannot read {tmp}/nope.jsonl: no such file or directory"),
    (["report", "--metrics", "{tmp}/metrics.jsonl", "--labels", "{tmp}", "-o", "{tmp}/r.html"],
     "report --labels: {tmp} is a folder, not a JSON Lines file"),
])
def test_unusable_files_of_every_command_are_one_line_not_a_traceback(
    tmp_path: Path, argv: list[str], expected: str,
) -> None:
    (tmp_path / "latin1.toml").write_bytes('[model]\nname = "caf\u00e9"\n'.encode("latin-1"))
    (tmp_path / "a.jsonl").write_bytes(b'{"id": 1, "features": {"x": 1.0}}\n')
    (tmp_path / "b.csv").write_bytes(b"id,x\n1,1.0\n")
    (tmp_path / "metrics.jsonl").write_bytes(
        b'{"schema_version": 1, "ts": 1.0, "totals": {}, "partitions": []}\n')
    proc = cli(*[arg.format(tmp=tmp_path) for arg in argv])
    assert expected.format(tmp=tmp_path) in one_line_error(proc, 2)


def test_unknown_river_dataset_is_one_line_with_a_suggestion() -> None:
    line = one_line_error(cli("run", "--input", "river:WaterFlo"), 2)
    assert "WaterFlo" in line and "WaterFlow" in line


def test_bad_start_ts_is_one_line() -> None:
    line = one_line_error(cli("simulate", "--count", "1", "--start-ts", "yesterday"), 2)
    assert "--start-ts" in line and "yesterday" in line


def test_closed_stdout_is_not_a_traceback(tmp_path: Path) -> None:
    env = service_env(local__dead_letters="-", local__alerts="")
    command = " ".join(service_command("run", "--max-events", "2000")) + " | head -n 1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert len(proc.stdout.splitlines()) == 1


# -- garbage in, non-zero out ------------------------------------------------------------


def test_run_whose_labels_are_all_rejected_fails_pointing_at_the_configuration(
    tmp_path: Path,
) -> None:
    # demo.toml classifies; the water-flow data is a regression stream
    proc = cli("run", "-c", DEMO, "--input", "river:WaterFlow", "--max-events", "200", "--quiet",
               cwd=tmp_path, local__learn_dead_letters="")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "every label was rejected" in proc.stderr
    assert "model.task" in proc.stderr


def test_check_tries_the_model_on_a_sample_record() -> None:
    proc = cli("check", model__pipeline='[{step = "linear_model.LinearRegression", '
               'params = { l2 = "lots" }}]')
    line = one_line_error(proc, 2)
    assert "configuration" in line and "sample" in line


def test_check_tries_the_model_on_the_first_input_record() -> None:
    # a classifier on the water-flow regression stream: its first record's label fails
    line = one_line_error(cli("check", "-c", DEMO, "--input", "river:WaterFlow"), 2)
    assert "sample record river:WaterFlow[0]" in line and "model.task" in line


def test_check_passes_on_a_good_configuration(events: Path) -> None:
    proc = cli("check", "-c", DEMO, "--input", str(events))
    assert proc.returncode == 0, proc.stderr
    assert "sample record" in proc.stdout


# -- interrupts --------------------------------------------------------------------------


def _start(*args: str, **overrides: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        service_command(*args), env=service_env(**overrides), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


class _Stderr:
    """Reads a process's stderr in a thread, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self._stream = proc.stderr
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._seen:
                self.lines.append(raw.decode(errors="replace"))
                self._seen.notify_all()
        with self._seen:
            self.lines.append("")  # the end
            self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 300) -> None:
        """Block until a line contains ``text`` (fail when the stream ends or time is up)."""
        with self._seen:
            ok = self._seen.wait_for(
                lambda: any(text in line for line in self.lines) or "" in self.lines, timeout)
        assert ok and any(text in line for line in self.lines), "".join(self.lines)

    def text(self) -> str:
        with self._seen:
            self._seen.wait_for(lambda: "" in self.lines, 60)
            return "".join(self.lines)


def _until_read(fd: int, timeout: float = 60.0) -> None:
    """Wait until the reader of the pipe whose write end is ``fd`` has taken every byte."""
    deadline = time.monotonic() + timeout
    unread = array.array("i", [1])
    while time.monotonic() < deadline:
        fcntl.ioctl(fd, termios.FIONREAD, unread)
        if unread[0] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{unread[0]} bytes still unread in the pipe after {timeout}s")


def _until_full(fd: int, timeout: float = 60.0) -> None:
    """Wait until the writer of the pipe whose read end is ``fd`` is blocked on it.

    Blocked: the pipe holds over half its capacity and took nothing more for 0.5 s
    (a write that does not fit waits, so the pipe is rarely full to the byte).
    """
    capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    deadline = time.monotonic() + timeout
    unread = array.array("i", [0])
    before, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        fcntl.ioctl(fd, termios.FIONREAD, unread)
        if unread[0] != before:
            before, since = unread[0], time.monotonic()
        elif unread[0] > capacity // 2 and time.monotonic() - since >= 0.5:
            return
        time.sleep(0.05)
    raise AssertionError(f"the pipe holds {unread[0]} of {capacity} bytes after {timeout}s")


def _signal_masks(pid: int) -> str:
    """The blocked, ignored and caught signal masks of process ``pid`` (Linux)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        return f"no /proc status: {exc}"
    masks = ("SigBlk", "SigIgn", "SigCgt")
    return " ".join(line for line in status.splitlines() if line.startswith(masks))


#: Logged once the run has subscribed to its input: it is past start-up.
STARTED = "assigned partitions"


def test_ctrl_c_with_an_idle_writer_stops_the_run_with_130(events: Path) -> None:
    proc = _start("run", "-c", DEMO, "--input", "-", local__alerts="")
    assert proc.stdin is not None and proc.stdout is not None
    stderr = _Stderr(proc)
    try:
        first = events.read_bytes().splitlines()[0]
        proc.stdin.write(first + b"\n")
        proc.stdin.flush()  # one event, then the writer stays idle with stdin open
        stderr.wait_for(STARTED)
        _until_read(proc.stdin.fileno())  # Ctrl-C after the run took the line, not before
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        out = proc.stdout.read()
    finally:
        proc.kill()
    text = stderr.text()
    assert code == 130, text
    assert "interrupted" in text and "(1 events" in text and "Traceback" not in text
    assert orjson.loads(out.splitlines()[0])["id"] == 0  # the event read before is scored


def test_second_ctrl_c_forces_the_exit(events: Path) -> None:
    path = events.parent / "big.jsonl"
    path.write_bytes(events.read_bytes() * 20)
    # stdout is never read: the run blocks writing predictions once the pipe is full
    proc = _start("run", "-c", DEMO, "--input", str(path), local__alerts="")
    stderr = _Stderr(proc)
    try:
        stderr.wait_for(STARTED)
        assert proc.stdout is not None
        # blocked on output first: a Ctrl-C before the first batch ends the run at once
        # (exit 130), and a second one then lands in the interpreter's shutdown
        _until_full(proc.stdout.fileno())
        proc.send_signal(signal.SIGINT)
        stderr.wait_for("interrupted (SIGINT)")
        assert proc.poll() is None, "the first Ctrl-C must not exit a run blocked on output"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    text = stderr.text()
    assert code == 130, text
    assert "Traceback" not in text
    assert "forced exit" in text


def test_ctrl_c_during_replay_is_not_a_traceback(events: Path) -> None:
    big = events.parent / "replay-big.jsonl"
    big.write_bytes(events.read_bytes() * 200)
    proc = subprocess.Popen(
        service_command("replay", str(big), "--quiet"), env=service_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    stderr = _Stderr(proc)
    try:
        stderr.wait_for(STARTED)
        running = proc.poll() is None
        signals = _signal_masks(proc.pid)  # if the Ctrl-C is not seen: ignored, or blocked?
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    text = stderr.text()
    assert running, f"the replay ended before the Ctrl-C was sent:\n{text}"
    assert "Traceback" not in text, text
    assert code == 130, f"{signals}\n{text}"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_replay_keeps_what_was_replayed(
    events: Path, tmp_path: Path, signum: int, code: int
) -> None:
    """An interrupted backtest finishes its batch: complete outputs, the partial summary
    printed and written, and no warm-start checkpoint (it would not cover the history)."""
    big = tmp_path / "replay-big.jsonl"
    big.write_bytes(events.read_bytes() * 200)
    out, summary, store = tmp_path / "predictions.jsonl", tmp_path / "s.json", tmp_path / "ck"
    proc = subprocess.Popen(
        service_command("replay", str(big), "--output", str(out), "--summary-json",
                        str(summary), "--checkpoint-to", str(store), "--resume-offset", "0"),
        env=service_env(checkpoint_key="k" * 32), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    stderr = _Stderr(proc)
    try:
        stderr.wait_for(STARTED)
        deadline = time.monotonic() + 120
        while (not out.exists() or out.stat().st_size < 100_000) and time.monotonic() < deadline:
            time.sleep(0.05)
        running = proc.poll() is None
        proc.send_signal(signum)
        exited = proc.wait(timeout=120)
    finally:
        proc.kill()
    text = stderr.text()
    assert running, f"the replay ended before the signal was sent:\n{text}"
    assert exited == code and "Traceback" not in text, text
    doc = orjson.loads(summary.read_bytes())
    predictions = [orjson.loads(line) for line in lines(out)]  # every line complete
    assert 0 < doc["predictions"] == len(predictions) < 200 * 300
    assert doc["records"] < 200 * 600
    assert f"{doc['records']} records" in text  # the partial summary, printed
    assert "interrupted" in text and "no warm-start checkpoint" in text
    assert not any(store.rglob("*.ckpt"))


# -- what the summary counts -------------------------------------------------------------


def test_summary_names_events_and_label_records(events: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    proc = cli("run", "-c", DEMO, "--input", str(events), "--quiet", "--summary-json",
               str(summary))
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "600 records (300 events, 300 label records" in last
    doc = orjson.loads(summary.read_bytes())
    assert doc["events_per_s"] == pytest.approx(doc["predictions"] / doc["elapsed_s"])
    assert doc["records_per_s"] == pytest.approx(doc["records"] / doc["elapsed_s"])


def test_ctrl_c_on_a_replay_of_standard_input_writes_no_warm_start(
    events: Path, tmp_path: Path
) -> None:
    """The interrupt itself ends standard input: the replay must still count as stopped."""
    store = tmp_path / "ck"
    proc = _start("replay", "-", "--quiet", "--checkpoint-to", str(store), "--resume-offset",
                  "0", checkpoint_key="k" * 32)
    assert proc.stdin is not None
    stderr = _Stderr(proc)
    try:
        proc.stdin.write(b"\n".join(events.read_bytes().splitlines()[:50]) + b"\n")
        proc.stdin.flush()  # then the writer stays idle with stdin open
        stderr.wait_for(STARTED)
        _until_read(proc.stdin.fileno())
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    text = stderr.text()
    assert code == 130 and "Traceback" not in text, text
    assert "no warm-start checkpoint" in text
    assert not any(store.rglob("*.ckpt"))


@pytest.mark.parametrize("args", [
    ("run", "--output", "{out}", "--quiet"),
    ("replay", "{events}", "--quiet", "--output", "{out}"),
    ("replay", "{events}", "--output", "{out}", "--output-topic", "predictions"),
])
def test_quiet_with_an_output_is_refused(
    events: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Both flags name what happens to predictions: one of them would be dropped silently."""
    out = tmp_path / "predictions.jsonl"
    proc = cli(*(a.format(out=out, events=events) for a in args), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "not allowed with argument" in proc.stderr.strip().splitlines()[-1]
    assert not out.exists() and "Traceback" not in proc.stderr


def test_max_events_help_says_what_it_counts() -> None:
    proc = cli("run", "--help")
    assert "input records (events and label records" in " ".join(proc.stdout.split())


# -- local outputs at shutdown, blank lines ----------------------------------------------


def test_local_run_writes_a_metrics_snapshot_at_shutdown(events: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    proc = cli("run", "-c", DEMO, "--input", str(events), "--quiet",
               local__metrics=str(metrics), metrics__snapshot_interval_s="3600")
    assert proc.returncode == 0, proc.stderr
    snapshots = [orjson.loads(line) for line in lines(metrics)]
    assert snapshots and snapshots[-1]["totals"]["records"] == 600


def test_blank_input_line_is_not_an_error(events: Path, tmp_path: Path) -> None:
    first, *rest = events.read_bytes().splitlines(keepends=True)
    path = tmp_path / "blank.jsonl"
    path.write_bytes(first + b"\n   \n" + b"".join(rest))
    proc = cli("run", "-c", DEMO, "--input", str(path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert " ERROR " not in proc.stderr and "retention" not in proc.stderr, proc.stderr


def test_a_line_of_other_white_space_is_a_record_not_a_blank_line(
    events: Path, tmp_path: Path,
) -> None:
    # a form feed or a vertical tab is no JSON white space: such a line was skipped unseen
    first, *rest = events.read_bytes().splitlines(keepends=True)
    path = tmp_path / "ff.jsonl"
    path.write_bytes(first + b"\x0c\n \x0b \n" + b"".join(rest))
    dead, summary = tmp_path / "dl.jsonl", tmp_path / "s.json"
    proc = cli("run", "-c", DEMO, "--input", str(path), "--quiet", "--summary-json",
               str(summary), local__dead_letters=str(dead))
    assert proc.returncode == 0, proc.stderr
    reasons = [(d["headers"]["__stream_learner.errors.offset"],
                d["headers"]["__stream_learner.errors.reason"])
               for d in map(orjson.loads, lines(dead))]
    assert reasons == [("1", "not_json"), ("2", "not_json")]
    assert orjson.loads(summary.read_bytes())["records"] == 600 + 2


# -- help and the environment -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["run"], ["check"], ["replay"], ["simulate"], ["report"], ["checkpoints"],
             ["checkpoints", "list"], ["checkpoints", "show"], ["checkpoints", "rollback"]],
)
def test_every_subcommand_help_has_a_description_and_an_example(argv: list[str]) -> None:
    proc = cli(*argv, "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "example" in text.lower(), text
    assert f"stream-learner {' '.join(argv)}" in text
    if argv[0] == "checkpoints" and len(argv) > 1:
        assert text != cli("checkpoints", "--help").stdout
        # what must be given shows without brackets
        usage = {"list": "[shard]", "show": " shard [id]", "rollback": " shard id"}[argv[1]]
        assert text.splitlines()[0].endswith(usage), text


def test_unknown_stream_learner_variable_is_warned_about() -> None:
    proc = cli("check", service_batch_size="abc")
    assert proc.returncode == 0, proc.stderr
    assert "STREAM_LEARNER_SERVICE_BATCH_SIZE" in proc.stderr
    assert "STREAM_LEARNER_SERVICE__BATCH_SIZE" in proc.stderr  # the likely meant name


def test_local_toml_spells_out_the_embedded_default() -> None:
    from stream_learner.settings import Settings, load_settings

    assert load_settings(ROOT / "config" / "local.toml", env={}) == Settings()


def test_replay_checks_its_summary_path_before_the_first_record(
    events: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = tmp_path / "p.jsonl"
    proc = cli("replay", "-c", DEMO, str(events), "--output", str(out),
               "--summary-json", str(blocker / "s.json"))
    assert "--summary-json" in one_line_error(proc, 2)
    assert not out.exists() or out.read_bytes() == b""


def test_checkpoints_show_into_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    store = {"checkpoint__store": "local", "checkpoint__directory": str(tmp_path / "ck"),
             "checkpoint_key": "0123456789abcdef0123"}
    assert cli("run", "--max-events", "200", "--quiet", cwd=tmp_path, **store).returncode == 0
    env = service_env(**store)
    command = " ".join(service_command("checkpoints", "show", "river:WaterFlow:0")) + " | true"
    proc = subprocess.run(["bash", "-c", command + '; echo "exit ${PIPESTATUS[0]}"'], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() in ("exit 0", "exit 141")  # 141: SIGPIPE, as shell tools


def test_an_event_time_in_milliseconds_is_a_dead_letter_not_a_clock_jump(tmp_path: Path) -> None:
    # one producer sending epoch milliseconds moved its partition's event-time clock
    # 50,000 years ahead: every prediction waiting for its label expired at once
    events = [{"id": i, "key": "pump-0", "ts": 1764116000 + i, "features": {"x": float(i)}}
              for i in range(20)]
    wrong = {"id": "ms", "key": "pump-0", "ts": 1764116021000, "features": {"x": 1.0}}
    labels = [{"id": i, "key": "pump-0", "label": i % 2} for i in range(20)]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [*events, wrong, *labels]))
    dead = tmp_path / "dead.jsonl"
    proc = cli("run", "-c", DEMO, "--input", str(source), "--quiet", "--summary-json",
               str(tmp_path / "run.json"), local__dead_letters=str(dead), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = orjson.loads((tmp_path / "run.json").read_bytes())
    assert (summary["labels"], summary["labels_expired"]) == (20, 0)
    [letter] = [orjson.loads(line) for line in lines(dead)]
    headers = letter["headers"]
    assert headers["__stream_learner.errors.reason"] == "invalid_ts"
    assert "epoch milliseconds? send seconds" in headers["__stream_learner.errors.exception.message"]


def test_the_demo_config_alone_checks_and_runs(tmp_path: Path) -> None:
    # without --input it read the regression dataset of the embedded default, and every
    # label was refused as not fitting model.task = "classification"
    check = cli("check", "-c", DEMO, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "river:Phishing[0] scored and learned" in check.stdout
    run = cli("run", "-c", DEMO, "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "1250 labels learned" in run.stderr


@pytest.mark.parametrize(("argv", "expected"), [
    # --variants was taken modulo the generator's count: 9 silently meant 1
    (["simulate", "--source", "sea", "--drift-at", "5", "--variants", "0,9", "--count", "10",
      "--output", "{tmp}/x.jsonl"], "sea has the concept variants 0 to 3, got 0, 9"),
    (["check", "--input", "{tmp}/empty.jsonl"], "empty.jsonl is empty: nothing to try the model on"),
])
def test_values_that_cannot_work_are_one_line(
    tmp_path: Path, argv: list[str], expected: str,
) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    proc = cli(*[arg.format(tmp=tmp_path) for arg in argv])
    assert expected in one_line_error(proc, 2)


def test_a_negative_rate_is_refused_by_the_command_line() -> None:
    proc = cli("simulate", "--rate", "-1", "--count", "3", "--output", "-")
    assert proc.returncode == 2
    assert "argument --rate: must be 0 or more, got -1" in proc.stderr
    assert proc.stdout == ""


def test_a_label_ts_field_no_event_has_is_warned_about(tmp_path: Path) -> None:
    # a misspelled field turned the delayed-label backtest into an inline one, silently
    inline = tmp_path / "inline.jsonl"
    assert cli("simulate", "--count", "300", "--output", str(inline)).returncode == 0
    proc = cli("replay", "-c", DEMO, str(inline), "--label-ts-field", "label_tss", "--quiet",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("--label-ts-field 'label_tss': 300 labelled events had no usable 'label_tss' "
            "field, and their labels stayed inline") in proc.stderr


def test_a_wrong_flag_value_is_blamed_on_the_command_line() -> None:
    # it was blamed on the settings file, or on the environment when there was none
    proc = cli("run", "-c", DEMO, "--max-events", "-1")
    assert proc.returncode == 2
    assert f"invalid settings ({DEMO} + command line):" in proc.stderr
    assert "service.max_events" in proc.stderr


def test_ctrl_c_while_the_command_loads_is_one_line_and_130() -> None:
    # the modules take a second or two to load; a Ctrl-C then was a KeyboardInterrupt
    # traceback. Here the Ctrl-C arrives during the import, every time
    code = (
        "import importlib.abc, sys\n"
        "class CtrlC(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'stream_learner.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "from stream_learner.__main__ import run\n"
        "sys.exit(run())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=service_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 130
    assert proc.stderr == "stream-learner: interrupted\n"


def test_the_console_command_is_the_entry_that_handles_ctrl_c() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["stream-learner"] == "stream_learner.__main__:run"
