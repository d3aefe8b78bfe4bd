"""The worked examples of docs/tasks.md are real: run each one and compare."""

from __future__ import annotations

import re
import tomllib

import orjson
import pytest

from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import Settings
from stream_learner.testing import MemorySink, MemorySource
from tests.support.service import ROOT

DOC = (ROOT / "docs" / "tasks.md").read_text(encoding="utf-8")
SECTIONS = {
    title: body
    for title, body in re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    if "```toml" in body
}


def _blocks(body: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", body, re.S)


def test_every_task_has_a_worked_example() -> None:
    assert sorted(SECTIONS) == ["Anomaly detection", "Classification", "Forecasting", "Regression"]


@pytest.mark.parametrize("title", sorted(SECTIONS))
def test_worked_example_gives_the_documented_predictions(title: str) -> None:
    body = SECTIONS[title]
    (config,) = _blocks(body, "toml")
    records, documented = _blocks(body, "jsonl")
    settings = Settings.model_validate(tomllib.loads(config))
    assert settings.model.task in title.lower() or title == "Anomaly detection"
    source = MemorySource({("events", 0): [line.encode() for line in records.splitlines()]})
    sink = MemorySink()
    summary = Service(settings, ModelSpec.from_settings(settings.model), source, sink).run()
    assert summary.dead_letters == 0
    got = sink.decoded("predictions")
    for prediction in got:
        del prediction["latency_ms"]
    assert got == [orjson.loads(line) for line in documented.splitlines()]
