"""The package's layers: no module imports from a layer above its own.

Every module of ``stream_learner/`` belongs to one layer of :data:`LAYERS`,
lowest first; a module may import from its own layer and the layers below.
Imports are read from the source with :mod:`ast`, at module level and inside
functions; those under ``if TYPE_CHECKING:`` are left out, since they never
run. The pure core also imports no I/O, clock or randomness library
(:data:`NOT_IN_CORE`). README.md's "Layout" paragraph names the same layers,
in the same order, one parenthesised list of modules per layer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stream_learner"

#: layer name -> its modules, lowest layer first (``kafka/`` stands for every
#: module of the subpackage; ``__init__`` is the package's own, lazy, facade)
LAYERS: dict[str, set[str]] = {
    "base": {"__init__", "errors", "settings", "client_options", "retrying"},
    "core": {"events", "models", "tasks", "learner", "labels", "scopes", "slot_codec", "drift/"},
    "edges": {"sources", "sinks", "commits", "stores", "metrics", "datasets", "testing", "kafka/", "dashboard/"},
    "state": {"checkpoint", "keyed_state", "write_behind", "recovery", "guard", "admin"},
    "loop": {"service", "reporting", "summary"},
    "batch": {"replay", "backtest", "simulate"},
    "entry": {"api", "cli", "health", "__main__"},
}

#: top-level libraries the pure core must not import: I/O, clients, clocks, randomness
NOT_IN_CORE = {
    "confluent_kafka", "fcntl", "http", "io", "kafka", "logging", "os", "pathlib",
    "prometheus_client", "random", "redis", "shutil", "socket", "sqlite3", "subprocess",
    "tempfile", "threading", "time", "tqdm", "urllib",
}


def _module_name(path: Path) -> str:
    """``stream_learner/kafka/confluent.py`` -> ``kafka.confluent``; ``__init__.py`` -> its package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _group(module: str) -> str:
    """The entry of :data:`LAYERS` that names ``module`` (a subpackage as ``name/``)."""
    return module.split(".")[0] + "/" if "." in module or f"{module}/" in _ALL else module


_ALL = set().union(*LAYERS.values())
_RANK = {name: rank for rank, modules in enumerate(LAYERS.values()) for name in modules}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:``."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for child in node.body for n in ast.walk(child))
    return ids


def imports(module: str) -> tuple[set[str], set[str]]:
    """The package modules and the top-level outside libraries ``module`` imports at run time.

    Parameters
    ----------
    module
        A key of :data:`MODULES`.

    Returns
    -------
    tuple of set of str
        Package modules (as keys of :data:`MODULES`) and outside libraries.
    """
    tree = ast.parse(MODULES[module].read_text())
    skip = _type_checking_only(tree)
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: the package imports absolutely, as this check reads"
            targets = [(node.module or "", alias.name) for alias in node.names]
        else:
            continue
        for origin, name in targets:
            if origin != "stream_learner" and not origin.startswith("stream_learner."):
                outside.add(origin.split(".")[0])
                continue
            dotted = origin.removeprefix("stream_learner").lstrip(".")
            candidate = f"{dotted}.{name}".lstrip(".") if name else dotted
            inside.add(candidate if candidate in MODULES else dotted or "__init__")
    inside.discard(module)
    return inside, outside


def test_every_module_has_one_layer() -> None:
    named = [_group(m) for m in MODULES]
    assert sorted(set(named) - _ALL) == [], "modules in no layer: add them to LAYERS and README"
    assert sorted(_ALL - set(named)) == [], "LAYERS names modules that do not exist"
    assert sum(len(m) for m in LAYERS.values()) == len(_ALL), "a module is in two layers"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_goes_up_a_layer(module: str) -> None:
    inside, _ = imports(module)
    rank = _RANK[_group(module)]
    layer = list(LAYERS)[rank]
    upward = sorted(
        f"{target} ({list(LAYERS)[_RANK[_group(target)]]})"
        for target in inside
        if _RANK[_group(target)] > rank
    )
    assert upward == [], f"{module} ({layer}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _group(m) in LAYERS["core"]))
def test_pure_core_imports_no_io_library(module: str) -> None:
    _, outside = imports(module)
    assert sorted(outside & NOT_IN_CORE) == []


def test_readme_layout_names_the_layers_in_order() -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("Layout: ")
    end = text.find("\n\n", start)
    paragraph = text[start : end if end >= 0 else len(text)]
    lists = [
        set(re.findall(r"`([\w/]+)`", inner)) for inner in re.findall(r"\(([^()]*)\)", paragraph)
    ]
    groups = [names for names in lists if names]
    assert groups == list(LAYERS.values())


def test_the_check_sees_imports_inside_functions_and_skips_type_checking() -> None:
    # dashboard.history imports dashboard.page inside a method, recovery only for types
    inside, outside = imports("dashboard.history")
    assert "dashboard.page" in inside
    assert "recovery" not in inside
    assert "prometheus_client" in outside
    # `from stream_learner import __version__` is the package facade, not a module
    assert "__init__" in imports("checkpoint")[0]
    # `from stream_learner.kafka import confluent` names the submodule
    assert {"kafka.confluent", "kafka.kafka_python"} <= imports("kafka.factory")[0]
