"""scripts/bench_local_store.py runs its two measurements (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support.service import ROOT, service_env

SCRIPT = ROOT / "scripts" / "bench_local_store.py"


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], env=service_env(),
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_four_write_patterns_are_measured() -> None:
    out = _run("--keys", "500", "--batch", "100", "--rounds", "6")
    found = dict(re.findall(r"^([a-z-]+): ([0-9.]+) µs of CPU per entry$", out, re.M))
    assert sorted(found) == ["shipped", "undo-table", "update", "versioned"]
    assert all(float(us) > 0 for us in found.values())


def test_the_worker_runs_with_the_shipped_store_and_with_entries_in_place() -> None:
    out = _run("--worker", "--pairs", "1", "--sensors", "200", "--events-per-sensor", "2")
    match = re.search(r"shipped (\d+) µs, entries in place (\d+) µs of CPU an event "
                      r"\(undo records left: (\d+) and (\d+)\)", out)
    assert match and int(match[1]) > 0 and int(match[2]) > 0, out
    assert int(match[3]) > 0 and int(match[4]) == 0, out  # the second run wrote in place
