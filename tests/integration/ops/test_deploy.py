"""Deployment files: compose.yaml validated by `docker-compose config` (Debian package, no engine
needed), the compose Prometheus config by promtool, and the Dockerfile against the project."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from meter.cli import build_parser
from tests.integration.ops.conftest import ALERTS, GRAFANA, REPO, tool

COMPOSE = REPO / "compose.yaml"
DEPLOY = REPO / "deploy"
SERVICES = {
    "postgres", "redis", "migrate", "serve", "aggregate", "evaluate", "report", "notify", "sync",
    "stripe-emulator", "meter", "prometheus", "grafana",
}  # fmt: skip
EMULATOR_ENV = DEPLOY / "emulator.env"
# The processes that need Stripe: only in a profile that provides it.
STRIPE_PROFILES = {"stripe", "emulator"}


def compose(*args: str, env_file: Path | None = None) -> str:
    # A clean environment: the defaults in compose.yaml, not this machine's variables.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    options = ["--env-file", str(env_file)] if env_file else []
    result = subprocess.run(
        [
            tool("docker-compose"),
            "--project-directory",
            str(REPO),
            "-f",
            str(COMPOSE),
            *options,
            *args,
        ],
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
    for name in ("serve", "aggregate", "report", "notify", "evaluate"):
        block = service_block(config, name)
        assert re.search(r"migrate:\n\s+condition: service_completed_successfully", block), name
        assert "METER_DATABASE_URL: postgresql://" in block
        assert "METER_REDIS_URL: redis://redis:6379" in block
    assert "METER_AGGREGATOR_METRICS_PORT: '9100'" in service_block(config, "aggregate")
    assert "METER_REPORTER_METRICS_PORT: '9101'" in service_block(config, "report")
    assert "METER_NOTIFIER_METRICS_PORT: '9103'" in service_block(config, "notify")
    assert "METER_EVALUATOR_METRICS_PORT: '9104'" in service_block(config, "evaluate")
    # Metrics (revenue among them) are reachable on the compose network only, never published;
    # the API port is the only one meter publishes.
    for name in ("serve", "aggregate", "report", "notify", "evaluate"):
        block = service_block(config, name)
        assert "METER_METRICS_HOST: 0.0.0.0" in block, name
        published = re.findall(r"published: \"?(\d+)", block)
        assert published == (["8080"] if name == "serve" else []), (name, published)
    assert "METER_METRICS_PORT: '9102'" in service_block(config, "serve")


def test_compose_commands_are_meter_commands() -> None:
    config = compose("config")
    parser = build_parser()
    for name in ("migrate", "serve", "aggregate", "report", "sync", "stripe-emulator"):
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
    # Laid out as in the repository, so the config's relative rule file resolves in both.
    config_path = "/etc/prometheus/deploy/prometheus.yml"
    assert f"{DEPLOY / 'prometheus.yml'}:{config_path}:ro" in prometheus
    assert f"{ALERTS}:/etc/prometheus/grafana/alerts.yml:ro" in prometheus
    assert f"--config.file={config_path}" in prometheus


def test_compose_prometheus_config_is_valid_from_the_repository() -> None:
    """`promtool check config deploy/prometheus.yml` from the repository root, as documented;
    it also checks the rule files the config names."""
    result = subprocess.run(
        [tool("promtool"), "check", "config", "deploy/prometheus.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout


def port(entry: str | dict[str, Any]) -> tuple[str | None, int]:
    """(host address, container port) of a `ports:` entry, in either syntax compose prints."""
    if isinstance(entry, dict):
        return entry.get("host_ip"), int(entry["target"])
    parts = entry.split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else None), int(parts[-1])


def services(env_file: Path | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(compose("config", env_file=env_file))
    return dict(doc["services"])


def test_processes_that_need_stripe_run_only_in_a_profile_that_has_it() -> None:
    """`docker compose up` with no Stripe starts nothing that would restart in a loop for
    want of STRIPE_API_KEY; `sync` is a one-shot next to `report`."""
    found = services()
    for name in ("report", "sync"):
        assert set(found[name]["profiles"]) == STRIPE_PROFILES, name
    assert found["sync"]["command"] == ["sync"]
    assert found["sync"]["restart"].startswith("on-failure:")
    assert found["stripe-emulator"]["profiles"] == ["emulator"]
    assert found["meter"]["profiles"] == ["cli"]  # only `docker compose run`
    for name, service in found.items():
        if "profiles" not in service and service.get("image") == "meter:latest":
            assert service["command"][0] in {
                "migrate",
                "serve",
                "aggregate",
                "notify",
                "evaluate",
            }, name
        if "profiles" not in service:
            for dependency in service.get("depends_on", {}):
                assert "profiles" not in found[dependency], (name, dependency)


def test_the_emulator_profile_points_every_process_at_the_emulator() -> None:
    found = services(EMULATOR_ENV)
    env_file = EMULATOR_ENV.read_text()
    assert re.search(r"^COMPOSE_PROFILES=emulator$", env_file, re.M)
    emulator = found["stripe-emulator"]
    args = build_parser().parse_args(emulator["command"])
    # Its two ports are the ones the meter processes are given, under its service name.
    for name in ("serve", "aggregate", "report", "sync", "meter"):
        env = found[name]["environment"]
        assert env["STRIPE_API_BASE"] == f"http://stripe-emulator:{args.port}", name
        assert env["STRIPE_METER_EVENTS_BASE"] == (
            f"http://stripe-emulator:{args.meter_events_port}"
        ), name
        assert env["STRIPE_API_KEY"].startswith("sk_test_"), name
        # Its webhooks are signed with the secret `serve` checks, and sent to `serve`.
        assert env["STRIPE_WEBHOOK_SECRET"] == args.webhook_secret, name
    [(_, serve_port)] = [port(entry) for entry in found["serve"]["ports"]]
    assert args.webhook_url == f"http://serve:{serve_port}/stripe/webhook"
    assert args.host == "0.0.0.0"
    [volume] = emulator["volumes"]
    target = volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
    assert args.state_file.parent.as_posix() == target
    # Published on the host's loopback only: the control API has no authentication.
    [published] = emulator["ports"]
    assert port(published) == ("127.0.0.1", args.port)
    # Without the env file, nothing points at the emulator.
    for name, service in services().items():
        assert "stripe-emulator" not in str(service.get("environment", {})), name


def test_prometheus_scrapes_every_process_on_its_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    # Every long-running meter process with a metrics server, at the port compose gives it.
    metrics_ports = {
        "serve": "METER_METRICS_PORT",
        "aggregate": "METER_AGGREGATOR_METRICS_PORT",
        "report": "METER_REPORTER_METRICS_PORT",
        "notify": "METER_NOTIFIER_METRICS_PORT",
        "evaluate": "METER_EVALUATOR_METRICS_PORT",
    }
    found = services(EMULATOR_ENV)
    expected = {
        f"{name}:{found[name]['environment'][variable]}" for name, variable in metrics_ports.items()
    }
    assert targets == expected
    assert "serve:8080" not in targets  # the API port serves no metrics
    long_running = {
        name
        for name, service in found.items()
        if service.get("image") == "meter:latest"
        and service.get("restart") == "unless-stopped"
        and service["command"][0] != "stripe-emulator"
    }
    assert long_running == set(metrics_ports)


def test_dockerfile_header_and_expose_cover_every_process() -> None:
    text = (REPO / "Dockerfile").read_text()
    header = " ".join(line for line in text.splitlines()[:6] if line.startswith("#"))
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for command in commands - {"dev"}:  # `meter dev` is for a laptop, not the image
        assert re.search(rf"\b{re.escape(command)}\b", header), command
    [expose] = re.findall(r"^EXPOSE (.*)$", text, re.M)
    exposed = {int(port) for port in expose.split()}
    # Every port a process listens on in compose.yaml (both profiles) is exposed.
    listening: set[int] = set()
    for service in services(EMULATOR_ENV).values():
        if service.get("image") != "meter:latest":
            continue
        env = service.get("environment", {})
        listening |= {int(v) for k, v in env.items() if k.endswith("METRICS_PORT") and int(v)}
        listening |= {port(entry)[1] for entry in service.get("ports", [])}
        command = service.get("command") or []
        if command and command[0] == "stripe-emulator":
            args = build_parser().parse_args(command)
            listening |= {args.port, args.meter_events_port}
    assert listening <= exposed, listening - exposed
    assert {8080, 9100, 9101, 9102, 9103, 9104, 12111, 12112} <= exposed


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
