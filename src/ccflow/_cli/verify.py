"""``ccflow verify TOKEN``: full validation with the API side's :class:`~ccflow.TokenValidator`.

Prints the verdict and, when the token fails, the check that failed. Exit codes: 0 valid,
1 invalid, 2 usage or configuration error, 3 the authority's keys could not be fetched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx

from ccflow._cli._common import (
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    error,
    guarded,
    read_stdin_line,
    stdout_closed,
    verify_for,
)
from ccflow._config import SettingNames
from ccflow._core.explain import decode_unverified, explain_time
from ccflow._core.urls import MULTI_TENANT_NAMES
from ccflow._validator_config import ValidatorConfig, is_plain
from ccflow.errors import (
    AuthorityUnreachableError,
    CCFlowError,
    ConfigurationError,
    CredentialError,
    InsufficientScopeError,
    InvalidTokenError,
    KeysUnavailableError,
)
from ccflow.validation import TokenValidator, ValidatedToken

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``verify`` on the ``ccflow`` subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "verify",
        help="validate a token as an API would: signature, issuer, audience, times, roles",
        description=(
            "Validate an access token with ccflow's TokenValidator, exactly as an API protected"
            " by RequireRole does, and print the verdict and the failing check. Exit codes:"
            " 0 valid, 1 invalid, 2 usage or configuration error, 3 the authority's discovery"
            " document or keys could not be fetched."
        ),
    )
    parser.add_argument(
        "token", metavar="TOKEN", help="the token, or - to read one line from standard input"
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--issuer",
        metavar="URL",
        help="any OpenID Connect issuer (discovery at {issuer}/.well-known/openid-configuration)",
    )
    who.add_argument("--tenant-id", metavar="T", help="an Azure AD tenant id")
    parser.add_argument(
        "--authority-host",
        metavar="URL",
        help="with --tenant-id: the Azure AD host, default https://login.microsoftonline.com"
        " [AZURE_AUTHORITY_HOST]",
    )
    parser.add_argument(
        "--audience",
        metavar="A",
        action="append",
        help="the API's client id or App ID URI; repeat to accept several [CCFLOW_AUDIENCE,"
        " comma-separated]; without either, the audience is reported but not checked",
    )
    parser.add_argument(
        "--role",
        metavar="R",
        action="append",
        help="an app role the token must carry; repeat for any-of",
    )
    parser.add_argument(
        "--allowed-client",
        metavar="C",
        action="append",
        help="a caller (azp / appid) allowed to call; repeat for several",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust this CA bundle (e.g. the local authority's) instead of the system's"
        " [SSL_CERT_FILE]",
    )
    parser.set_defaults(func=run, ccflow_run=run)
    return parser


def _audiences(args: argparse.Namespace) -> tuple[str, ...]:
    if args.audience:
        return tuple(args.audience)
    variable = os.environ.get("CCFLOW_AUDIENCE", "")
    return tuple(a.strip() for a in variable.split(",") if a.strip())


def _validator_kwargs(args: argparse.Namespace, audiences: tuple[str, ...]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"audience": audiences}
    if args.issuer:
        kwargs["issuer"] = args.issuer
    else:
        kwargs["tenant_id"] = args.tenant_id
        if args.authority_host:
            kwargs["authority_host"] = args.authority_host
    if args.allowed_client:
        kwargs["allowed_clients"] = tuple(args.allowed_client)
    return kwargs


def _flag_names(args: argparse.Namespace) -> dict[str, str]:
    """The flag behind each validator argument the user gave, for naming it in errors (an
    audience taken from CCFLOW_AUDIENCE or the token itself keeps the validator's word)."""
    flags = {
        "issuer": ("--issuer", args.issuer),
        "tenant_id": ("--tenant-id", args.tenant_id),
        "authority_host": ("--authority-host", args.authority_host),
        "audience": ("--audience", args.audience),
        "allowed_clients": ("--allowed-client", args.allowed_client),
    }
    return {setting: flag for setting, (flag, value) in flags.items() if value}


class _FetchRecorder(httpx.AsyncBaseTransport):
    """The HTTP transport of ``verify``, remembering the last request that failed and why:
    the validator only says that no keys could be had, the user needs to know the cause."""

    def __init__(self, verify: ssl.SSLContext | bool) -> None:
        self._inner = httpx.AsyncHTTPTransport(verify=verify)
        self.failure: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self.failure = f"{request.method} {request.url} failed: {type(exc).__name__}: {exc}"
            raise
        if response.status_code >= 400:
            self.failure = f"{request.method} {request.url} answered HTTP {response.status_code}"
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def explain(self) -> str:
        """``"; <what failed>"`` plus a hint for TLS failures, or ``""``."""
        if self.failure is None:
            return ""
        lowered = self.failure.lower()
        hint = (
            "; if the authority uses a private CA (such as the local authority's),"
            " pass --ca-file PEM or set SSL_CERT_FILE"
            if "certificate" in lowered or "ssl" in lowered
            else ""
        )
        return f"; {self.failure}{hint}"


class _KeyFetchWarnings(logging.Handler):
    """Collects the JWKS cache's warnings (meant for a server's log) instead of letting them
    reach the terminal when nobody configured logging: the error line says what failed, and
    a failure that is no failed request (a discovery document naming another issuer) is
    known only from them. Configured handlers still get them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # "signing key refresh failed (%s); ..." carries the cause as its one argument.
        if record.msg.startswith("signing key refresh failed") and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            self.causes.append(str(args[0]))


@contextlib.contextmanager
def _quiet_key_fetch_warnings(collector: _KeyFetchWarnings) -> Iterator[None]:
    ccflow_logger = logging.getLogger("ccflow")
    ccflow_logger.addHandler(collector)
    try:
        yield
    finally:
        ccflow_logger.removeHandler(collector)


async def _validate(
    args: argparse.Namespace, token: str, audiences: tuple[str, ...], transport: _FetchRecorder
) -> Any:
    async with httpx.AsyncClient(transport=transport) as http_client:
        settings = _validator_kwargs(args, audiences)
        # Checked first under the flags the user typed, so that errors name them.
        ValidatorConfig.build(SettingNames(_flag_names(args)), **settings)
        validator = TokenValidator(**settings, http_client=http_client)
        try:
            result = await validator.validate(token)
            if args.role:
                result.require_roles(tuple(args.role), match="any")
            return result
        finally:
            await validator.aclose()


def _unverified_audiences(token: str) -> tuple[str, ...]:
    """The token's own ``aud``: used only when the user gave no audience to check against.

    Raises :class:`InvalidTokenError` (``malformed``) when the text is not a JWT at all, so
    that the verdict names that, not a missing audience.
    """
    aud = decode_unverified(token).claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    # Only values a validator can be configured with (no blanks or control characters): a
    # token's odd aud must not read as a configuration error of the command.
    return tuple(a for a in values if isinstance(a, str) and is_plain(a))


def _aud_list(aud: Any) -> list[str]:
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def _print_valid(result: ValidatedToken, now: float, checks: list[str]) -> None:
    print(f"VALID: {', '.join(checks)} check out")
    roles = ", ".join(result.roles) or "(none)"
    rows = [
        ("audience", ", ".join(_aud_list(result.claims.get("aud"))) or "(none)"),
        ("client", result.client_id or "(none)"),
        ("tenant", result.tenant_id or "(none)"),
        ("roles", roles),
        ("version", result.version or "(none)"),
        ("expires", explain_time(result.expires_on, now=now, claim="exp") or "?"),
    ]
    for label, value in rows:
        print(f"  {label:<9} {value}")


@guarded
def run(args: argparse.Namespace) -> int:
    """Validate ``args.token`` and print the verdict; 0 valid, 1 invalid."""
    if stdout_closed():
        return EXIT_USAGE
    token: str = args.token
    if token == "-":
        try:
            token = read_stdin_line("a token")
        except ValueError as exc:
            error(str(exc))
            return EXIT_USAGE
    token = token.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token:
        error("no token given")
        return EXIT_USAGE
    if args.tenant_id and args.tenant_id.strip().lower() in MULTI_TENANT_NAMES:
        # A multi-tenant validator needs the tenants to accept, which verify has no flag for.
        error(
            f"--tenant-id {args.tenant_id} names no tenant: pass the tenant the token comes"
            " from (its tid claim, which `ccflow decode` shows) as --tenant-id, or --issuer URL"
        )
        return EXIT_USAGE
    checks = ["signature", "issuer", "audience", "times"]
    if args.allowed_client:
        checks.append("caller")
    if args.role:
        checks.append("role")
    key_warnings = _KeyFetchWarnings()
    try:
        fetches = _FetchRecorder(verify_for(args.ca_file))
        audiences = _audiences(args)
        if not audiences:
            # The validator insists on an audience; with none given, check everything else.
            audiences = _unverified_audiences(token)
            checks.remove("audience")
            if not audiences:
                print("INVALID: the token has no audience (aud) claim")
                print("  failed check: audience (claim: aud)")
                return EXIT_REFUSED
        with _quiet_key_fetch_warnings(key_warnings):
            result = asyncio.run(_validate(args, token, audiences, fetches))
    except InvalidTokenError as exc:
        print(f"INVALID: {exc}")
        claim = f" (claim: {exc.claim})" if exc.claim else ""
        print(f"  failed check: {exc.reason}{claim}")
        return EXIT_REFUSED
    except InsufficientScopeError as exc:
        print(f"INVALID: {exc}")
        required = f" (required: {', '.join(exc.required)})" if exc.required else ""
        print(f"  failed check: {exc.reason}{required}")
        return EXIT_REFUSED
    except (KeysUnavailableError, AuthorityUnreachableError) as exc:
        cause = fetches.explain() or "".join(f"; {c}" for c in key_warnings.causes[-1:])
        error(f"cannot check the token: {exc}{cause}")
        return EXIT_NETWORK
    except (ConfigurationError, CredentialError) as exc:
        error(str(exc))
        return EXIT_USAGE
    except CCFlowError as exc:
        error(str(exc))
        return EXIT_REFUSED
    _print_valid(result, time.time(), checks)
    if "audience" not in checks:
        print("  note      audience NOT checked: pass --audience (or set CCFLOW_AUDIENCE)")
    return EXIT_OK
