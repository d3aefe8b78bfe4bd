"""The documentation lists what the code does: every reason code, both outputs."""

from __future__ import annotations

import re

from stream_learner.events import INPUT_REASONS, LEARN_REASONS, REASONS
from stream_learner.metrics import Metrics
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
