"""``ccflow verify TOKEN``: full validation with the API side's :class:`~ccflow.TokenValidator`.

Prints the verdict and, when the token fails, the check that failed, with the token's value
against the expected one. Exit codes: 0 valid, 1 invalid, 2 usage or configuration error,
3 the authority's keys could not be fetched, 4 the authority answered 429 or 5xx for them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from ccflow._cli._common import (
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    add_command,
    add_repeatable_argument,
    add_token_argument,
    error,
    exit_code_for,
    guarded,
    require_scheme,
    stdout_closed,
    token_from,
    warn,
)
from ccflow._cli._tls import add_ca_file_argument, verify_for, with_private_ca_hint
from ccflow._config import SettingNames
from ccflow._core.explain import decode_unverified, explain_time, without_bearer
from ccflow._core.retry import is_retryable_status
from ccflow._core.urls import MULTI_TENANT_NAMES
from ccflow._validator_config import (
    ValidatorConfig,
    ValidatorSettings,
    environment_settings,
    is_plain,
)
from ccflow.errors import (
    AuthorityUnreachableError,
    CCFlowError,
    ConfigurationError,
    InsufficientScopeError,
    InvalidTokenError,
    KeysUnavailableError,
)
from ccflow.validation import TokenValidator, ValidatedToken

__all__ = ["add_parser", "run"]

_log = logging.getLogger("ccflow.cli")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``verify`` on the ``ccflow`` subparsers."""
    parser = add_command(
        subparsers,
        "verify",
        run,
        help="validate a token as an API would: signature, issuer, audience, times, roles",
        description=(
            "Validate an access token with ccflow's TokenValidator, exactly as an API protected"
            " by RequireRole does, and print the verdict and the failing check. The issuer,"
            " tenant, audience, allowed clients and accept-v1 fall back to the variables the"
            " API side reads (CCFLOW_ISSUER, CCFLOW_TENANT_ID else AZURE_TENANT_ID,"
            " CCFLOW_AUDIENCE, CCFLOW_ALLOWED_CLIENTS, CCFLOW_ACCEPT_V1)."
        ),
    )
    add_token_argument(parser)
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--issuer",
        metavar="URL",
        help="any OpenID Connect issuer (discovery at {issuer}/.well-known/openid-configuration)"
        " [CCFLOW_ISSUER]",
    )
    who.add_argument(
        "--tenant-id",
        metavar="T",
        help="an Azure AD tenant id [CCFLOW_TENANT_ID, else AZURE_TENANT_ID]",
    )
    parser.add_argument(
        "--authority-host",
        metavar="URL",
        help="with --tenant-id: the Azure AD host, default https://login.microsoftonline.com"
        " [AZURE_AUTHORITY_HOST]",
    )
    _add_check_arguments(parser)
    add_ca_file_argument(parser)
    return parser


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """What the token must be: audience, roles, callers, version."""
    add_repeatable_argument(
        parser,
        "--audience",
        metavar="A",
        help="the API's client id or App ID URI; repeat to accept several [CCFLOW_AUDIENCE,"
        " comma-separated]; required unless --any-audience",
    )
    parser.add_argument(
        "--any-audience",
        action="store_true",
        help="check everything but the audience (says so on stderr); for a look, not a verdict",
    )
    parser.add_argument(
        "--accept-v1",
        action="store_true",
        help="accept v1.0 tokens too (issuer https://sts.windows.net/{tenant}/) [CCFLOW_ACCEPT_V1]",
    )
    add_repeatable_argument(
        parser, "--role", metavar="R", help="an app role the token must carry; repeat for any-of"
    )
    add_repeatable_argument(
        parser,
        "--allowed-client",
        metavar="C",
        help="a caller (azp / appid) allowed to call; repeat for several [CCFLOW_ALLOWED_CLIENTS]",
    )


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """TokenValidator's keyword arguments from the flags, else from the variables the API side
    reads (``environment_settings``), and the flag or variable behind each, to name in errors.
    The audience is left out: see :func:`_verified`."""
    from_env, variables = environment_settings(os.environ)
    flags = {
        "issuer": ("--issuer", args.issuer),
        "tenant_id": ("--tenant-id", args.tenant_id),
        "audience": ("--audience", args.audience),
        "allowed_clients": ("--allowed-client", args.allowed_client),
        "accept_v1": ("--accept-v1", args.accept_v1 or None),
    }
    settings: dict[str, Any] = {}
    names: dict[str, str] = {}
    if args.issuer or args.tenant_id:
        # A flag naming the authority replaces the environment's, issuer and tenant alike.
        from_env.pop("issuer", None)
        from_env.pop("tenant_id", None)
    for setting, (flag, value) in flags.items():
        if value:
            settings[setting], names[setting] = value, flag
        elif setting in from_env:
            settings[setting], names[setting] = from_env[setting], variables[setting]
    if "allowed_tenants" in from_env:
        settings["allowed_tenants"] = from_env["allowed_tenants"]
        names["allowed_tenants"] = variables["allowed_tenants"]
    if args.authority_host:
        settings["authority_host"] = require_scheme(args.authority_host, "--authority-host")
        names["authority_host"] = "--authority-host"
    elif os.environ.get("AZURE_AUTHORITY_HOST", "").strip() and "tenant_id" in settings:
        require_scheme(os.environ["AZURE_AUTHORITY_HOST"], "AZURE_AUTHORITY_HOST")
        names["authority_host"] = "AZURE_AUTHORITY_HOST"
    if "issuer" not in settings and "tenant_id" not in settings:
        raise ConfigurationError(
            "which authority issued the token? pass --tenant-id T (Azure AD) or --issuer URL,"
            " or set CCFLOW_TENANT_ID, AZURE_TENANT_ID or CCFLOW_ISSUER",
            setting="--tenant-id",
        )
    return settings, names


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
        self.status: int | None = None  # of the last failed answer
        self.warnings = _KeyFetchWarnings()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _log.debug("%s %s", request.method, request.url)
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self.failure = f"{request.method} {request.url} failed: {type(exc).__name__}: {exc}"
            raise
        _log.debug("HTTP %s from %s", response.status_code, request.url)
        if response.status_code >= 400:
            self.failure = f"{request.method} {request.url} answered HTTP {response.status_code}"
            self.status = response.status_code
        return response

    def exit_code(self) -> int:
        """4 when the authority answered 429 or 5xx (try later), else 3 (network)."""
        return EXIT_UNAVAILABLE if is_retryable_status(self.status) else EXIT_NETWORK

    async def aclose(self) -> None:
        await self._inner.aclose()

    def explain(self) -> str:
        """``"; <the last failed request>"`` (a TLS one with a hint), else the last warning."""
        if self.failure is None:
            return "".join(f"; {cause}" for cause in self.warnings.causes[-1:])
        return f"; {with_private_ca_hint(self.failure)}"


