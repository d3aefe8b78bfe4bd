"""The operator's page in a headless browser, and the figures it must show.

Used by tests/test_dashboard_browser.py (local transport) and
tests/integration/test_dashboard_kafka.py (real broker); the ``browser``
fixture is in tests/conftest.py.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from tests.support.service import service_command, service_env


def validate_document(doc: dict[str, Any]) -> None:
    """Fail unless ``doc`` follows stream_learner/schemas/dashboard.json."""
    text = (importlib.resources.files("stream_learner") / "schemas" / "dashboard.json").read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(doc)


#: Debian's chromium (STREAM_LEARNER_CHROMIUM names another executable)
CHROMIUM = os.environ.get("STREAM_LEARNER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def browser_unavailable() -> str:
    """Why the page tests cannot run here (empty: they can)."""
    if not Path(CHROMIUM).exists():
        return f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return ""


# -- reading what the page shows ------------------------------------------------------------

#: Everything the page shows, read in one go (the live page re-renders every 2 s).
READ_DOM = """() => {
  const text = e => e ? e.textContent.trim() : null;
  const out = {rendered: Number(document.body.dataset.rendered), kpis: {}, tables: {}, charts: {}};
  for (const e of document.querySelectorAll("[data-kpi]")) out.kpis[e.dataset.kpi] = text(e);
  for (const t of document.querySelectorAll("table[data-table]")) {
    const rows = {};
    for (const tr of t.querySelectorAll("tr[data-row]")) {
      const cells = {};
      for (const td of tr.querySelectorAll("td[data-field]"))
        if (td.dataset.field) cells[td.dataset.field] = text(td);
      rows[tr.dataset.row] = cells;
    }
    out.tables[t.dataset.table] = rows;
  }
  for (const f of document.querySelectorAll("figure[data-chart]")) {
    const lines = {}, last = {};
    for (const l of f.querySelectorAll("polyline[data-series]")) lines[l.dataset.series] = Number(l.dataset.points);
    for (const b of f.querySelectorAll("[data-last]")) last[b.dataset.last] = text(b);
    const marks = [...f.querySelectorAll("[data-severity]")].map(m => [m.dataset.severity, m.dataset.signal]);
    const counts = {};
    for (const b of f.querySelectorAll("[data-count]")) counts[b.dataset.count] = Number(text(b));
    out.charts[f.dataset.chart] = {points: Number(f.dataset.points), lines, last, marks, counts};
  }
  return out;
}"""


def number(text: str) -> float | None:
    """A figure as the page prints it (1,234 / 0.6123 / 98.50% / a dash for none)."""
    if text in ("\u2013", "", None):
        return None
    if text.endswith("%"):
        return float(text[:-1]) / 100.0
    return float(text.replace(",", ""))


def same(shown: str, value: float | None, rel: float = 1e-3, abs_: float = 1e-4) -> bool:
    """The page shows ``value`` (to the precision it prints)."""
    got = number(shown)
    if value is None or got is None:
        return got is None and value is None
    if isinstance(value, int) and not shown.endswith("%"):  # counts are printed exactly
        return got == value
    return got == pytest.approx(value, rel=rel, abs=abs_)


def last_value(points: list[Any]) -> Any:
    values = [v for v in points if v is not None]
    return values[-1] if values else None


def check_page(dom: dict[str, Any], doc: dict[str, Any]) -> None:
    """Each chart and table of the rendered page shows the document's figures."""
    assert dom["rendered"] == pytest.approx(doc["generated_at"], abs=1e-6)
    totals = doc["totals"]
    for key in ("records", "predictions", "label_records", "labels_learned", "dead_letters"):
        assert same(dom["kpis"][key], totals[key]), (key, dom["kpis"][key], totals[key])
    assert same(dom["kpis"]["coverage"], doc["labels"]["coverage"])
    assert same(dom["kpis"]["alerts"], len(doc["alerts"]))
    series = doc["series"]
    charts = dom["charts"]
    # throughput and latency: one point per sample, the last value in the legend
    assert charts["throughput"]["points"] == len(series) > 1
    assert same(charts["throughput"]["last"]["records/s"],
                last_value([p["records_per_s"] for p in series]))
    for q in ("p50", "p99"):
        values = [p[f"latency_{q}_ms"] for p in series]
        assert charts["latency"]["lines"][q] == sum(v is not None for v in values) > 0
        assert same(charts["latency"]["last"][q], last_value(values))
    # online metric and lag over time: one line per shard
    for chart, field in (("online_metric", "online_metric"), ("lag", "lag_records")):
        for part in doc["partitions"]:
            values = [p[field].get(str(part["partition"])) for p in series]
            assert charts[chart]["lines"][part["shard"]] == sum(v is not None for v in values)
            assert same(charts[chart]["last"][part["shard"]], last_value(values))
    tables = dom["tables"]
    for part in doc["partitions"]:
        row = tables["lag"][str(part["partition"])]
        assert row["shard"] == part["shard"]
        for field in ("lag_records", "lag_seconds", "online_metric"):
            assert same(row[field], part[field]), (field, row[field], part[field])
        row = tables["label_partitions"][str(part["partition"])]
        assert same(row["label_coverage"], part["label_coverage"])
        assert same(row["pending_predictions"], part["pending_predictions"])
        assert same(row["mean_delay_events"], part["mean_delay_events"])
    labels = tables["labels"]
    assert same(labels["coverage"]["value"], doc["labels"]["coverage"])
    assert same(labels["labels joined"]["value"], doc["labels"]["labelled"])
    for name, key in (("events", "delay_events"), ("seconds", "delay_seconds")):
        p50, p99 = labels[f"delay p50 / p99 ({name})"]["value"].split(" / ")
        assert same(p50, doc["labels"][key]["p50"]) and same(p99, doc["labels"][key]["p99"])
    shown_dead = {k: number(v["count"]) for k, v in tables.get("dead_letters", {}).items()}
    assert shown_dead == {f"{d['output']}/{d['reason']}": d["count"] for d in doc["dead_letters"]}
    for model in doc["models"]:
        row = tables["models"][model["shard"]]
        assert row["name"] == model["name"] and row["challenger"] == model["challenger"]
        assert number(row["version"]) == model["version"]
        assert number(row["generation"]) == model["generation"]
        assert number(row["n_learned"]) == model["n_learned"]
    # the drift timeline: one mark per alert, counted by severity
    timeline = charts["timeline"]
    assert len(timeline["marks"]) == len(doc["alerts"])
    by_severity = Counter(a["severity"] for a in doc["alerts"])
    assert timeline["counts"] == {s: by_severity.get(s, 0) for s in
                                  ("warning", "drift", "resolved", "info")}
    assert Counter(tuple(m) for m in timeline["marks"]) == Counter(
        (a["severity"], a["signal"]) for a in doc["alerts"])
    shown_alerts = tables["alerts"]
    assert len(shown_alerts) == min(50, len(doc["alerts"]))
    newest = doc["alerts"][-1]
    assert shown_alerts["0"]["series"] == newest["series"]
    assert shown_alerts["0"]["detector"] == newest["detector"]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in metrics.items()
               if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def check_against_metrics(doc: dict[str, Any], metrics: dict[Any, float]) -> None:
    """The document says what /metrics says (both read once the worker has settled)."""
    totals = doc["totals"]
    assert totals["records"] == total(metrics, "stream_learner_records_total")
    assert totals["predictions"] == total(metrics, "stream_learner_records_total",
                                          outcome="prediction")
    assert totals["dead_letters"] == total(metrics, "stream_learner_records_total",
                                           outcome="dead_letter") > 0
    assert totals["labels_learned"] == total(metrics, "stream_learner_labels_learned_total") > 0
    for part in doc["partitions"]:
        p = str(part["partition"])
        assert part["lag_records"] == total(metrics, "stream_learner_consumer_lag_records",
                                            partition=p)
        assert part["label_coverage"] == pytest.approx(
            total(metrics, "stream_learner_label_coverage_ratio", partition=p))
        assert part["online_metric"] == pytest.approx(
            total(metrics, "stream_learner_online_metric", partition=p))
    dead = {(d["output"], d["reason"]): d["count"] for d in doc["dead_letters"]}
    exported = {(dict(ls)["output"], dict(ls)["reason"]): v for (n, ls), v in metrics.items()
                if n == "stream_learner_dead_letters_total" and v}
    assert dead == exported
    for severity in ("warning", "drift", "resolved", "info"):
        assert sum(a["severity"] == severity for a in doc["alerts"]) == total(
            metrics, "stream_learner_drift_alerts_total", severity=severity)
    assert sum(m["n_learned"] for m in doc["models"]) == totals["labels_learned"]


