"""An output that names the input file is refused before anything is opened, through the
real CLI and real files: the input is left as it was, and the one-line error (exit 2)
names both settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.service import ROOT, service_command, service_env

DEMO = str(ROOT / "config" / "demo.toml")


def cli(*args: str, cwd: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        service_command(*args), env=service_env(**overrides), capture_output=True, text=True,
        timeout=120, check=False, cwd=cwd,
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """200 simulated events with inline labels, as JSON Lines."""
    path = tmp_path_factory.mktemp("history") / "history.jsonl"
    proc = subprocess.run(
        service_command("simulate", "--count", "200", "--keys", "3", "--output", str(path)),
        env=service_env(), capture_output=True, check=False, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return path.read_bytes()


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a command refused as misconfigured (exit 2, no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(("argv", "overrides", "output", "input_"), [
    (["run", "-c", DEMO, "--input", "same.jsonl", "--output", "same.jsonl"], {},
     "local.output / --output", "local.input (--input)"),
    (["run", "-c", DEMO, "--input", "same.jsonl", "--output", "./sub/../same.jsonl"], {},
     "local.output / --output", "local.input (--input)"),
    (["run", "-c", DEMO, "--input", "same.jsonl", "--quiet", "--summary-json", "same.jsonl"],
     {}, "--summary-json", "local.input (--input)"),
    (["run", "-c", DEMO, "--input", "same.jsonl", "--quiet"],
     {"local__dead_letters": "same.jsonl"}, "local.dead_letters", "local.input (--input)"),
    (["run", "-c", DEMO, "--input", "same.jsonl", "--quiet"],
     {"local__metrics": "same.jsonl"}, "local.metrics", "local.input (--input)"),
    (["check", "-c", DEMO, "--input", "same.jsonl"],
     {"local__alerts": "same.jsonl"}, "local.alerts", "local.input (--input)"),
    (["replay", "-c", DEMO, "same.jsonl", "--output", "same.jsonl"], {},
     "local.output / --output", "replay FILE"),
    (["replay", "-c", DEMO, "same.jsonl", "--quiet", "--alerts", "same.jsonl"], {},
     "--alerts", "replay FILE"),
    (["replay", "-c", DEMO, "same.jsonl", "--quiet", "--summary-json", "same.jsonl"], {},
     "--summary-json", "replay FILE"),
    (["replay", "-c", DEMO, "same.jsonl", "--quiet"],
     {"local__learn_dead_letters": "same.jsonl"}, "local.learn_dead_letters", "replay FILE"),
])
def test_an_output_naming_the_input_is_refused_and_the_input_kept(
    history: bytes, tmp_path: Path, argv: list[str], overrides: dict[str, str], output: str,
    input_: str,
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "same.jsonl").write_bytes(history)
    line = refused(cli(*argv, cwd=tmp_path, **overrides))
    assert output in line and input_ in line and "same.jsonl" in line
    assert (tmp_path / "same.jsonl").read_bytes() == history


def test_a_link_to_the_input_is_the_same_file(history: bytes, tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_bytes(history)
    os.link(tmp_path / "events.jsonl", tmp_path / "hard.jsonl")
    (tmp_path / "soft.jsonl").symlink_to(tmp_path / "events.jsonl")
    for name in ("hard.jsonl", "soft.jsonl"):
        proc = cli("run", "-c", DEMO, "--input", "events.jsonl", "--output", name, cwd=tmp_path)
        assert "local.output / --output" in refused(proc)
    assert (tmp_path / "events.jsonl").read_bytes() == history


def test_report_refuses_to_write_over_one_of_its_inputs(history: bytes, tmp_path: Path) -> None:
    metrics = b'{"schema_version": 1, "ts": 1.0, "totals": {}, "partitions": []}\n'
    (tmp_path / "metrics.jsonl").write_bytes(metrics)
    (tmp_path / "p.jsonl").write_bytes(history)
    for flag in ("-o", "--json"):
        out = ["-o", "r.html", flag, "p.jsonl"] if flag == "--json" else ["-o", "p.jsonl"]
        proc = cli("report", "--metrics", "metrics.jsonl", "--predictions", "p.jsonl", *out,
                   cwd=tmp_path)
        line = refused(proc)
        assert "--predictions" in line and ("--output" if flag == "-o" else "--json") in line
    assert (tmp_path / "p.jsonl").read_bytes() == history
    assert (tmp_path / "metrics.jsonl").read_bytes() == metrics


def test_different_files_and_standard_streams_still_run(history: bytes, tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_bytes(history)
    proc = cli("run", "-c", DEMO, "--input", "events.jsonl", "--output", "-",
               "--summary-json", "run.json", cwd=tmp_path, local__dead_letters="-")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run.json").exists() and proc.stdout
    assert (tmp_path / "events.jsonl").read_bytes() == history
