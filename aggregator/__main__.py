"""`python -m aggregator aggregate [--once]`: the aggregator without the rest of the CLI."""

from __future__ import annotations

import argparse
import sys

from aggregator.cli import add_parser
from meter.cli import dispatch


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m aggregator")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return dispatch(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
