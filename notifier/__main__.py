"""`python -m notifier notify [--once]` / `webhooks …`: the notifier without the rest of the
CLI."""

from __future__ import annotations

import argparse
import sys

from meter.cli import dispatch
from notifier.cli import add_parser


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m notifier")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return dispatch(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
