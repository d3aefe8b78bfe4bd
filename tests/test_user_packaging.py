"""The wheel a user installs: example configs, the license, metadata without warnings."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.service import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-v", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("stream_learner-*.whl")
    return path, proc.stdout + proc.stderr


def test_wheel_ships_the_example_configs(wheel: tuple[Path, str]) -> None:
    names = set(zipfile.ZipFile(wheel[0]).namelist())
    for config in sorted((ROOT / "config").glob("*.toml")):
        assert f"stream_learner/config/{config.name}" in names, sorted(names)


def test_wheel_ships_every_module_of_the_package(wheel: tuple[Path, str]) -> None:
    names = set(zipfile.ZipFile(wheel[0]).namelist())
    package = ROOT / "stream_learner"
    modules = sorted(p.relative_to(ROOT).as_posix() for p in package.rglob("*.py"))
    assert [m for m in modules if m not in names] == []


def test_wheel_has_the_license_file_and_an_spdx_expression(wheel: tuple[Path, str]) -> None:
    archive = zipfile.ZipFile(wheel[0])
    licenses = [n for n in archive.namelist() if n.endswith("/LICENSE")]
    assert licenses, archive.namelist()
    assert archive.read(licenses[0]) == (ROOT / "LICENSE").read_bytes()
    metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    text = archive.read(metadata).decode()
    assert "License-Expression: BSD-3-Clause" in text


def test_build_gives_no_license_deprecation_warning(wheel: tuple[Path, str]) -> None:
    assert "project.license` as a TOML table is deprecated" not in wheel[1]
