"""`python -m evaluator evaluate [--once]`: the evaluator without the rest of the CLI."""

from __future__ import annotations

import argparse
import sys

from evaluator.cli import add_parser
from meter.cli import dispatch


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluator")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return dispatch(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
