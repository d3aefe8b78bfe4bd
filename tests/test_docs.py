"""The documentation lists what the code does: every reason code, both outputs."""

from __future__ import annotations

import re

from stream_learner.events import INPUT_REASONS, LEARN_REASONS, REASONS
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.settings import ModelSettings
from tests.support.service import ROOT


def test_errors_doc_has_one_row_per_reason_code_with_its_output() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (dead_letters|learn_dead_letters) \|", text, re.M))
    assert sorted(rows) == sorted(REASONS)
    assert {r for r, out in rows.items() if out == "dead_letters"} == set(INPUT_REASONS)
    assert {r for r, out in rows.items() if out == "learn_dead_letters"} == set(LEARN_REASONS)


def test_errors_doc_names_the_real_metrics() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    names = {m.name for m in Metrics().registry.collect()}
    for metric in re.findall(r"`(stream_learner_[a-z_]+?)(?:_total)?[{`]", text):
        assert metric in names, metric


def test_operations_doc_lists_every_metric_with_its_type_and_labels() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## Metrics reference", 1)[1].split("\n## ", 1)[0]
    rows = {
        name: (kind, tuple(re.findall(r"`(\w+)`", labels)))
        for name, kind, labels in re.findall(
            r"^\| `(stream_learner_\w+)` \| (\w+) \| ([^|]*) \|", section, re.M)
    }
    metrics = Metrics()
    metrics.set_info(ModelSpec.from_settings(ModelSettings()))
    # an info metric's labels are its values: read them from what is served
    served = {s.name: tuple(s.labels) for f in metrics.registry.collect() for s in f.samples
              if s.name.endswith("_info")}
    expected = {}
    for metric in vars(metrics).values():
        kind = getattr(metric, "_type", None)
        if kind is None:
            continue
        name = metric._name + {"counter": "_total", "info": "_info"}.get(kind, "")
        labels = tuple(metric._labelnames)
        expected[name] = (kind, served[name] if kind == "info" else labels)
    assert rows == expected


def test_readme_links_the_error_and_security_pages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/errors.md)" in readme and "(docs/security.md)" in readme
    assert (ROOT / "docs" / "security.md").is_file()


def test_every_relative_link_in_the_docs_points_to_a_file() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_readme_starts_with_the_two_commands_and_needs_no_system_pip() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    demo = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    # a Debian python3 refuses `pip install` outside a virtual environment
    assert '-m venv "$VENV"' in demo and '"$PY" -m pip install' in demo
    assert not re.search(r"^\s*(python3?|pip3?) (-m pip )?install", demo, re.M)
