""".meter/dev/env: written whole, read back as a shell reads it, used only while the `meter dev`
that wrote it holds its lock, and always second to the environment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meter import devenv
from meter.config import Settings
from meter.errors import ConfigError

VALUES = {
    "METER_DATABASE_URL": "postgresql://postgres@127.0.0.1:41234/meter",
    "METER_REDIS_URL": "redis://127.0.0.1:41235/0",
    "METER_REDIS_PREFIX": "meter",
    "STRIPE_API_KEY": "sk_test_emulator",
    "STRIPE_API_BASE": "http://127.0.0.1:41236",
    "STRIPE_METER_EVENTS_BASE": "http://127.0.0.1:41237",
    "METER_API_KEY": "mk_live_a$b'c d",
}


@contextlib.contextmanager
def holding(directory: Path) -> Iterator[None]:
    """Another process holds the dev lock of `directory` (as `meter dev` does) in the block,
    then is killed with SIGKILL: no clean-up of its own, as after kill -9."""
    code = (
        "import sys, time; from pathlib import Path; from meter import devenv\n"
        "with devenv.dev_lock(Path(sys.argv[1])):\n"
        "    print('locked', flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()


@pytest.fixture
def dev_dir(tmp_path: Path) -> Path:
    path = tmp_path / ".meter" / "dev"
    path.mkdir(parents=True)
    return path


def test_the_file_reads_back_as_written_and_as_a_shell_reads_it(dev_dir: Path) -> None:
    env_file = dev_dir / "env"
    devenv.write(VALUES, env_file)
    assert env_file.stat().st_mode & 0o777 == 0o600  # it holds an API key
    parsed = devenv.parse(env_file.read_text())
    assert parsed == {"METER_DEV_PID": str(os.getpid()), **VALUES}
    shell = subprocess.run(
        ["sh", "-c", f'set -a; . "{env_file}"; printf %s "$METER_API_KEY"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == VALUES["METER_API_KEY"]


def test_the_file_is_used_only_while_its_writer_holds_the_lock(dev_dir: Path) -> None:
    env_file = dev_dir / "env"
    devenv.write(VALUES, env_file)
    assert devenv.read(env_file) is None  # no `meter dev` ever locked this directory
    with holding(dev_dir):
        assert devenv.read(env_file) == {"METER_DEV_PID": str(os.getpid()), **VALUES}
    assert env_file.exists()  # killed: the file stays behind
    assert devenv.read(env_file) is None
    assert devenv.with_dev_env({}, env_file) == {}


def test_a_second_dev_in_the_same_directory_is_refused_in_one_line(dev_dir: Path) -> None:
    devenv.write(VALUES, dev_dir / "env")
    with holding(dev_dir), pytest.raises(ConfigError) as refused, devenv.dev_lock(dev_dir):
        pass
    assert "another `meter dev`" in refused.value.message
    assert "\n" not in refused.value.message
    with devenv.dev_lock(dev_dir):  # its holder died: the lock is free again
        assert devenv.running(dev_dir / "lock")


def test_the_environment_wins_group_by_group(dev_dir: Path) -> None:
    env_file = dev_dir / "env"
    devenv.write(VALUES, env_file)
    with holding(dev_dir):
        empty = Settings.from_env(devenv.with_dev_env({}, env_file))
        mine = devenv.with_dev_env(
            {
                "METER_DATABASE_URL": "postgresql://me@db/mine",
                "METER_REDIS_PREFIX": "mine",
                "STRIPE_API_KEY": "sk_live_real",
                "METER_REPORTER_TRANSPORT": "v1",
            },
            env_file,
        )
    assert empty.database_url == VALUES["METER_DATABASE_URL"]
    assert empty.redis_url == VALUES["METER_REDIS_URL"]
    assert empty.stripe_api_base == VALUES["STRIPE_API_BASE"]
    settings = Settings.from_env(mine)
    assert settings.database_url == "postgresql://me@db/mine"
    # A group of which the environment sets anything is the environment's alone: a real key
    # never meets the emulator's URL, a prefix never another Redis.
    assert settings.redis_prefix == "mine"
    assert settings.redis_url == Settings().redis_url
    assert settings.stripe_api_key == "sk_live_real"
    assert settings.stripe_api_base is None
    assert settings.reporter_transport == "v1"
    # Only settings come from the file; the key for clients stays in the file.
    assert "METER_API_KEY" not in mine


@pytest.mark.parametrize(("make_args", "expected"), [([], ""), (["PORT=8123"], " --port 8123")])
def test_make_dev_passes_port_on(make_args: list[str], expected: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    # -n: print the recipes (the `sync` prerequisite's too) without running any.
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    out = subprocess.run(
        ["make", "-n", "-s", "dev", *make_args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [line] = [line for line in out.splitlines() if "meter dev" in line]
    assert line.rstrip().endswith("meter dev" + expected), line
