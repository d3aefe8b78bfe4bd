"""``stream-learner run`` settles the heap once before its loop: start-up objects leave the collector.

Freezing is process-wide, so each check runs in a subprocess of its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.service import ROOT, service_env


def _python(code: str, cwd: Path, **env: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], env=service_env(**env), cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_settle_heap_moves_start_up_objects_out_of_the_collectors_sight() -> None:
    out = _python(
        "import gc\n"
        "from stream_learner import cli\n"
        "tracked = len(gc.get_objects())\n"
        "cli.settle_heap()\n"
        "print(tracked, gc.get_freeze_count(), len(gc.get_objects()), gc.isenabled(),\n"
        "      gc.get_threshold()[0])\n",
        ROOT,
    )
    tracked, frozen, left, enabled, young = out.split()
    assert int(tracked) > 10_000  # River, NumPy, SciPy and the Kafka client are loaded
    assert int(frozen) > 0.9 * int(tracked)
    assert int(left) < 0.01 * int(frozen)
    assert enabled == "True"  # collection still runs, for what the service allocates
    assert int(young) == 10_000


def test_run_settles_the_heap_once_before_the_first_record(tmp_path: Path) -> None:
    out = _python(
        "import gc\n"
        "from stream_learner import cli, service\n"
        "real_run, real_settle = service.Service.run, cli.settle_heap\n"
        "def settle():\n"
        "    print('settled', flush=True)\n"
        "    real_settle()\n"
        "def run(self, **kwargs):\n"
        "    print('loop', gc.get_freeze_count() > 0, flush=True)\n"
        "    return real_run(self, **kwargs)\n"
        "cli.settle_heap, service.Service.run = settle, run\n"
        "raise SystemExit(cli.main(['run']))\n",
        tmp_path,
        local__input="river:Phishing", local__output=str(tmp_path / "predictions.jsonl"),
        metrics__enabled="false",
        # Phishing is a classification dataset: the default regression model rejects its labels
        model__task="classification",
        model__pipeline='[{step = "linear_model.LogisticRegression"}]',
    )
    assert out.split("\n")[:2] == ["settled", "loop True"]
    assert (tmp_path / "predictions.jsonl").read_bytes().count(b"\n") == 1250  # Phishing's size


def test_a_fleet_of_long_lived_models_grows_without_full_collections() -> None:
    # 4,000,000 long-lived objects, about what 100,000 per-key models hold, made in
    # 40 steps; the same growth is made again with Python's default for full
    # collections (10 collections of the middle generation)
    out = _python(
        "import gc\n"
        "from stream_learner import cli\n"
        "cli.settle_heap()\n"
        "full = []\n"
        "gc.callbacks.append(lambda phase, info: phase == 'stop'\n"
        "                    and info['generation'] == 2 and full.append(1))\n"
        "def grow():\n"
        "    full.clear()\n"
        "    kept = [[[] for _ in range(100_000)] for _ in range(40)]\n"
        "    return len(full)\n"
        "shipped = grow()\n"
        "gc.collect()\n"
        "gc.set_threshold(cli.GC_YOUNG_THRESHOLD, 10, 10)\n"
        "print(shipped, grow())\n",
        ROOT,
    )
    shipped, python_default = map(int, out.split())
    assert shipped == 0
    assert python_default >= 2  # the growth does trigger full collections there
