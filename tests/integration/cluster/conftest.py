"""A real Redis Cluster on loopback: `redis-server --cluster-enabled yes` on free ports.

`cluster` has 3 masters and no replicas (ingest and aggregation); `cluster_with_replicas` has 3
masters with one replica each, every node with AOF `appendfsync always` (failover). Each is torn
down with its test module or test. Every wait is bounded polling; nothing asserts on wall time.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import Redis

from meter.embedded import port_open

NODE_TIMEOUT_MS = 1000  # how long a master may be unreachable before its replica takes over


def cluster_info(port: int) -> dict[str, str]:
    """`CLUSTER INFO` of one node, as a dict."""
    with Redis(port=port, socket_timeout=2) as r:
        info = r.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
    return {str(k): str(v) for k, v in dict(info).items()}


def node_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too, both below Linux's ephemeral
    range (32768+), where outgoing connections and `free_port()` servers could take them."""
    rng = random.Random()
    while True:
        port = rng.randrange(12000, 22000)
        if port not in taken and not any(port_open("127.0.0.1", p) for p in (port, port + 10000)):
            taken.add(port)
            return port


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll `check` (errors count as "not yet") until it holds, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except Exception:  # a node still starting or just killed: keep polling
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f} s")
        time.sleep(0.1)


@dataclass
class Cluster:
    """Running cluster nodes; `url` is what METER_REDIS_URL would be set to."""

    root: Path
    masters: int
    replicas: int
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return ",".join(f"redis://127.0.0.1:{port}" for port in self.ports if self.alive(port))

    def alive(self, port: int) -> bool:
        proc = self.procs.get(port)
        return proc is not None and proc.poll() is None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            pytest.skip("redis-server / redis-cli not on PATH (Debian: apt-get install redis)")
        taken: set[int] = set()
        self.ports = [
            self._start_node(binary, taken) for _ in range(self.masters * (1 + self.replicas))
        ]
        subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", str(self.replicas), "--cluster-yes",
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()

    def _start_node(self, binary: str, taken: set[int]) -> int:
        """Start one node on a free port; another port if that one was taken meanwhile."""
        for _ in range(5):
            port = node_port(taken)
            node_dir = self.root / str(port)
            node_dir.mkdir(parents=True)
            # fmt: off
            proc = subprocess.Popen(
                [
                    binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                    "--logfile", str(node_dir / "redis.log"),
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # Any replica may be promoted, however long it was cut off from its master.
                    "--cluster-replica-validity-factor", "0",
                    "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # fmt: on
            self.procs[port] = proc
            wait_until(
                lambda proc=proc, port=port: (
                    proc.poll() is not None or port_open("127.0.0.1", port)
                ),
                f"redis-server on port {port}",
                timeout_s=15,
            )
            if proc.poll() is None:
                return port
        raise RuntimeError("could not start a cluster node (ports taken?)")

    def wait_healthy(self) -> None:
        """Every live node sees the cluster ok, and every master has its replicas in sync."""
        live = [port for port in self.ports if self.alive(port)]
        wait_until(
            lambda: all(cluster_info(port)["cluster_state"] == "ok" for port in live),
            "cluster_state:ok on every node",
        )
        if self.replicas:

            def in_sync() -> bool:
                for port in live:
                    info = _replication(port)
                    if info["role"] == "master" and int(info["connected_slaves"]) < self.replicas:
                        return False
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        return False
                return True

            wait_until(in_sync, "every replica linked to its master")

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot, as the cluster itself says."""
        with Redis(port=next(p for p in self.ports if self.alive(p)), socket_timeout=2) as r:
            slot = int(r.execute_command("CLUSTER KEYSLOT", key))
            for start, end, master, *_ in r.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise LookupError(key)

    def kill(self, port: int) -> None:
        """kill -9: no shutdown, no last AOF write, sockets reset."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _replication(port: int) -> dict[str, str]:
    with Redis(port=port, socket_timeout=2) as r:
        return {k: str(v) for k, v in r.info("replication").items()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters, no replicas, shared by a module's tests (each test uses its own key prefix)."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=0)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster_with_replicas(tmp_path: Path) -> Iterator[Cluster]:
    """3 masters with a replica each, AOF `appendfsync always` everywhere; a test's own."""
    c = Cluster(tmp_path / "cluster", masters=3, replicas=1)
    try:
        c.start()
        yield c
    finally:
        c.stop()
