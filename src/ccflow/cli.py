"""The ``ccflow`` command.

Each subcommand lives in its own module with ``add_parser(subparsers)`` (which sets
``func=run`` as the parser default) and ``run(args) -> int``; :data:`SUBCOMMANDS` lists the
modules, so a new subcommand is one import and one entry here.
"""

from __future__ import annotations

import argparse
import importlib
import re
from typing import NoReturn

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

SUBCOMMANDS: tuple[str, ...] = (
    "ccflow._cli.token",
    "ccflow._cli.decode",
    "ccflow._cli.verify",
    "ccflow._cli.demo",
    "ccflow._cli.authority",
    "ccflow._cli.gate",
)
"""Modules providing ``add_parser(subparsers)``; imported only when the parser is built."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose error messages never quote a flag's value: some quote
    ``--flag=value`` whole ("ambiguous option: --client-secre=...") or the value alone
    ("ignored explicit argument '...'"), and the value may be a secret."""

    def error(self, message: str) -> NoReturn:
        # "ambiguous option: --client-secre=<value> could match --a, --b": the value runs up
        # to the list of flags, spaces included, not just to its first space.
        message = re.sub(
            r"^(ambiguous option: --?[\w-]+)=.* could match (--?[\w-]+(?:, --?[\w-]+)*)$",
            r"\1=... could match \2",
            message,
            flags=re.DOTALL,
        )
        message = re.sub(r"(--?[\w-]+)=\S*", r"\1=...", message)
        message = re.sub(r"explicit argument '.*'", "explicit argument '...'", message)
        # A value given before its command (``--client-secret S token``) is quoted as an
        # invalid command name: say so without quoting it.
        message = re.sub(
            r"invalid choice: '.*?' \(", "invalid choice: '...' (", message, flags=re.DOTALL
        )
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``ccflow`` argument parser with every registered subcommand."""
    from ccflow._cli._common import EXIT_CODES, add_verbose_argument
    from ccflow._version import __version__

    parser = _Parser(
        prog="ccflow",
        description="The OAuth 2.0 client-credentials flow, simple, fast and safe.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The import name and version: the distribution's name is not the command's.
    parser.add_argument("--version", action="version", version=f"ccflow {__version__}")
    add_verbose_argument(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Let each (sub)command's namespace name the parser that reads it, for its errors."""
    parser.set_defaults(ccflow_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _remember_parsers(subparser)


_FLAG = re.compile(r"--?[A-Za-z][\w-]*")


def _unrecognized(extras: list[str]) -> str:
    """The unrecognized arguments, values hidden: what follows a mistyped flag is often its
    value, and ``--client_secret "$SECRET"`` must not print the secret (into CI logs)."""
    shown: list[str] = []
    takes_value = False
    for arg in extras:
        name, equals, _ = arg.partition("=")
        # Right after a flag without "=", a word is its value even when it starts with one
        # "-" (an Azure AD secret may); only a "--flag" there is taken for the next flag.
        if _FLAG.fullmatch(name) and (not takes_value or name.startswith("--")):
            shown.append(name + ("=..." if equals else ""))
            takes_value = not equals
        else:
            shown.append("...")
            takes_value = False
    return f"unrecognized arguments: {' '.join(shown)} (values not shown)"


def main(argv: list[str] | None = None) -> int:
    """Run ``ccflow`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        command_parser: argparse.ArgumentParser = args.ccflow_parser
        command_parser.error(_unrecognized(extras))
    from ccflow._cli._common import log_to_stderr

    with log_to_stderr(verbose=args.verbose):
        status: int = args.func(args)
    return status