def open_live(browser: Any, base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the live page; return (what it rendered, the document it rendered)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    docs: dict[float, dict[str, Any]] = {}

    def keep(response: Any) -> None:
        if response.url.endswith("/api/v1/dashboard") and response.ok:
            doc = response.json()
            docs[doc["generated_at"]] = doc

    page.on("response", keep)
    try:
        page.goto(base + "/")
        page.wait_for_selector("body[data-rendered]", timeout=20_000)
        dom = page.evaluate(READ_DOM)
        assert not errors, errors
        assert page.locator("#status").get_attribute("class") == "ok"
        return dom, docs[dom["rendered"]]
    finally:
        page.close()


def open_report(browser: Any, path: Path) -> dict[str, Any]:
    """Load a report file offline; return what it rendered."""
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-rendered]", timeout=20_000)
        dom: dict[str, Any] = page.evaluate(READ_DOM)
        assert not errors, errors
        assert requests == [path.as_uri()]  # self-contained: nothing else is fetched
        return dom
    finally:
        page.close()


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        doc: dict[str, Any] = orjson.loads(response.read())
    return doc


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.25)


class Worker:
    """``stream-learner run`` with its metrics port on a free port, found in its log."""

    def __init__(self, args: list[str], log: Path, stdin: bool = False, **settings: str) -> None:
        env = service_env(metrics__enabled="true", metrics__port="0", **settings)
        self.proc = subprocess.Popen(
            service_command("run", *args), env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        )
        self.log = log
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: self.port > 0 or self.proc.poll() is not None, 60, "the metrics port")
        if not self.port:
            pytest.fail(f"worker exited {self.proc.returncode}:\n{log.read_text()[-3000:]}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.log.open("ab") as out:
            for line in self.proc.stderr:
                out.write(line)
                out.flush()
                found = re.search(rb"metrics on http://[^:]+:(\d+)/metrics", line)
                if found:
                    self.port = int(found.group(1))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def processed(self) -> float:
        return total(scrape(self.base + "/metrics"), "stream_learner_records_total")

    def settle(self, n_records: int) -> dict[str, Any]:
        """Wait until ``n_records`` are processed and the page's document shows them."""
        wait_until(lambda: self.processed() >= n_records, 120, f"{n_records} records")
        wait_until(lambda: get_json(self.base + "/api/v1/dashboard")["totals"]["records"]
                   >= n_records, 30, "a sample with every record")
        return get_json(self.base + "/api/v1/dashboard")

    def stop(self, grace_s: float = 30.0) -> None:
        """Let the worker end by itself (end of input) for ``grace_s``, else SIGTERM it."""
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
