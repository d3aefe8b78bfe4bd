#!/usr/bin/env python3
"""Remake docs/dashboard.png: the live page of a worker running the demo's stream.

The demo's stream (scripts/demo.sh: 20,000 sensor events from 20 sensors, a
concept change at event 10,000, labels 50 events late) plus a few unusable
records is fed to ``stream-learner run`` on its standard input at a steady
rate, so that the charts have a few minutes' shape; near the end of the
stream, the page is loaded in the system's headless chromium and captured.

    python scripts/screenshot.py                      # writes docs/dashboard.png (~70 s)
    python scripts/screenshot.py --seconds 20 --out /tmp/page.png

Needs Debian's chromium (apt-get install chromium) and the dev extra (playwright);
no browser is downloaded.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
BAD = [b"not json", b"[1]", b'{"id": "x", "features": [1]}', b'{"features": {"a": 1}}']


def cli(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update({str(k): str(v) for k, v in kwargs.pop("env", {}).items()})  # type: ignore[attr-defined]
    return subprocess.Popen([sys.executable, "-m", "stream_learner", *args], env=env, **kwargs)  # type: ignore[call-overload, no-any-return]


def feed(stdin: object, lines: list[bytes], seconds: float, stop: threading.Event) -> None:
    """Write ``lines`` evenly over ``seconds``, then blank lines until ``stop``."""
    out = stdin  # a binary pipe
    per_tick = max(1, int(len(lines) / (seconds * 10)))
    for i in range(0, len(lines), per_tick):
        out.write(b"".join(line + b"\n" for line in lines[i:i + per_tick]))  # type: ignore[attr-defined]
        out.flush()  # type: ignore[attr-defined]
        time.sleep(0.1)
    while not stop.is_set():
        out.write(b"\n" * 50)  # type: ignore[attr-defined]
        out.flush()  # type: ignore[attr-defined]
        time.sleep(0.1)
    out.close()  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"))
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the stream lasts")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="dashboard-"))
    events = work / "events.jsonl"
    cli("simulate", "--source", "agrawal", "--count", "20000", "--keys", "20", "--drift-at",
        "10000", "--variants", "0,2", "--label-delay", "50", "--seed", "7", "--output",
        str(events), stderr=subprocess.DEVNULL).wait()
    lines = events.read_bytes().splitlines()
    for n, bad in enumerate(BAD):  # a few unusable records along the way
        lines.insert(3000 + 7000 * n, bad)
    worker = cli(
        "run", "-c", str(ROOT / "config" / "demo.toml"), "--input", "-", "--quiet",
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={"STREAM_LEARNER_METRICS__ENABLED": "true", "STREAM_LEARNER_METRICS__PORT": "0",
             "STREAM_LEARNER_SERVICE__BATCH_SIZE": "100", "STREAM_LEARNER_SERVICE__WORKER_ID":
             "worker-1", "STREAM_LEARNER_LOCAL__ALERTS": str(work / "alerts.jsonl"),
             "STREAM_LEARNER_LOCAL__DEAD_LETTERS": str(work / "dead-letters.jsonl"),
             "STREAM_LEARNER_LOCAL__LEARN_DEAD_LETTERS": str(work / "learn-dead-letters.jsonl")},
    )
    assert worker.stderr is not None and worker.stdin is not None
    port = 0
    for raw in worker.stderr:
        found = re.search(rb"metrics on http://[^:]+:(\d+)/metrics", raw)
        if found:
            port = int(found.group(1))
            break
    threading.Thread(target=lambda: [None for _ in worker.stderr], daemon=True).start()  # type: ignore[union-attr]
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(worker.stdin, lines, args.seconds, stop))
    feeder.start()
    time.sleep(args.seconds - 2)  # the stream is nearly done: every chart has its shape
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("body[data-rendered]")
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    stop.set()
    feeder.join()
    worker.wait(timeout=60)
    print(f"wrote {args.out} (work files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