async def _validate(
    args: argparse.Namespace, token: str, settings: dict[str, Any], transport: _FetchRecorder
) -> ValidatedToken:
    """Validate ``token`` with a TokenValidator built from ``settings``; check ``--role``."""
    async with httpx.AsyncClient(transport=transport) as http_client:
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
    """Validate ``token``; with ``--any-audience`` and no audience, its own stands in."""
    settings, names = _settings(args)
    if "audience" not in settings:
        if not args.any_audience:
            raise ConfigurationError(
                "no audience to check: pass --audience (the API's client id or App ID URI) or"
                " set CCFLOW_AUDIENCE; --any-audience checks everything else",
                setting="--audience",
            )
        # The validator insists on an audience: the token's own stands in, unchecked.
        settings["audience"] = _unverified_audiences(token)
        checks.remove("audience")
        if not settings["audience"]:
            raise InvalidTokenError(
                "the token has no audience (aud) claim", reason="audience", claim="aud"
            )
    # Checked first under the flags and variables the user set, so that errors name them.
    ValidatorConfig.of(ValidatorSettings(**settings), SettingNames(names))
    with fetches.warnings:
        return asyncio.run(_validate(args, token, settings, fetches))


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


def _print_invalid(exc: InvalidTokenError | InsufficientScopeError, token: str) -> None:
    """The verdict on a token that failed: the message, what was expected, the failed check."""
    print(f"INVALID: {exc}")
    if isinstance(exc, InvalidTokenError):
        comparison = _comparison(exc, token)
        if comparison:
            print(f"  {comparison}")
        detail = f" (claim: {exc.claim})" if exc.claim else ""
    else:
        detail = f" (required: {', '.join(exc.required)})" if exc.required else ""
    print(f"  failed check: {exc.reason}{detail}")


def _comparison(exc: InvalidTokenError, token: str) -> str | None:
    """``aud is X, expected Y`` (for the issuer, naming both hosts when they differ)."""
    if not exc.expected or not exc.claim:
        return None
    # The signature verified before any claim was compared: these values are the token's.
    actual = decode_unverified(token).claims.get(exc.claim)
    shown = ", ".join(_aud_list(actual)) if exc.claim == "aud" else str(actual)
    line = f"{exc.claim} is {_printable(shown)}, expected {' or '.join(exc.expected)}"
    if exc.claim == "iss":
        hosts = {urlsplit(issuer).netloc for issuer in exc.expected}
        host = urlsplit(str(actual)).netloc
        if host not in hosts:
            line += (
                f": the token comes from host {_printable(host)}, this check expects"
                f" {' or '.join(sorted(hosts))} (--issuer, or --authority-host with --tenant-id)"
            )
    return line


def _printable(text: str) -> str:
    """A claim's text as safe to print: a token is untrusted input."""
    from ccflow._cli.decode import printable

    return printable(text)


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
        warn("the audience was NOT checked (--any-audience): a token for any API passes")


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
        _print_invalid(exc, token)
        return EXIT_REFUSED
    except (KeysUnavailableError, AuthorityUnreachableError) as exc:
        error(f"cannot check the token: {exc}{fetches.explain()}")
        return fetches.exit_code()
    except CCFlowError as exc:
        error(str(exc))
        return exit_code_for(exc)
    _print_valid(result, time.time(), checks)
    return EXIT_OK
