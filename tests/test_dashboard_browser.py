"""The operator's page in a real headless browser (Debian's chromium, driven by Playwright).

A worker runs on the local transport (events fed on its standard input, a
concept that turns over half-way, a few unusable records); the test loads
``/`` and checks that every chart and table shows the figures the worker
exported: the page's document against ``/metrics``, and the rendered DOM
against the document. Then the run's files become a report
(``stream-learner report``), opened in the same browser with the same checks.
``tests/integration/test_dashboard_kafka.py`` does the same on the real broker.

Skipped when chromium or playwright is missing, unless
STREAM_LEARNER_REQUIRE_SERVERS=1 (then it fails). The browser is the system's
chromium (or STREAM_LEARNER_CHROMIUM); nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.page import (
    Worker,
    check_against_metrics,
    check_page,
    open_live,
    open_report,
    scrape,
    validate_document,
)
from tests.support.service import ROOT, run_service

BAD_LINES = [b"not json", b"[1]", b'{"id": "bad-1", "features": [1, 2]}']


class Feeder(threading.Thread):
    """Writes lines to the worker's stdin in chunks, then blank lines (which keep the loop
    turning while the input is open) until stopped; then closes it."""

    def __init__(self, proc: subprocess.Popen[bytes], lines: list[bytes], chunk: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.lines, self.chunk = proc, lines, chunk
        self.done = threading.Event()

    def run(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            for i in range(0, len(self.lines), self.chunk):
                stdin.write(b"".join(line + b"\n" for line in self.lines[i:i + self.chunk]))
                stdin.flush()
                time.sleep(0.25)
            while not self.done.is_set():
                stdin.write(b"\n" * 50)
                stdin.flush()
                time.sleep(0.1)
            stdin.close()
        except BrokenPipeError:
            pass


def demo_events(tmp_path: Path) -> list[bytes]:
    """The demo's stream, smaller: a concept change half-way, labels 20 events late."""
    path = tmp_path / "events.jsonl"
    run_service(["simulate", "--source", "agrawal", "--count", "6000", "--keys", "5",
                 "--drift-at", "3000", "--variants", "0,2", "--label-delay", "20",
                 "--seed", "7", "--output", str(path)])
    lines = path.read_bytes().splitlines()
    lines[1000:1000] = BAD_LINES  # a few unusable records, in the middle of the stream
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def test_live_page_and_report_of_a_local_run(browser: Any, tmp_path: Path) -> None:
    lines = demo_events(tmp_path)
    files = {name: tmp_path / f"{name}.jsonl" for name in
             ("predictions", "alerts", "metrics", "dead-letters", "learn-dead-letters")}
    worker = Worker(
        ["-c", str(ROOT / "config" / "demo.toml"), "--input", "-",
         "--output", str(files["predictions"])],
        tmp_path / "worker.log", stdin=True,
        service__batch_size="100", metrics__snapshot_interval_s="1",
        local__alerts=str(files["alerts"]), local__metrics=str(files["metrics"]),
        local__dead_letters=str(files["dead-letters"]),
        local__learn_dead_letters=str(files["learn-dead-letters"]),
    )
    feeder = Feeder(worker.proc, lines, 1000)
    feeder.start()
    try:
        doc = worker.settle(len(lines))
        validate_document(doc)
        assert any(a["severity"] == "drift" for a in doc["alerts"])  # raised during the run
        check_against_metrics(doc, scrape(worker.base + "/metrics"))
        dom, shown = open_live(browser, worker.base)
        validate_document(shown)
        check_page(dom, shown)
        live = shown
    finally:
        feeder.done.set()
        feeder.join(timeout=10)
        worker.stop()
    assert worker.proc.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

    report, as_json = tmp_path / "report.html", tmp_path / "report.json"
    run_service(["report", "--metrics", str(files["metrics"]),
                 "--predictions", str(files["predictions"]), "--labels", str(tmp_path / "events.jsonl"),
                 "--alerts", str(files["alerts"]), "--dead-letters", str(files["dead-letters"]),
                 "--learn-dead-letters", str(files["learn-dead-letters"]),
                 "-o", str(report), "--json", str(as_json)])
    doc = orjson.loads(as_json.read_bytes())
    validate_document(doc)
    check_page(open_report(browser, report), doc)
    # the report tells the same run as the live page did
    assert doc["totals"] == live["totals"]
    assert doc["dead_letters"] == live["dead_letters"]
    assert [a["offsets"] for a in doc["alerts"]] == [a["offsets"] for a in live["alerts"]]
    assert doc["partitions"][0]["online_metric"] == pytest.approx(
        live["partitions"][0]["online_metric"])
    assert doc["labels"]["coverage"] == pytest.approx(live["labels"]["coverage"])
    assert [m["n_learned"] for m in doc["models"]] == [m["n_learned"] for m in live["models"]]
