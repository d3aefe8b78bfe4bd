"""scripts/bench_core.py runs and prints its table (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.service import ROOT, service_env

SCRIPT = ROOT / "scripts" / "bench_core.py"


def test_prints_one_row_per_model() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "linear", "anomaly", "--events", "200",
         "--repeat", "1"],
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | bare µs/event")
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["linear", "anomaly"]


def test_parts_split_the_overhead_and_add_up() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", "linear", "--events", "300", "--repeat", "1",
         "--parts"],
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ")]
    parts = [row for row in rows if row[0].strip() == "linear"][-1]
    overhead, monitors, detectors, decode, encode, rest = (float(c) for c in parts[1:])
    assert min(detectors, decode, encode) > 0  # each timed on its own
    assert abs(monitors + decode + encode + rest - overhead) < 0.2  # rest is what is left
