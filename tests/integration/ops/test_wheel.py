"""The server's wheel carries what an installed `meter` reads from its own package: the
migrations and the example catalogue `meter dev` seeds the emulator with."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _uv() -> list[str]:
    if "UV" in os.environ:
        return shlex.split(os.environ["UV"])
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [*_uv(), "build", "--package", "meter", "--wheel", "--out-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [built] = out.glob("meter-*.whl")
    return built


def test_the_wheel_carries_the_example_catalogue(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("meter/_data/catalogue.example.yaml")
    assert packaged == (ROOT / "deploy" / "catalogue.example.yaml").read_bytes()


def test_the_wheel_carries_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {f"meter/_migrations/{p.name}" for p in (ROOT / "migrations").glob("*.sql")}
    assert expected
    assert expected <= names


def test_the_wheel_carries_every_process_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for package in ("meter", "aggregator", "reporter", "notifier"):
        assert f"{package}/__init__.py" in names, package
    assert "notifier/worker.py" in names
