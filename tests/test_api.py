"""The in-process API: the README's example runs as printed; the names are public."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import stream_learner
from stream_learner import LocalStore, MemorySink, MemorySource, build_service, run
from stream_learner.errors import SettingsError
from tests.support.service import ROOT


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The operator's page, run reports and the Python API", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the README's API section has no python example"
    return found.group(1)


def test_readme_example_runs_and_prints_what_it_says() -> None:
    code = readme_example()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"page at http://127\.0\.0\.1:\d+/", lines[0])
    # each "print(...)  # expected" line of the example prints what its comment says
    expected = [line.split("# ", 1)[1] for line in code.splitlines()
                if line.startswith("print(") and "# " in line]
    assert lines[1:] == expected == ["2 1", "{'name': 'pumps', 'version': 1, 'n_learned': 1}"]


def test_public_names_are_listed_and_importable() -> None:
    for name in stream_learner.__all__:
        assert getattr(stream_learner, name) is not None, name
    with pytest.raises(AttributeError):
        stream_learner.NoSuchThing  # noqa: B018


def test_checkpoint_store_object_needs_a_key_and_restores_state(tmp_path: Path) -> None:
    events = [b'{"id": %d, "features": {"x": %d}, "label": %d}' % (i, i, 2 * i) for i in range(50)]
    with pytest.raises(SettingsError, match="signing key"):
        build_service(source=MemorySource({("events", 0): events}), sink=MemorySink(),
                      store=LocalStore(str(tmp_path)), environ={})
    key = b"k" * 32
    first = run(source=MemorySource({("events", 0): events[:30]}), sink=MemorySink(),
                store=LocalStore(str(tmp_path)), signing_key=key, environ={})
    assert first.predictions == 30
    # the next run starts from the checkpoint: it has learned 30 labels already
    sink = MemorySink()
    source = MemorySource({("events", 0): events})
    source.committed_offsets[("events", 0)] = 30
    run(source=source, sink=sink, store=LocalStore(str(tmp_path)), signing_key=key, environ={})
    predictions = sink.decoded("predictions")
    assert predictions[0]["source"]["offset"] == 30
    assert predictions[0]["model"]["n_learned"] == 30


def test_a_signing_key_given_as_text_signs_like_its_utf8_bytes(tmp_path: Path) -> None:
    # a str passed the length check, then failed at the first checkpoint with a TypeError
    events = [b'{"id": %d, "features": {"x": %d}, "label": %d}' % (i, i, 2 * i) for i in range(20)]
    run(source=MemorySource({("events", 0): events}), sink=MemorySink(),
        store=LocalStore(str(tmp_path)), signing_key="k" * 32, environ={})
    sink = MemorySink()
    source = MemorySource({("events", 0): events})
    source.committed_offsets[("events", 0)] = 20
    run(source=source, sink=sink, store=LocalStore(str(tmp_path)), signing_key=b"k" * 32,
        environ={})
    assert sink.decoded("predictions") == []  # resumed at 20 from the checkpoint it verified
    with pytest.raises(SettingsError, match="signing key"):
        build_service(source=MemorySource({("events", 0): events}), sink=MemorySink(),
                      store=LocalStore(str(tmp_path)), signing_key="short", environ={})


def test_settings_as_nested_values_are_validated() -> None:
    with pytest.raises(SettingsError, match="batch_siz"):
        build_service({"service": {"batch_siz": 1}}, source=MemorySource({}), sink=MemorySink())


def test_start_step_finish_is_the_run_loop() -> None:
    events = [b'{"id": %d, "features": {"x": %d}, "label": %d}' % (i, i % 7, i % 5)
              for i in range(60)] + [b"not json"]
    settings = {"service": {"batch_size": 8}}
    ran_sink = MemorySink()
    ran = build_service(settings, source=MemorySource({("events", 0): events}), sink=ran_sink,
                        environ={}).run()
    sink = MemorySink()
    service = build_service(settings, source=MemorySource({("events", 0): events}), sink=sink,
                            environ={})
    service.start()
    steps = 0
    while service.step():
        steps += 1
        assert service.summary.records == min(8 * steps, len(events))  # one poll batch each
    stepped = service.finish()
    assert steps == 8  # 61 records in batches of 8
    def timeless(sink: MemorySink, output: str) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k not in ("latency_ms", "at")}
                for r in sink.decoded(output)]

    assert timeless(sink, "predictions") == timeless(ran_sink, "predictions")
    assert len(ran_sink.decoded("predictions")) == 60
    assert sink.values("dead_letters") == ran_sink.values("dead_letters") == [b"not json"]
    assert stepped.predictions == ran.predictions == 60 and stepped.dead_letters == 1
