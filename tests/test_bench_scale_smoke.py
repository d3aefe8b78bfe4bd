"""scripts/bench_scale.py --key-cost runs and reports what a key costs (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.service import ROOT, service_env

SCRIPT = ROOT / "scripts" / "bench_scale.py"


def test_key_cost_reports_flat_entries_smaller_than_whole_pickles() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--key-cost", "--keys", "300"],
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cost = json.loads(proc.stdout.strip().splitlines()[-1])
    assert cost["keys"] == 300 and cost["events_per_key"] == 10
    assert min(cost["save_entry_us"], cost["load_entry_us"], cost["create_copy_us"]) > 0
    assert cost["memory_bytes_per_key"] > 0
    assert 0 < cost["entry_bytes"] < cost["pickle_entry_bytes"]
