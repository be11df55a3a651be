"""`.meter/dev/env`: how a `meter` command in another terminal finds the running `meter dev`.

`meter dev` holds an exclusive lock on `.meter/dev/lock` for as long as it runs, writes the env
file once everything is up (database and Redis URLs, the emulator's Stripe settings, the API URL
and key, each process's metrics URL) and removes it when it stops. Other commands read the file
only while that lock is held: the kernel drops the lock when its holder dies, kill -9 included,
so a file left behind is never used (a pid could be reused by another process; a lock cannot).
Variables set in the environment win over the file's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from meter.errors import ConfigError

DEV_DIR = Path(".meter/dev")
ENV_FILE = DEV_DIR / "env"
LOCK_FILE = DEV_DIR / "lock"
# Of the file's variables, these become the commands' settings, a group at a time: a group
# of which any variable is set in the environment comes from the environment only (a real
# STRIPE_API_KEY never meets the emulator's base URL). METER_URL, METER_API_KEY and the metrics
# URLs are for people and scripts (`. .meter/dev/env`).
SETTING_GROUPS = (
    ("METER_DATABASE_URL",),
    ("METER_REDIS_URL", "METER_REDIS_PREFIX"),
    ("STRIPE_API_KEY", "STRIPE_API_BASE", "STRIPE_METER_EVENTS_BASE"),
)
# A reader holds the lock (shared) for microseconds; `meter dev` retries this long for it.
_LOCK_WAIT_S = 2.0

_HEADER = """\
# Written by `meter dev` (pid {pid}) while it runs; removed when it stops.
# Other `meter` commands run in this directory read it (variables set in the environment win).
# In a shell: set -a; . .meter/dev/env; set +a
"""


@contextlib.contextmanager
def dev_lock(directory: Path = DEV_DIR) -> Iterator[None]:
    """Hold the lock that says `meter dev` runs in this directory, or refuse in one line."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE.name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    other = read(directory / ENV_FILE.name, check_lock=False) or {}
                    pid = other.get("METER_DEV_PID", "?")
                    raise ConfigError(
                        f"another `meter dev` (pid {pid}) is running in this directory; stop it "
                        "first (both would use the same embedded data in .meter/dev)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def render(values: Mapping[str, str], pid: int) -> str:
    """The file's text: shell assignments, so `. .meter/dev/env` works as well as our parser."""
    lines = [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    return _HEADER.format(pid=pid) + f"METER_DEV_PID={pid}\n" + "\n".join(lines) + "\n"


def write(values: Mapping[str, str], path: Path = ENV_FILE) -> None:
    """Write the file whole (a reader never sees half of it), readable only by its owner: it
    holds an API key."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(render(values, os.getpid()))
    os.replace(tmp, path)


def remove(path: Path = ENV_FILE) -> None:
    path.unlink(missing_ok=True)


def parse(text: str) -> dict[str, str]:
    """`NAME=value` lines (values shell-quoted), comments and blank lines skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, raw = line.split("=", 1)
        words = shlex.split(raw)
        values[name.strip()] = words[0] if words else ""
    return values


def running(lock: Path = LOCK_FILE) -> bool:
    """Whether a `meter dev` holds the lock in that directory now."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read(path: Path = ENV_FILE, *, check_lock: bool = True) -> dict[str, str] | None:
    """The file's variables; None when there is none or the `meter dev` that wrote it stopped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    if check_lock and not running(path.with_name(LOCK_FILE.name)):
        return None
    return parse(text)


def with_dev_env(environ: Mapping[str, str], path: Path = ENV_FILE) -> Mapping[str, str]:
    """`environ` completed by the running `meter dev`'s settings: a group with any variable set
    (non-empty) in the environment is left as the environment has it."""
    found = read(path)
    if not found:
        return environ
    merged = dict(environ)
    for group in SETTING_GROUPS:
        if not any(environ.get(name) for name in group):
            merged.update({name: found[name] for name in group if found.get(name)})
    return merged
