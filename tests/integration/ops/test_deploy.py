"""Deployment files: compose.yaml validated by `docker-compose config` (Debian package, no engine
needed), the compose Prometheus config by promtool, and the Dockerfile against the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from meter.cli import build_parser
from tests.integration.ops.conftest import ALERTS, GRAFANA, REPO, tool

COMPOSE = REPO / "compose.yaml"
DEPLOY = REPO / "deploy"
SERVICES = {"postgres", "redis", "migrate", "serve", "aggregate", "report", "prometheus", "grafana"}


def compose(*args: str) -> str:
    # A clean environment: the defaults in compose.yaml, not this machine's variables.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [tool("docker-compose"), "--project-directory", str(REPO), "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def service_block(config: str, name: str) -> str:
    """One service's part of `docker-compose config` output (2-space indented YAML)."""
    match = re.search(rf"(?ms)^  {re.escape(name)}:\n(.*?)(?=^  \S|^\S|\Z)", config)
    assert match, name
    return match.group(1)


def test_compose_config_is_valid_and_complete() -> None:
    config = compose("config")
    assert set(compose("config", "--services").split()) == SERVICES
    redis = service_block(config, "redis")
    assert re.search(r"- --appendonly\s+- 'yes'|- --appendonly\s+- \"?yes", redis), redis
    assert re.search(r"- --appendfsync\s+- everysec", redis), redis
    # Every bind mount names a file or directory of the repository that exists.
    mounts = re.findall(r"^\s+- (/[^:\s]+):(/[^:\s]+)", config, re.M)
    assert len(mounts) >= 5
    for source, _ in mounts:
        assert Path(source).exists(), source
    # The one-shot migration gates the long-running processes.
    assert "restart: 'no'" in service_block(config, "migrate") or 'restart: "no"' in config
    for name in ("serve", "aggregate", "report"):
        block = service_block(config, name)
        assert re.search(r"migrate:\n\s+condition: service_completed_successfully", block), name
        assert "METER_DATABASE_URL: postgresql://" in block
        assert "METER_REDIS_URL: redis://redis:6379" in block
    assert "METER_AGGREGATOR_METRICS_PORT: '9100'" in service_block(config, "aggregate")
    assert "METER_REPORTER_METRICS_PORT: '9101'" in service_block(config, "report")
    # Metrics (revenue among them) are reachable on the compose network only, never published;
    # the API port is the only one meter publishes.
    for name in ("serve", "aggregate", "report"):
        block = service_block(config, name)
        assert "METER_METRICS_HOST: 0.0.0.0" in block, name
        published = re.findall(r"published: \"?(\d+)", block)
        assert published == (["8080"] if name == "serve" else []), (name, published)
    assert "METER_METRICS_PORT: '9102'" in service_block(config, "serve")


def test_compose_commands_are_meter_commands() -> None:
    config = compose("config")
    parser = build_parser()
    for name in ("migrate", "serve", "aggregate", "report"):
        match = re.search(r"command:\n((?:\s+- .*\n)+)", service_block(config, name))
        assert match, name
        argv = [line.strip()[2:].strip("'\"") for line in match.group(1).splitlines()]
        assert parser.parse_args(argv).command == name


def test_compose_mounts_match_grafana_provisioning() -> None:
    config = compose("config")
    grafana = service_block(config, "grafana")
    provider = (GRAFANA / "provisioning" / "dashboards" / "meter.yaml").read_text()
    [path] = re.findall(r"^\s+path: (\S+)", provider, re.M)
    assert f"{GRAFANA / 'dashboards'}:{path}:ro" in grafana
    assert f"{GRAFANA / 'provisioning' / 'datasources'}:/etc/grafana/provisioning/" in grafana
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    assert re.search(r"url: http://prometheus:9090\b", datasource)
    prometheus = service_block(config, "prometheus")
    assert f"{DEPLOY / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro" in prometheus
    assert f"{ALERTS}:/etc/prometheus/alerts.yml:ro" in prometheus


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    # Laid out as in the container: the config and alerts.yml side by side.
    shutil.copy(DEPLOY / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    result = subprocess.run(
        [tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "prometheus.yml").read_text()
    assert '"serve:9102"' in text
    assert '"serve:8080"' not in text  # the API port serves no metrics
    assert '"aggregate:9100"' in text
    assert '"report:9101"' in text


def test_dockerfile_installs_the_locked_project_as_non_root() -> None:
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert froms
    assert all(image == "python:3.11-slim" for image in froms), froms
    assert any("uv sync --frozen --no-dev" in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert lines[-2:] == ['ENTRYPOINT ["meter"]', 'CMD ["serve"]']
    # Everything the wheel is built from is copied in (and not excluded by .dockerignore).
    copied = {
        src.rstrip("/")
        for line in lines
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    needed = {"pyproject.toml", "uv.lock", project["project"]["readme"], "migrations", *packages}
    assert needed <= copied, needed - copied
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not copied & ignored, copied & ignored
    for src in copied:
        assert (REPO / src).exists(), src
