"""`meter dev` as a subprocess for the tests that need the whole dev pipeline: started in a
directory of the test's own, its banner read, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meter import devenv
from tests.e2e.test_cli import METER


@dataclass
class Dev:
    proc: asyncio.subprocess.Process
    cwd: Path
    banner: str
    env_file: dict[str, str]
    log: Path


@contextlib.asynccontextmanager
async def running_dev(env: dict[str, str], cwd: Path, port: int) -> AsyncIterator[Dev]:
    """`meter dev --port port` in `cwd` until its banner is out; stopped after the block, which
    must leave it running (SIGINT, then exit code 0)."""
    log = cwd / "dev.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            METER, "dev", "--port", str(port), env=env, cwd=cwd,
            stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert proc.stdout is not None
    banner = ""
    try:
        while "/usage" not in banner:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if not line:
                pytest.fail("meter dev exited before its banner:\n" + log.read_text())
            banner += line.decode()
        found = devenv.read(cwd / devenv.ENV_FILE)
        assert found is not None, "meter dev runs but .meter/dev/env is missing or unused"
        yield Dev(proc, cwd, banner, found, log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0, log.read_text()
