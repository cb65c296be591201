"""``ccflow verify TOKEN``: full validation with the API side's :class:`~ccflow.TokenValidator`.

Prints the verdict and, when the token fails, the check that failed. Exit codes: 0 valid,
1 invalid, 2 usage or configuration error, 3 the authority's keys could not be fetched.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import time
from typing import Any

import httpx

from ccflow._cli._common import (
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    add_ca_file_argument,
    add_command,
    add_token_argument,
    error,
    exit_code_for,
    guarded,
    stdout_closed,
    token_from,
    verify_for,
    with_private_ca_hint,
)
from ccflow._config import SettingNames
from ccflow._core.explain import decode_unverified, explain_time, without_bearer
from ccflow._core.urls import MULTI_TENANT_NAMES
from ccflow._validator_config import ValidatorConfig, is_plain
from ccflow.errors import (
    AuthorityUnreachableError,
    CCFlowError,
    InsufficientScopeError,
    InvalidTokenError,
    KeysUnavailableError,
)
from ccflow.validation import TokenValidator, ValidatedToken

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``verify`` on the ``ccflow`` subparsers."""
    parser = add_command(
        subparsers,
        "verify",
        run,
        help="validate a token as an API would: signature, issuer, audience, times, roles",
        description=(
            "Validate an access token with ccflow's TokenValidator, exactly as an API protected"
            " by RequireRole does, and print the verdict and the failing check. Exit codes:"
            " 0 valid, 1 invalid, 2 usage or configuration error, 3 the authority's discovery"
            " document or keys could not be fetched."
        ),
    )
    add_token_argument(parser)
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
    add_ca_file_argument(parser)
    return parser


def _audiences(args: argparse.Namespace) -> tuple[str, ...]:
    """The audiences to check: ``--audience``, else ``CCFLOW_AUDIENCE``, else none."""
    if args.audience:
        return tuple(args.audience)
    variable = os.environ.get("CCFLOW_AUDIENCE", "")
    return tuple(a.strip() for a in variable.split(",") if a.strip())


def _validator_kwargs(args: argparse.Namespace, audiences: tuple[str, ...]) -> dict[str, Any]:
    """TokenValidator's keyword arguments, as the flags say."""
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
    """The flag behind each validator argument the user gave, to name it in errors."""
    flags = {
        "issuer": ("--issuer", args.issuer),
        "tenant_id": ("--tenant-id", args.tenant_id),
        "authority_host": ("--authority-host", args.authority_host),
        "audience": ("--audience", args.audience),
        "allowed_clients": ("--allowed-client", args.allowed_client),
    }
    return {setting: flag for setting, (flag, value) in flags.items() if value}


class _KeyFetchWarnings(logging.Handler):
    """While entered, collects the key cache's refresh warnings for the error line, not stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # "signing key refresh failed (%s); ..." carries the cause as its one argument.
        if record.msg.startswith("signing key refresh failed") and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            self.causes.append(str(args[0]))

    def __enter__(self) -> _KeyFetchWarnings:
        logging.getLogger("ccflow").addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("ccflow").removeHandler(self)


class _FetchRecorder(httpx.AsyncBaseTransport):
    """``verify``'s HTTP transport, remembering why fetching the keys failed, to say so."""

    def __init__(self, verify: ssl.SSLContext | bool) -> None:
        self._inner = httpx.AsyncHTTPTransport(verify=verify)
        self.failure: str | None = None
        self.warnings = _KeyFetchWarnings()

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
        """``"; <the last failed request>"`` (a TLS one with a hint), else the last warning."""
        if self.failure is None:
            return "".join(f"; {cause}" for cause in self.warnings.causes[-1:])
        return f"; {with_private_ca_hint(self.failure)}"


async def _validate(
    args: argparse.Namespace, token: str, audiences: tuple[str, ...], transport: _FetchRecorder
) -> ValidatedToken:
    """Validate ``token`` with a TokenValidator built from the flags, and check ``--role``."""
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


