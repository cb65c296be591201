"""The httpx clients ccflow makes for itself when the user passes none.

Two things differ from a bare ``httpx.Client()``:

- The CA bundle named by ``SSL_CERT_FILE`` (or the directory ``SSL_CERT_DIR``), which httpx
  honours, is loaded here, so a missing or unreadable one is a
  :class:`~ccflow.errors.ConfigurationError` naming the variable, at construction, instead of a
  bare ``FileNotFoundError: [Errno 2] No such file or directory``.
- The async client keeps no idle connection. ccflow's own fetches are rare (a token an hour,
  keys a day), and a pooled connection belongs to the event loop that opened it: an app driven
  by several loops in turn (Starlette's ``TestClient`` starts one per request outside a
  ``with`` block) would otherwise pick up a connection of a closed loop and fail.
"""

from __future__ import annotations

import os
import ssl
from typing import Final

import httpx

from .errors import ConfigurationError

__all__ = ["new_async_client", "new_client", "trusted_cas", "untrusted_certificate"]

_NO_IDLE: Final = httpx.Limits(max_keepalive_connections=0)


def trusted_cas(ca_file: str | None = None, *, source: str = "--ca-file") -> ssl.SSLContext | bool:
    """What an httpx client should ``verify`` with: ``ca_file`` (named ``source`` in errors),
    else ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, as the trusted CAs; ``True`` (httpx's
    default bundle) when none is set.

    Raises :class:`~ccflow.errors.ConfigurationError` naming the flag or variable for a
    missing, unreadable or non-PEM bundle.
    """
    if ca_file:
        path, setting = ca_file, source
    elif os.environ.get("SSL_CERT_FILE"):
        path, setting = os.environ["SSL_CERT_FILE"], "SSL_CERT_FILE"
    elif os.environ.get("SSL_CERT_DIR"):
        directory = os.environ["SSL_CERT_DIR"]
        if not os.path.isdir(directory):
            raise ConfigurationError(
                f"SSL_CERT_DIR: no such directory: {directory}", setting="SSL_CERT_DIR"
            )
        return ssl.create_default_context(capath=directory)
    else:
        return True
    if not os.path.isfile(path):
        raise ConfigurationError(f"{setting}: no such file: {path}", setting=setting)
    try:
        return ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"{setting}: {path} is not a PEM CA bundle ({exc.__class__.__name__})",
            setting=setting,
        ) from None


def new_client(timeout: float | httpx.Timeout) -> httpx.Client:
    """An ``httpx.Client`` for ccflow's own requests (see the module docstring)."""
    return httpx.Client(timeout=timeout, verify=trusted_cas())


def new_async_client(timeout: float | httpx.Timeout) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for ccflow's own requests, keeping no idle connection."""
    return httpx.AsyncClient(timeout=timeout, verify=trusted_cas(), limits=_NO_IDLE)


def untrusted_certificate(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a TLS certificate that did not verify (httpx wraps the
    ``ssl.SSLCertVerificationError`` a few causes down)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain; bounded in case of a cycle
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
