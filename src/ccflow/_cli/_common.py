"""What the subcommands share: exit codes, registering a command and its common arguments,
error output, reading a value from stdin."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import ssl
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ccflow._http import trusted_cas
from ccflow.errors import (
    AuthorityUnreachableError,
    CCFlowError,
    ConfigurationError,
    CredentialError,
    KeysUnavailableError,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "add_ca_file_argument",
    "add_command",
    "add_token_argument",
    "error",
    "exit_code_for",
    "guarded",
    "read_stdin_line",
    "stdout_closed",
    "token_from",
    "verify_for",
    "warn",
    "with_private_ca_hint",
]

EXIT_OK = 0
#: The authority refused, the token is invalid, or a demo step misbehaved.
EXIT_REFUSED = 1
#: Usage or configuration error (argparse uses 2 as well).
EXIT_USAGE = 2
#: The authority could not be reached.
EXIT_NETWORK = 3
#: Interrupted with Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
#: The reader of the output went away (``ccflow decode "$T" | head -1``): 128 + SIGPIPE.
EXIT_BROKEN_PIPE = 141

_PRIVATE_CA_HINT = (
    "; if the authority uses a private CA (such as the local authority's),"
    " pass --ca-file PEM or set SSL_CERT_FILE"
)


def with_private_ca_hint(message: str) -> str:
    """``message``, plus how to trust a private CA when it tells of a TLS failure and does not
    name ``SSL_CERT_FILE`` already (the library's own advice for a certificate that did not
    verify does)."""
    lowered = message.lower()
    if "SSL_CERT_FILE" in message or not any(w in lowered for w in ("certificate", "ssl", "tls")):
        return message
    return message + _PRIVATE_CA_HINT


def exit_code_for(exc: CCFlowError) -> int:
    """The documented exit code for an error: 1 refused, 2 configuration, 3 network."""
    if isinstance(exc, AuthorityUnreachableError | KeysUnavailableError):
        return EXIT_NETWORK
    if isinstance(exc, ConfigurationError | CredentialError):
        return EXIT_USAGE
    return EXIT_REFUSED


def add_command(
    subparsers: Any,
    name: str,
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
    usage: str | None = None,
) -> argparse.ArgumentParser:
    """Register subcommand ``name`` on the ``ccflow`` subparsers, run by ``run``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=description, usage=usage
    )
    parser.set_defaults(func=run, ccflow_run=run)
    return parser


def add_token_argument(parser: argparse.ArgumentParser) -> None:
    """The ``TOKEN`` positional of ``decode`` and ``verify``; read it with :func:`token_from`."""
    parser.add_argument(
        "token", metavar="TOKEN", help="the token, or - to read one line from standard input"
    )


def add_ca_file_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--ca-file`` flag of ``token`` and ``verify``; use it with :func:`verify_for`."""
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust this CA bundle (e.g. the local authority's) instead of the system's"
        " [SSL_CERT_FILE]",
    )


def _to_stderr(text: str, stream: TextIO | None) -> None:
    """Print ``text`` on ``stream`` (default stderr), or nowhere if stderr is closed."""
    target = stream or sys.stderr
    # With stderr closed (2>&-) sys.stderr is None, and print(file=None) writes to stdout,
    # where the message would pass for the output (`T=$(ccflow token ... 2>&-)`).
    if target is not None:
        print(text, file=target)


def error(message: str, *, stream: TextIO | None = None) -> None:
    """Print ``ccflow: error: <message>`` on stderr (argparse's own format)."""
    _to_stderr(f"ccflow: error: {message}", stream)


def warn(message: str, *, stream: TextIO | None = None) -> None:
    """Print ``ccflow: warning: <message>`` on stderr."""
    _to_stderr(f"ccflow: warning: {message}", stream)


def read_stdin_line(what: str) -> str:
    """One line from stdin without its line ending; ``ValueError`` naming ``what`` if empty,
    not UTF-8 text, or if standard input is closed (``<&-``: ``sys.stdin`` is ``None``)."""
    if sys.stdin is None:
        raise ValueError(f"expected {what} on standard input, but standard input is closed")
    try:
        # encode(): in the C locale stdin decodes with surrogateescape, and the lone
        # surrogates would fail later, far from here, as an "unexpected" error.
        line = sys.stdin.readline()
        line.encode("utf-8")
    except UnicodeError:
        # Never the codec's message: it quotes bytes of what was read (a secret).
        raise ValueError(f"{what} on standard input is not UTF-8 text") from None
    line = line.rstrip("\r\n")
    if not line.strip():
        raise ValueError(f"expected {what} on standard input, got an empty line")
    return line


def token_from(argument: str) -> str | None:
    """The ``TOKEN`` argument, or one line of stdin for ``-``; ``None`` after saying why not."""
    if argument != "-":
        return argument
    try:
        return read_stdin_line("a token")
    except ValueError as exc:
        error(str(exc))
        return None


def verify_for(ca_file: str | None) -> ssl.SSLContext | bool:
    """What an httpx client should ``verify`` with: ``--ca-file`` (else ``SSL_CERT_FILE``,
    else ``SSL_CERT_DIR``) as the trusted CAs, or ``True`` (the default bundle) when none is
    given.

    Raises :class:`ccflow.ConfigurationError` naming the flag or variable for a missing or
    unreadable bundle.
    """
    return trusted_cas(ca_file, source="--ca-file")


def stdout_closed() -> bool:
    """True, after saying so, when started with standard output closed (``>&-``): a command
    whose output is the point refuses (exit 2) rather than work for nobody."""
    if sys.stdout is not None:
        return False
    error("standard output is closed (>&-); nothing could be printed")
    return True


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a subcommand's ``run`` so that no traceback ever reaches the user.

    Expected errors are handled inside each ``run``; this is the last line: Ctrl-C exits 130
    quietly, a closed output pipe (``| head -1``) 141 quietly, anything unforeseen prints its
    type and message (never locals, which may hold a secret) and exits 1.
    """

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            status = run(args)
            if sys.stdout is not None:  # None when started with stdout closed (>&-)
                sys.stdout.flush()  # a closed pipe surfaces here, not in the flush at exit
            return status
        except KeyboardInterrupt:
            _to_stderr("", None)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # Nobody reads the output any more: stop quietly, as a tool killed by SIGPIPE
            # does, and point stdout at /dev/null so the flush at exit cannot fail again.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except Exception as exc:  # the last line of defence: no traceback for users
            error(f"unexpected {exc.__class__.__name__}: {exc}")
            return EXIT_REFUSED

    return wrapper
