"""What the subcommands share: exit codes, error output, reading a value from stdin."""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = [
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "error",
    "read_stdin_line",
    "warn",
]

EXIT_OK = 0
#: The authority refused, the token is invalid, or a demo step misbehaved.
EXIT_REFUSED = 1
#: Usage or configuration error (argparse uses 2 as well).
EXIT_USAGE = 2
#: The authority could not be reached.
EXIT_NETWORK = 3


def error(message: str, *, stream: TextIO | None = None) -> None:
    """Print ``ccflow: error: <message>`` on stderr (argparse's own format)."""
    print(f"ccflow: error: {message}", file=stream or sys.stderr)


def warn(message: str, *, stream: TextIO | None = None) -> None:
    """Print ``ccflow: warning: <message>`` on stderr."""
    print(f"ccflow: warning: {message}", file=stream or sys.stderr)


def read_stdin_line(what: str) -> str:
    """One line from stdin without its line ending; ``ValueError`` naming ``what`` if empty."""
    line = sys.stdin.readline().rstrip("\r\n")
    if not line.strip():
        raise ValueError(f"expected {what} on standard input, got an empty line")
    return line
