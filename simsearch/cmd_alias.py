"""``simsearch alias ...``: a name for the index in use, switched without stopping the servers that follow it.

    simsearch alias set ALIAS INDEX [--force] [--note TEXT]   (INDEX: a re-embed of the alias's index, see
                                                               simsearch index reembed; the first target: any)
    simsearch alias set ALIAS --previous                      (roll back to the index before)
    simsearch alias show ALIAS
    simsearch alias history ALIAS

ALIAS is a folder (created by the first ``set``; it holds ``alias.sqlite``) or a Milvus alias
``milvus://HOST:PORT/ALIAS`` (Milvus's own).  ``simsearch serve --index ALIAS`` follows it: every worker moves to
the new index once it has opened it, each request is answered wholly by one index, and no write is lost.
"""

from __future__ import annotations

import argparse
import json

from engine.lifecycle import alias_status, switch
from index.alias import open_alias
from simsearch.cli import UserError
from simsearch.runtime_args import add_runtime_arguments, runtime_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("alias", help="a name for the index in use: switch it, roll it back, show it")
    commands = parser.add_subparsers(dest="alias_command", required=True, metavar="ACTION")

    set_ = commands.add_parser("set", help="point the alias at an index (a re-embed of the one it names), or back "
                                           "at the previous one; sealing, catching up and switching without losing "
                                           "a write")
    set_.add_argument("alias", metavar="ALIAS", help="alias folder, or milvus://HOST:PORT/ALIAS")
    set_.add_argument("index", metavar="INDEX", nargs="?", help="the index to name from now on")
    set_.add_argument("--previous", action="store_true", help="go back to the index named before (a rollback)")
    set_.add_argument("--force", action="store_true",
                      help="switch even to an index that is not a re-embed of the current one (writes made to the "
                           "current one are then not carried over), or one that simsearch evaluate found worse")
    set_.add_argument("--note", default="", help="why, kept in the alias's history")
    add_runtime_arguments(set_)
    set_.set_defaults(func=_set)

    show = commands.add_parser("show", help="the alias's target, the previous one, and their state")
    show.add_argument("alias", metavar="ALIAS")
    show.set_defaults(func=_show)

    history = commands.add_parser("history", help="every switch of the alias, oldest first")
    history.add_argument("alias", metavar="ALIAS")
    history.set_defaults(func=_history)
    return parser


def _set(args: argparse.Namespace) -> int:
    if bool(args.index) == bool(args.previous):
        raise UserError("name the INDEX to switch to, or pass --previous (not both)")
    result = switch(args.alias, args.index, previous=args.previous, force=args.force, note=args.note,
                    runtime=runtime_from_args(args))
    print(json.dumps({"alias": result.alias, "target": result.target, "previous": result.previous,
                      "changed": result.entry is not None,
                      "caught_up": {"added": result.caught_up.added, "deleted": result.caught_up.deleted},
                      "skipped": len(result.caught_up.skipped), "seconds": round(result.seconds, 2)}, indent=2))
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(alias_status(args.alias), indent=2))
    return 0


def _history(args: argparse.Namespace) -> int:
    alias = open_alias(args.alias)
    if alias is None:
        raise UserError(f"{args.alias} is not an alias")
    try:
        print(json.dumps([entry.to_dict() for entry in alias.history()], indent=2))
    finally:
        alias.close()
    return 0
