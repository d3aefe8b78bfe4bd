"""scripts/bench_keyed_writes.py runs the scale worker with each way of writing changed models
(no timing is asserted: what is checked is that each way writes what it says)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.support.service import ROOT, service_env

SCRIPT = ROOT / "scripts" / "bench_keyed_writes.py"


def test_each_way_writes_what_it_says_on_the_local_store() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "20,200", "--store", "local",
         "--rounds", "1", "--min-events", "400"],
        env=service_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {m[0]: m[1:] for m in re.findall(
        r"^\| (entries|waited|records|nothing|encoded|forked) \| (\d+) µs \| (\d+) µs \| ([\d.]+) "
        r"\| [\d,]+ \| [\d,]+ \| ([\d.]+) \| ([\d,]+) KiB \|$", proc.stdout, re.M)}
    assert sorted(rows) == ["encoded", "entries", "forked", "nothing", "records", "waited"], (
        proc.stdout)
    written = {way: int(row[-1].replace(",", "")) for way, row in rows.items()}
    # a model's entry is about 2.4 KB, a record 200 B; `nothing`, `encoded` and `forked`
    # write the head alone (with the slot layout learned by encoding, in `encoded`)
    assert written["nothing"] < written["records"] < written["entries"] / 4, written
    assert max(written["encoded"], written["forked"]) < written["records"] / 4, written
    assert all(int(row[0]) > 0 and int(row[1]) > 0 for row in rows.values())


def test_a_forked_run_encodes_in_its_children(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--child", "forked", "--sensors", "200", "--store",
         "local", "--where", str(tmp_path), "--min-events", "2000"],
        env=service_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # the children's CPU (forking, encoding, signing) is part of the run's CPU per event
    assert 0 < result["children_cpu_us_per_event"] < result["cpu_us_per_event"], result
    assert result["events"] == 2000 and result["checkpoints"] >= 1, result


def test_a_redis_run_needs_a_server() -> None:
    env = {k: v for k, v in service_env().items() if k != "STREAM_LEARNER_TEST_REDIS"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--store", "redis"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--store redis needs --redis URL" in proc.stderr
