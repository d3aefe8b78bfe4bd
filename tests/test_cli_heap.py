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


def test_per_key_models_make_no_cyclic_garbage() -> None:
    # why full collections may wait: a keyed learner's loop (events, parks, loads)
    # leaves nothing for the collector, and what its models hold is freed by reference
    # counting (the cycles found when a learner is dropped do not grow with its keys)
    out = _python(
        "import gc\n"
        "import orjson\n"
        "from stream_learner.events import Codec, Origin\n"
        "from stream_learner.learner import Learner\n"
        "from stream_learner.models import ModelSpec\n"
        "from stream_learner.settings import load_settings\n"
        "from tests.support.streams import friedman\n"
        "settings = load_settings(None, env={}, overrides={'model': {'scope': 'key',\n"
        "                                                            'max_resident': 50}})\n"
        "spec = ModelSpec.from_settings(settings.model)\n"
        "codec = Codec(settings.schema_, settings.limits, spec.task)\n"
        "def run(keys):\n"
        "    learner = Learner(spec, settings.labels, settings.drift)\n"
        "    records = [orjson.dumps(e) for e in friedman(10 * keys, keys)]\n"
        "    gc.collect()\n"
        "    gc.disable()\n"
        "    for i, record in enumerate(records):\n"
        "        learner.process(codec.decode(record, None, 0, Origin('events', 0, i)))\n"
        "    running = gc.collect()\n"
        "    n_keys = learner.models.n_keys\n"
        "    del learner\n"
        "    return n_keys, running, gc.collect()\n"
        "print(*run(100), *run(400))\n",
        ROOT,
    )
    small_keys, small_running, small_dropped, big_keys, big_running, big_dropped = map(
        int, out.split())
    assert (small_keys, big_keys) == (100, 400)  # 50 in memory: parked and loaded back
    assert (small_running, big_running) == (0, 0)
    assert small_dropped == big_dropped
