"""meter-client is a distribution of its own: its wheel builds from this repository, declares
none of the server's dependencies and works installed alone in a fresh virtualenv."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVER_ONLY = ("asyncpg", "redis", "stripe", "apscheduler", "uvloop", "orjson", "meter")


def _uv() -> list[str]:
    if "UV" in os.environ:
        return shlex.split(os.environ["UV"])
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def run_uv(*args: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [*_uv(), *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run_uv("build", "--package", "meter-client", "--wheel", "--out-dir", out)
    [built] = out.glob("meter_client-*.whl")
    return built


def _requirement_names(metadata: str) -> list[str]:
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.MULTILINE)
    return [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0].lower() for r in requires]


def test_the_wheel_requires_none_of_the_server_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata_path] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_path).decode()
    assert re.search(r"^Name: meter-client$", metadata, flags=re.MULTILINE)
    required = _requirement_names(metadata)
    assert required == ["aiohttp"]
    assert not set(required) & set(SERVER_ONLY)
    # Only the client's own package: no server module travels with it.
    assert {n.split("/")[0] for n in names} == {"meter_client", metadata_path.split("/")[0]}
    assert "meter_client/py.typed" in names


def test_requirement_names_are_read_from_metadata() -> None:
    # The parser above must see a server dependency if one were declared.
    metadata = "Name: x\nRequires-Dist: asyncpg>=0.30\nRequires-Dist: redis[hiredis]>=5.2\n"
    assert _requirement_names(metadata) == ["asyncpg", "redis"]


def test_the_wheel_installs_alone_into_a_fresh_virtualenv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run_uv("venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    run_uv("pip", "install", "--quiet", "--python", python, wheel)
    probe = (
        "import importlib.util, meter_client\n"
        "from meter_client import MeterClient, MeterClientSync, AuthenticationFailed\n"
        f"present = [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)]\n"
        "print(meter_client.__file__, present)\n"
    )
    done = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    location, present = done.stdout.rsplit(" ", 1)
    assert location.startswith(str(venv))  # the installed copy, not this source tree
    assert present.strip() == "[]"
