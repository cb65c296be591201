"""``ccflow decode TOKEN|-``: a token's header and claims, explained, and clearly unverified."""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from ccflow._cli._common import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    add_command,
    add_token_argument,
    error,
    guarded,
    stdout_closed,
    token_from,
)
from ccflow._core.explain import (
    DecodedToken,
    ExplainedField,
    decode_unverified,
    explain_claims,
    explain_header,
)
from ccflow.errors import InvalidTokenError

__all__ = ["UNVERIFIED_BANNER", "add_parser", "as_json", "printable", "render", "run"]

UNVERIFIED_BANNER = (
    "UNVERIFIED: decoded only. The signature, issuer and audience were NOT checked;"
    " use `ccflow verify` for that."
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``decode`` on the ``ccflow`` subparsers."""
    parser = add_command(
        subparsers,
        "decode",
        run,
        help="show a token's header and claims (unverified), with what each claim means",
        description=(
            "Decode a JWT access token WITHOUT verifying it: header and claims, a one-line"
            " meaning for each well-known Azure AD claim, and times as UTC dates relative to"
            ' now. A token pasted with its JSON quotes ("eyJ...") is read as it is. Exit'
            " codes: 0 decoded, 1 not a decodable JWT, 2 usage error."
        ),
    )
    add_token_argument(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"verified": false, "header": ..., "claims": ...} as JSON',
    )
    return parser


# C0 and C1 controls and the bidirectional overrides: a token is untrusted input, and these
# would let it drive the terminal (escape sequences) or reorder what the reader sees.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with each of those characters shown as a ``\\u001b``-style escape."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _value(value: Any) -> str:
    """A claim's value as shown: strings made printable, anything else as JSON."""
    return printable(value) if isinstance(value, str) else json.dumps(value)


def _section(title: str, fields: list[ExplainedField]) -> list[str]:
    """The lines of one titled section: aligned names, values, and meanings beneath."""
    lines = [title]
    names = [printable(f.name) for f in fields]
    width = max((len(name) for name in names), default=0)
    pad = " " * (width + 4)
    for name, field in zip(names, fields, strict=True):
        shown = _value(field.value)
        if field.when:
            shown = f"{shown} = {field.when}"
        lines.append(f"  {name.ljust(width)}  {shown}")
        if field.meaning:
            lines.append(f"{pad}{field.meaning}")
    return lines


def render(decoded: DecodedToken, *, now: float) -> str:
    """The human form: banner, header, claims, each with its meaning and times relative to now."""
    lines = [UNVERIFIED_BANNER, ""]
    lines += _section("Header", explain_header(decoded.header))
    lines.append("")
    lines += _section("Claims", explain_claims(decoded.claims, now=now))
    return "\n".join(lines)


def as_json(decoded: DecodedToken) -> str:
    """The machine form: ``{"verified": false, "header": {...}, "claims": {...}}``."""
    return json.dumps(
        {"verified": False, "header": dict(decoded.header), "claims": dict(decoded.claims)},
        indent=2,
    )


@guarded
def run(args: argparse.Namespace) -> int:
    """Decode ``args.token`` (``-`` reads stdin) and print it; never verifies anything."""
    if stdout_closed():
        return EXIT_USAGE
    text = token_from(args.token)
    if text is None:
        return EXIT_USAGE
    try:
        decoded = decode_unverified(text)
    except InvalidTokenError as exc:
        error(f"not a decodable JWT: {exc}")
        return EXIT_REFUSED
    if args.json:
        print(as_json(decoded))
    else:
        print(render(decoded, now=time.time()))
    return EXIT_OK
