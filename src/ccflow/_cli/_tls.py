"""How ``token`` and ``verify`` trust the authority's certificate: the ``--ca-file`` flag, the
CAs an httpx client verifies with, and the advice when a certificate did not verify."""

from __future__ import annotations

import argparse
import ssl

from ccflow._http import trusted_cas

__all__ = ["add_ca_file_argument", "verify_for", "with_private_ca_hint"]

_PRIVATE_CA_HINT = (
    "; if the authority uses a private CA (such as the local authority's),"
    " pass --ca-file PEM or set SSL_CERT_FILE"
)
_UNTRUSTED = ("certificate verify failed", "self-signed", "self signed", "local issuer")
_NOT_TLS = "wrong_version_number"


def add_ca_file_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--ca-file`` flag of ``token`` and ``verify``; use it with :func:`verify_for`."""
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust this CA bundle (e.g. the local authority's) instead of the system's"
        " [SSL_CERT_FILE]",
    )


def verify_for(ca_file: str | None) -> ssl.SSLContext | bool:
    """What an httpx client should ``verify`` with: ``--ca-file`` (else ``SSL_CERT_FILE``,
    else ``SSL_CERT_DIR``) as the trusted CAs, or ``True`` (the default bundle) when none is
    given.

    Raises :class:`ccflow.ConfigurationError` naming the flag or variable for a missing or
    unreadable bundle.
    """
    return trusted_cas(ca_file, source="--ca-file")


def with_private_ca_hint(message: str) -> str:
    """``message``, plus how to trust a private CA when it tells of a certificate that did not
    verify and does not name ``SSL_CERT_FILE`` already (the library's own advice does), or
    that the server speaks no TLS; any other failure gets no TLS advice."""
    lowered = message.lower()
    if "SSL_CERT_FILE" in message:
        return message
    if _NOT_TLS in lowered:
        return message + "; the server does not speak TLS there: if it is plain HTTP, use http://"
    if any(words in lowered for words in _UNTRUSTED):
        return message + _PRIVATE_CA_HINT
    return message
