"""What the subcommands share: exit codes, registering a command and its common arguments,
error output, reading a value from stdin. Trusting the authority's certificate is in
:mod:`ccflow._cli._tls`."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from ccflow._core.retry import is_retryable_status
from ccflow.client import RETRY_MESSAGE
from ccflow.errors import (
    AuthorityUnreachableError,
    CCFlowError,
    ConfigurationError,
    CredentialError,
    KeysUnavailableError,
    TokenRequestError,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "add_command",
    "add_repeatable_argument",
    "add_token_argument",
    "add_verbose_argument",
    "error",
    "exit_code_for",
    "guarded",
    "log_to_stderr",
    "read_stdin_line",
    "require_scheme",
    "stdout_closed",
    "token_from",
    "warn",
]

EXIT_OK = 0
#: The authority refused, the token is invalid, or a demo step misbehaved.
EXIT_REFUSED = 1
#: Usage or configuration error (argparse uses 2 as well).
EXIT_USAGE = 2
#: The authority could not be reached (or TLS verification failed).
EXIT_NETWORK = 3
#: The authority was still answering 429 or 5xx after the retries: try again later.
EXIT_UNAVAILABLE = 4
#: Interrupted with Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
#: The reader of the output went away (``ccflow decode "$T" | head -1``): 128 + SIGPIPE.
EXIT_BROKEN_PIPE = 141

EXIT_CODES = """exit codes:
  0  success
  1  refused: the authority said no (credentials, scope, consent), or the token is invalid
  2  usage or configuration error: fix the command line or the environment
  3  network: the authority could not be reached, or its TLS certificate did not verify
  4  temporarily unavailable: 429 or 5xx (a managed identity's 404 or 410 too) still
     answered after the retries; try again later"""


def exit_code_for(
    exc: CCFlowError, retried: Callable[[int | None], bool] = is_retryable_status
) -> int:
    """The documented exit code for an error: 1 refused, 2 configuration, 3 network,
    4 temporarily unavailable (a status that ``retried`` says the retries were for)."""
    if isinstance(exc, TokenRequestError) and retried(exc.status_code):
        return EXIT_UNAVAILABLE
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
    epilog: str | None = EXIT_CODES,
    formatter_class: type[argparse.HelpFormatter] = argparse.RawDescriptionHelpFormatter,
) -> argparse.ArgumentParser:
    """Register subcommand ``name`` on ``subparsers`` (``authority``'s too), run by ``run``,
    with ``-v``.

    The defaults are how ``token``, ``decode``, ``verify`` and ``demo`` look: the exit-code
    table as the epilog, printed as written (the description too); ``authority serve`` keeps
    argparse's wrapped layout and its own epilog.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        usage=usage,
        epilog=epilog,
        formatter_class=formatter_class,
    )
    parser.set_defaults(func=run)
    add_verbose_argument(parser, default=argparse.SUPPRESS)
    return parser


def add_verbose_argument(parser: argparse.ArgumentParser, *, default: Any = False) -> None:
    """``-v/--verbose``; a subcommand's has ``default=SUPPRESS``, so ``ccflow -v token`` and
    ``ccflow token -v`` both work."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="show each request and retry on stderr (never a secret)",
    )


def require_scheme(value: str, name: str) -> str:
    """``value`` if it names its scheme; a host alone is refused with the fix, not assumed
    https (a local authority on http:// then failed with TLS errors after the retries)."""
    if "://" in value:
        return value
    host = value.strip().rstrip("/")
    raise ConfigurationError(
        f"{name} {value!r} has no scheme: write https://{host}, or http://{host} for a server"
        " on this machine (such as the local authority)",
        setting=name,
    )


def add_token_argument(parser: argparse.ArgumentParser) -> None:
    """The ``TOKEN`` positional of ``decode`` and ``verify``; read it with :func:`token_from`."""
    parser.add_argument(
        "token", metavar="TOKEN", help="the token, or - to read one line from standard input"
    )


def add_repeatable_argument(
    parser: argparse.ArgumentParser, flag: str, *, metavar: str, help: str
) -> None:
    """A flag that may be given several times: its values in order, ``[]`` when absent."""
    parser.add_argument(flag, metavar=metavar, action="append", default=[], help=help)


def _to_stderr(text: str, stream: TextIO | None) -> None:
    """Print ``text`` on ``stream`` (default stderr), or nowhere if stderr is closed."""
    target = stream or sys.stderr
    # With stderr closed (2>&-) sys.stderr is None, and print(file=None) writes to stdout,
    # where the message would pass for the output (`T=$(ccflow token ... 2>&-)`).
    if target is not None:
        print(text, file=target)


class _StderrLog(logging.Handler):
    """The ``ccflow`` loggers' records on stderr as ``ccflow: ...`` lines. Verbose: all of
    them. Otherwise the retry lines and warnings only (as Python showed warnings before this
    handler existed), except the key fetch's, which ``verify`` puts in its error line."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(logging.DEBUG if verbose else logging.INFO)
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        if record.levelno >= logging.WARNING:
            return not record.name.startswith("ccflow.jwks")
        return record.msg == RETRY_MESSAGE

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not end the command
            message = str(record.msg)
        if record.levelno >= logging.WARNING:
            warn(message)
        else:
            _to_stderr(f"ccflow: {message}", None)


@contextlib.contextmanager
def log_to_stderr(*, verbose: bool) -> Iterator[None]:
    """While entered, show the ``ccflow`` loggers' records on stderr (see ``_StderrLog``)."""
    logger = logging.getLogger("ccflow")
    handler = _StderrLog(verbose)
    level = logger.level
    logger.addHandler(handler)
    # Never raised: a handler already listening at DEBUG (a test's) keeps hearing everything.
    logger.setLevel(min(handler.level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


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
    """The ``TOKEN`` argument, or one line of stdin for ``-``, without the JSON quotes it may
    have been copied with (``"eyJ..."``) and surrounding whitespace; ``None`` after saying why
    not."""
    if argument.strip() != "-":
        return _unquoted(argument)
    try:
        return _unquoted(read_stdin_line("a token"))
    except ValueError as exc:
        error(str(exc))
        return None


def _unquoted(text: str) -> str:
    """``text`` stripped, and without one pair of surrounding double quotes."""
    text = text.strip()
    if text.endswith('",'):  # copied with the comma of a JSON member
        text = text[:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


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
