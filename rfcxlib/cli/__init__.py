"""The ``rfcx`` command: thin parsers, one module per subcommand.

Each subcommand ``NAME`` of :data:`COMMANDS` has a module ``rfcxlib.cli.NAME`` with two functions:
``add_arguments(parser)`` declares its options and ``handle(args) -> int`` imports the module that
does the work (inside the function), calls a plain function there and prints the outcome. Only the
chosen subcommand's module and options are loaded, so ``rfcx --help`` and the light subcommands
(``rfcx validate``) start without TensorFlow.

Tests: tests/test_cli.py
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Optional

from rfcxlib.errors import RfcxError

#: subcommand -> its one-line help; its parser and handler live in ``rfcxlib.cli.<subcommand>``
COMMANDS = {
    "synth": "write a synthetic data set in the RFCx layout",
    "validate": "check a data folder in the RFCx layout and summarise it",
    "run": "run the notebook series headless into outputs/<run_id>/",
    "kaggle": "build a Kaggle kernel bundle from a notebook",
    "predict": "score field recordings: clip scores, window scores, Raven selection tables",
    "export": "export a CNN, BirdNET heads or a run's ensemble as SavedModel or TFLite",
    "train": "train one model over its folds (several workers: TF_CONFIG on each)",
    "embed": "embed folders of audio into the embedding cache (in process, or on Apache Beam)",
}


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``rfcx`` parser. Only ``command``'s module is imported (and its options added), so
    ``rfcx --help`` and the light subcommands start without the others' imports;
    ``command=None``: every subcommand's options."""
    parser = argparse.ArgumentParser(prog="rfcx", description="RFCx species detection toolkit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command not in (None, name):
            continue
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_arguments(p)
        if not any("--debug" in a.option_strings for a in p._actions):
            p.add_argument("--debug", action="store_true", help="show the Python traceback of "
                           "a failure (also: RFCX_DEBUG=1)")
        p.set_defaults(handler=module.handle)
    return parser


def command_of(argv: list) -> str:
    """The subcommand named in ``argv`` (its first word that is not an option), or ``""``."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv=None) -> int:
    """``rfcx ARGV``: the exit status (0 done, 1 a failure the command reports, 2 a usage error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_of(argv)
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False) or os.environ.get("RFCX_DEBUG", "") not in ("", "0")
    try:
        return int(args.handler(args) or 0)
    except RfcxError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rfcx {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)
    except KeyboardInterrupt:
        print(f"rfcx {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # an unwritable or full disk, an unreadable file: one line, not a trace
        if args.debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"rfcx {args.command}: error: {where}{exc.strerror or exc} (rerun with --debug "
              "for the traceback)", file=sys.stderr)
        return 1
