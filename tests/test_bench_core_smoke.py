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
