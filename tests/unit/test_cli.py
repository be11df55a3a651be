"""The `meter` command's start-up: registering every subcommand imports none of their work."""

from __future__ import annotations

import subprocess
import sys

# What the subcommands need only once they run: the Stripe SDK and aiohttp (billing, emulator),
# redis and asyncpg (every worker), the aggregator's and reporter's workers.
HEAVY = (
    "stripe", "aiohttp", "redis", "asyncpg", "aggregator.worker", "reporter.worker",
    "notifier.worker",
)  # fmt: skip


def test_building_the_parser_imports_no_subcommand_dependencies() -> None:
    # A fresh interpreter: this test process has imported all of them already.
    code = (
        "import sys; from meter.cli import build_parser; build_parser();"
        f" print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_subcommand_is_registered() -> None:
    from meter.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) >= {
        "serve", "migrate", "keys", "aggregate", "sync", "report", "reconcile", "usage",
        "stripe", "stripe-emulator", "dev", "reattribute", "notify", "webhooks",
    }  # fmt: skip
