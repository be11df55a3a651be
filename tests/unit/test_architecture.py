"""The package boundaries, checked on the import statements (every one, also inside functions and
under TYPE_CHECKING): the aggregator, the reporter and billing meet only through meter/core and
the process wiring (meter/wiring.py); ingest needs no worker; pricing stays pure; the Stripe
emulator is a tool for the CLI, `meter dev`, benchmarks and tests, never a dependency; the
Python client (clients/python) and the server share no code in either direction; each webhook
table is written by its owner module only."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from meter.webhooks import queries as webhook_queries

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("meter", "aggregator", "reporter", "notifier", "evaluator", "benchmarks", "tests")
# Distributions of their own: module names count from these directories, not from ROOT.
OWN_ROOTS = (ROOT / "clients" / "python" / "src",)
SERVER = ("meter", "aggregator", "reporter", "notifier", "evaluator")

# I/O libraries, and the meter modules that reach a database, Redis, HTTP or Stripe.
IO_LIBRARIES = ("asyncpg", "redis", "aiohttp", "stripe", "httpx", "requests", "socket")
PURE_METER_MODULES = ("meter.pricing", "meter.errors", "meter.core.windows")


def _module_name(path: Path) -> str:
    base = next((r for r in OWN_ROOTS if path.is_relative_to(r)), ROOT)
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield module
            # `from meter import billing` imports the subpackage, not a name.
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            graph[_module_name(path)] = set(_imports(path))
    for own in OWN_ROOTS:
        for path in sorted(own.rglob("*.py")):
            graph[_module_name(path)] = set(_imports(path))
    return graph


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(
    graph: dict[str, set[str]], importers: tuple[str, ...], imported: tuple[str, ...]
) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in graph.items()
        if any(_within(module, p) for p in importers)
        for name in names
        if any(_within(name, p) for p in imported)
    )


GRAPH = _graph()

FORBIDDEN = [
    pytest.param(("aggregator",), ("reporter",), id="aggregator-imports-reporter"),
    pytest.param(("reporter",), ("aggregator",), id="reporter-imports-aggregator"),
    pytest.param(("aggregator", "reporter"), ("meter.billing",), id="workers-import-billing"),
    pytest.param(("meter.billing",), ("aggregator", "reporter"), id="billing-imports-workers"),
    pytest.param(("meter.ingest",), ("aggregator", "reporter"), id="ingest-imports-workers"),
    pytest.param(
        ("notifier",), ("aggregator", "reporter", "meter.billing"), id="notifier-imports-workers"
    ),
    # Only the process wiring (the CLI, `meter dev`) starts the notifier.
    pytest.param(
        (
            "aggregator",
            "reporter",
            "meter.billing",
            "meter.ingest",
            "meter.usage",
            "meter.webhooks",
        ),
        ("notifier",),
        id="others-import-notifier",
    ),
    # The evaluator reads what the aggregator committed; it runs neither worker's code.
    pytest.param(("evaluator",), ("aggregator", "reporter"), id="evaluator-imports-workers"),
    pytest.param(("aggregator", "reporter"), ("evaluator",), id="workers-import-evaluator"),
    # The client installs without the server and the server runs without the client.
    pytest.param(("meter_client",), SERVER, id="client-imports-server"),
    pytest.param(SERVER, ("meter_client",), id="server-imports-client"),
]


@pytest.mark.parametrize(("importers", "imported"), FORBIDDEN)
def test_packages_do_not_import_each_other(
    importers: tuple[str, ...], imported: tuple[str, ...]
) -> None:
    assert _violations(GRAPH, importers, imported) == []


def _does_io(name: str) -> bool:
    if any(_within(name, lib) for lib in IO_LIBRARIES):
        return True
    inside_meter = _within(name, "meter") and name != "meter"
    return inside_meter and not any(_within(name, pure) for pure in PURE_METER_MODULES)


def test_pricing_imports_no_io() -> None:
    found = sorted(
        f"{module} imports {name}"
        for module, names in GRAPH.items()
        if _within(module, "meter.pricing")
        for name in names
        if _does_io(name)
    )
    assert found == []


@pytest.mark.parametrize("pure", ["meter.webhooks.signing", "notifier.schedule"])
def test_signing_and_retry_timing_import_no_io(pure: str) -> None:
    assert pure in GRAPH
    assert sorted(name for name in GRAPH[pure] if _does_io(name)) == []


def _may_use_the_emulator(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return (
        _within(module, "meter.stripe_emulator")
        or last == "cli"
        or module == "meter.dev"
        or _within(module, "benchmarks")
        or _within(module, "tests")
    )


def test_only_tools_import_the_stripe_emulator() -> None:
    found = sorted(
        f"{module} imports {name}"
        for module, names in GRAPH.items()
        if not _may_use_the_emulator(module)
        for name in names
        if _within(name, "meter.stripe_emulator")
    )
    assert found == []


def test_the_graph_sees_the_packages() -> None:
    # A guard against a walk that finds nothing (and so passes everything).
    assert "meter.billing.store" in GRAPH
    assert "aggregator.worker" in GRAPH
    assert "reporter.worker" in GRAPH
    assert "evaluator.worker" in GRAPH
    assert "meter.pricing" in GRAPH
    assert "meter_client.aio" in GRAPH


# One owner per table, for the webhook tables (docs/design.md): every statement writing one
# lives in meter/webhooks/queries.py, and only its owner runs it.
WEBHOOK_WRITE = re.compile(
    r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(webhook_[a-z_]+)\b", re.IGNORECASE
)
WEBHOOK_OWNERS = {
    "webhook_events": "meter.webhooks.events",
    "webhook_endpoints": "meter.webhooks.store",
    "webhook_endpoint_secrets": "meter.webhooks.store",
    "webhook_deliveries": "meter.webhooks.store",
    "webhook_delivery_attempts": "meter.webhooks.store",
}


def _webhook_writes() -> dict[str, set[str]]:
    """Each statement of meter/webhooks/queries.py that writes a webhook table → the tables."""
    writes: dict[str, set[str]] = {}
    for name, value in vars(webhook_queries).items():
        if name.isupper() and isinstance(value, str):
            tables = set(WEBHOOK_WRITE.findall(value))
            if tables:
                writes[name] = tables
    return writes


def test_each_webhook_table_is_written_by_its_owner_only() -> None:
    writes = _webhook_writes()
    assert {t for tables in writes.values() for t in tables} == set(WEBHOOK_OWNERS)
    found = []
    for top in SERVER:
        for path in sorted((ROOT / top).rglob("*.py")):
            module = _module_name(path)
            text = path.read_text(encoding="utf-8")
            if module != "meter.webhooks.queries" and WEBHOOK_WRITE.search(text):
                found.append(f"{module} holds a statement writing a webhook table")
            if "meter.webhooks.queries" not in GRAPH[module]:
                continue  # another package's `queries`
            for name, tables in writes.items():
                if re.search(rf"\bqueries\.{name}\b", text):
                    found += [
                        f"{module} runs {name} on {table}, owned by {WEBHOOK_OWNERS[table]}"
                        for table in sorted(tables)
                        if WEBHOOK_OWNERS[table] != module
                    ]
    assert found == []
