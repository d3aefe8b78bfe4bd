#!/usr/bin/env bash
# The whole product on the embedded default in under a minute: a simulated
# sensor stream with a concept drift at event 10,000 and labels arriving 50
# events late, scored and learned by `stream-learner run` (JSON Lines in and
# out, no Kafka, no Redis), then what an operator sees: the summary, the
# predictions, the drift alerts and a metrics snapshot.
#
#   scripts/demo.sh              # work files in a temporary folder
#   scripts/demo.sh DIR          # ... or in DIR (kept; its outputs are overwritten)
#
# Needs only Python 3.11+ with the venv module: it creates .venv in the source
# tree (as scripts/test.sh does) and installs stream-learner there, so nothing
# is installed into the system Python (a Debian or Ubuntu python3 refuses pip
# with "externally-managed-environment"). PYTHON=... picks the interpreter.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import stream_learner.cli' 2>/dev/null; then
  echo "== installing stream-learner into $VENV (once)"
  "$PY" -m pip install -q --disable-pip-version-check -e "$ROOT"
fi
# Run this source tree's CLI with the environment's dependencies.
cli() { PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m stream_learner "$@"; }

echo "== simulating 20,000 sensor events (20 sensors, drift at 10,000, labels 50 events late)"
cli simulate --source agrawal --count 20000 --keys 20 --drift-at 10000 --variants 0,2 \
    --label-delay 50 --seed 7 --output "$WORK/events.jsonl"

echo "== scoring and learning with the local transport"
STREAM_LEARNER_LOCAL__DEAD_LETTERS="$WORK/dead-letters.jsonl" \
STREAM_LEARNER_LOCAL__LEARN_DEAD_LETTERS="$WORK/learn-dead-letters.jsonl" \
STREAM_LEARNER_LOCAL__ALERTS="$WORK/alerts.jsonl" \
STREAM_LEARNER_LOCAL__METRICS="$WORK/metrics.jsonl" \
STREAM_LEARNER_METRICS__SNAPSHOT_INTERVAL_S=0.5 \
cli run -c "$ROOT/config/demo.toml" --input "$WORK/events.jsonl" \
    --output "$WORK/predictions.jsonl" --summary-json "$WORK/summary.json" 2>&1 \
    | grep -v -E " (INFO|WARNING) "

echo "== first predictions ($WORK/predictions.jsonl)"
head -n 3 "$WORK/predictions.jsonl"

echo "== online accuracy before and after the drift (from the predictions and the labels)"
"$PY" - "$WORK" <<'PY'
import sys, orjson
work = sys.argv[1]
labels = {}
for line in open(f"{work}/events.jsonl", "rb"):
    r = orjson.loads(line)
    if "features" not in r:
        labels[r["id"]] = r["label"]
for lo, hi in ((0, 10000), (10000, 11000), (11000, 20000)):
    hits = n = 0
    for line in open(f"{work}/predictions.jsonl", "rb"):
        p = orjson.loads(line)
        if lo <= p["id"] < hi:
            n += 1
            hits += p["prediction"] == labels[p["id"]]
    print(f"  events {lo:>6,}..{hi - 1:>6,}: accuracy {hits / n:.3f}")
PY

echo "== drift alerts ($WORK/alerts.jsonl)"
"$PY" - "$WORK" <<'PY'
import os, sys, orjson
path = os.path.join(sys.argv[1], "alerts.jsonl")
alerts = [orjson.loads(line) for line in open(path, "rb")] if os.path.exists(path) else []
from collections import Counter
drifts = [a for a in alerts if a["severity"] == "drift"]
print(f"  {len(alerts)} alert records; confirmed drifts by signal: "
      f"{dict(Counter(a['signal'] for a in drifts))}")
for a in [a for a in drifts if a["signal"] == "error"][:5]:
    print(f"  drift on the error stream ({a['detector']}): records "
          f"{a['offsets']['from']}..{a['offsets']['to']} of the input, "
          f"mean error {a['window']['mean']:.3f} over its last {a['window']['n']} labels")
PY

echo "== last metrics snapshot ($WORK/metrics.jsonl)"
tail -n 1 "$WORK/metrics.jsonl" 2>/dev/null | cut -c1-400 || echo "  (none)"
echo "== work files in $WORK"