def _aud_list(aud: Any) -> list[str]:
    """The strings of an ``aud`` claim, which may be one string or a list."""
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def _unverified_audiences(token: str) -> tuple[str, ...]:
    """The token's own ``aud``, unverified; ``InvalidTokenError`` if it is no JWT at all."""
    aud = decode_unverified(token).claims.get("aud")
    # Only values a validator accepts: a token's odd aud is no configuration error of ours.
    return tuple(a for a in _aud_list(aud) if is_plain(a))


def _verified(
    args: argparse.Namespace, token: str, checks: list[str], fetches: _FetchRecorder
) -> ValidatedToken:
    """Validate ``token``; with no audience given, its own stands in, unchecked."""
    audiences = _audiences(args)
    if not audiences:
        # The validator insists on an audience; with none given, check everything else.
        audiences = _unverified_audiences(token)
        checks.remove("audience")
        if not audiences:
            raise InvalidTokenError(
                "the token has no audience (aud) claim", reason="audience", claim="aud"
            )
    with fetches.warnings:
        return asyncio.run(_validate(args, token, audiences, fetches))


def _bare_token(argument: str) -> str | None:
    """The token (``-``: from stdin) without ``Bearer``; ``None`` after saying why not."""
    token = token_from(argument)
    if token is None:
        return None
    token = without_bearer(token)
    if not token:
        error("no token given")
        return None
    return token


def _names_no_tenant(tenant_id: str | None) -> bool:
    """True, after saying so, for a ``--tenant-id`` such as ``common`` that names no tenant."""
    if not tenant_id or tenant_id.strip().lower() not in MULTI_TENANT_NAMES:
        return False
    # A multi-tenant validator needs the tenants to accept, which verify has no flag for.
    error(
        f"--tenant-id {tenant_id} names no tenant: pass the tenant the token comes"
        " from (its tid claim, which `ccflow decode` shows) as --tenant-id, or --issuer URL"
    )
    return True


def _checks(args: argparse.Namespace) -> list[str]:
    """The checks the flags ask for, named as the verdict lists them."""
    checks = ["signature", "issuer", "audience", "times"]
    if args.allowed_client:
        checks.append("caller")
    if args.role:
        checks.append("role")
    return checks


def _print_invalid(exc: InvalidTokenError | InsufficientScopeError) -> None:
    """The verdict on a token that failed: the message and the failed check."""
    print(f"INVALID: {exc}")
    if isinstance(exc, InvalidTokenError):
        detail = f" (claim: {exc.claim})" if exc.claim else ""
    else:
        detail = f" (required: {', '.join(exc.required)})" if exc.required else ""
    print(f"  failed check: {exc.reason}{detail}")


def _print_valid(result: ValidatedToken, now: float, checks: list[str]) -> None:
    """The verdict on a valid token: the checks made, and what the token says."""
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
    if "audience" not in checks:
        print("  note      audience NOT checked: pass --audience (or set CCFLOW_AUDIENCE)")


@guarded
def run(args: argparse.Namespace) -> int:
    """Validate ``args.token`` and print the verdict; 0 valid, 1 invalid."""
    if stdout_closed():
        return EXIT_USAGE
    token = _bare_token(args.token)
    if token is None or _names_no_tenant(args.tenant_id):
        return EXIT_USAGE
    checks = _checks(args)
    try:
        fetches = _FetchRecorder(verify_for(args.ca_file))
        result = _verified(args, token, checks, fetches)
    except (InvalidTokenError, InsufficientScopeError) as exc:
        _print_invalid(exc)
        return EXIT_REFUSED
    except (KeysUnavailableError, AuthorityUnreachableError) as exc:
        error(f"cannot check the token: {exc}{fetches.explain()}")
        return EXIT_NETWORK
    except CCFlowError as exc:
        error(str(exc))
        return exit_code_for(exc)
    _print_valid(result, time.time(), checks)
    return EXIT_OK
