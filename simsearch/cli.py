"""``simsearch``: the command line. Each subcommand lives in its own ``cmd_*`` module."""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_USAGE = 2


class UserError(Exception):
    """Raised by commands for a problem the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from similarity.version import simsearch_version
    from simsearch import (cmd_alias, cmd_evaluate, cmd_export, cmd_index, cmd_query, cmd_report, cmd_serve,
                           cmd_train, cmd_tune)

    parser = argparse.ArgumentParser(prog="simsearch", description="Image similarity search: train, export, "
                                     "index, query, serve and report.")
    parser.add_argument("--version", action="version", version=f"simsearch {simsearch_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (cmd_train, cmd_tune, cmd_export, cmd_index, cmd_alias, cmd_query, cmd_serve, cmd_report,
                   cmd_evaluate):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from index import IndexStoreError
    from similarity.checkpoint import CheckpointError
    from similarity.data import DatasetError
    from similarity.imageio import ImageDecodeError

    try:
        return int(args.func(args) or 0)
    except (UserError, DatasetError, CheckpointError, IndexStoreError, ImageDecodeError, FileExistsError,
            FileNotFoundError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"simsearch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m simsearch.cli` runs this file as __main__, a second copy of the module: the commands raise
    # simsearch.cli.UserError, which that copy's main() would not catch. Run the package module's main().
    from simsearch.cli import main as package_main

    sys.exit(package_main())
