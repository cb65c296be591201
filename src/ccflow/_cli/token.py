"""``ccflow token``: the ``curl .../oauth2/v2.0/token`` of the flow, done right.

Prints the bare access token and a newline, so
``curl -H "Authorization: Bearer $(ccflow token ...)"`` works. Exit codes: 0 success,
1 the authority refused, 2 usage or configuration error, 3 network failure, 4 the authority
still answered 429 or 5xx (a managed identity's endpoint 404 or 410 too) after the retries.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import httpx

from ccflow._cli import decode
from ccflow._cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    add_command,
    add_repeatable_argument,
    error,
    exit_code_for,
    guarded,
    read_stdin_line,
    require_scheme,
    stdout_closed,
    warn,
)
from ccflow._cli._tls import add_ca_file_argument, verify_for, with_private_ca_hint
from ccflow._core.explain import decode_unverified
from ccflow._core.retry import is_retryable_status
from ccflow._core.tokens import AccessToken
from ccflow.errors import (
    AuthorityUnreachableError,
    CCFlowError,
    ConfigurationError,
    TokenRequestError,
)

__all__ = ["add_parser", "message_for", "run"]

#: The most retries --max-retries takes: with the backoff capped at 8 s, ten already wait
#: over a minute, and a typo (100) must not park a script for a quarter of an hour.
_MAX_RETRIES = 10


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``token`` on the ``ccflow`` subparsers."""
    parser = add_command(
        subparsers,
        "token",
        run,
        usage=(
            "%(prog)s --client-id ID (--tenant-id T | --token-endpoint URL) --scope S"
            " [--authority-host URL] [--certificate PEM | --client-secret-stdin |"
            " --managed-identity | --client-secret VALUE] [--json] [--decode] [--ca-file PEM]"
            " [--timeout SECONDS] [--max-retries N] [--no-cache] [-v]"
        ),
        help="get an access token with the client-credentials flow and print it",
        description=(
            "Get an access token with the OAuth 2.0 client-credentials flow and print it"
            " (bare, then a newline). Without a credential flag, the credential comes from the"
            " environment as TokenClient.from_env() reads it: AZURE_CLIENT_SECRET (else"
            " CCFLOW_CLIENT_SECRET), else AZURE_CLIENT_CERTIFICATE_PATH, else"
            " AZURE_FEDERATED_TOKEN_FILE, else the managed identity when"
            " CCFLOW_MANAGED_IDENTITY=true. Missing flags fall back to AZURE_CLIENT_ID,"
            " AZURE_TENANT_ID, AZURE_AUTHORITY_HOST and CCFLOW_TOKEN_ENDPOINT. A line on stderr"
            " announces each retry wait."
        ),
    )
    _add_client_arguments(parser)
    _add_credential_arguments(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the token response as JSON: access_token, token_type, expires_in,"
        " expires_on, scope",
    )
    parser.add_argument(
        "--decode",
        action="store_true",
        help="print the token's header and claims (unverified) instead of the token;"
        " with --json, as JSON",
    )
    _add_request_arguments(parser)
    return parser


def _seconds(text: str) -> float:
    """``--timeout``: finite seconds > 0 (argparse turns the error into exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def _retries(text: str) -> int:
    """``--max-retries``: a whole number from 0 to the cap."""
    if not text.strip().isdigit() or not 0 <= int(text) <= _MAX_RETRIES:
        raise argparse.ArgumentTypeError(f"expected a whole number 0..{_MAX_RETRIES}, got {text!r}")
    return int(text)


def _cache(args: argparse.Namespace, credential: dict[str, Any]) -> dict[str, Any]:
    """The ``cache=`` keyword: Redis from CCFLOW_TOKEN_CACHE, else the file (its entries
    apart per credential, so a wrong one still fails); none with ``--no-cache``."""
    if args.no_cache:
        return {}
    from ccflow._client_base import cache_from_env
    from ccflow._token_cache import FileTokenCache

    shared = cache_from_env(os.environ)
    if shared is not None:
        return {"cache": shared}
    partition = _partition(credential)
    return {"cache": FileTokenCache(partition=partition)}


def _partition(kwargs: dict[str, Any]) -> str:
    """What keeps the file cache's entries apart per credential: a digest of the secret, the
    certificate's thumbprint, the federated token file's path or the managed identity's name,
    so a wrong secret is sent and refused instead of being answered from the cache."""
    from ccflow.credentials import ClientCertificate, ClientSecret, FederatedTokenFile

    credential = kwargs.get("credential")
    if isinstance(credential, ClientSecret):
        secret = credential.secret
    elif isinstance(credential, ClientCertificate):
        return credential.thumbprint
    elif isinstance(credential, FederatedTokenFile):
        secret = str(credential.path)
    elif credential is not None:  # a managed identity: the host's, keyed by its name
        secret = getattr(credential, "name", type(credential).__name__)
    else:
        secret = kwargs["client_secret"]
    return hmac.new(secret.encode(), b"ccflow token cache", "sha256").hexdigest()


def _add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """Who asks, where, and for what: client id, tenant or endpoint, scope, authority host."""
    parser.add_argument(
        "--client-id", metavar="ID", help="the client (application) id [AZURE_CLIENT_ID]"
    )
    parser.add_argument("--tenant-id", metavar="T", help="the Azure AD tenant [AZURE_TENANT_ID]")
    parser.add_argument(
        "--token-endpoint",
        metavar="URL",
        help="any OAuth 2.0 token endpoint; wins over any tenant [CCFLOW_TOKEN_ENDPOINT]",
    )
    add_repeatable_argument(
        parser,
        "--scope",
        metavar="S",
        help="the scope, e.g. api://calc-api/.default (a bare App ID URI gets /.default);"
        " repeat for several",
    )
    parser.add_argument(
        "--authority-host",
        metavar="URL",
        help="Azure AD host, default https://login.microsoftonline.com [AZURE_AUTHORITY_HOST]",
    )


def _add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    """The credential, one of: a certificate, the secret on stdin, the secret as a flag."""
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--certificate",
        metavar="PEM",
        help="authenticate with this certificate and private key (PEM, or PKCS#12) instead of"
        " a secret [AZURE_CLIENT_CERTIFICATE_PASSWORD for its password]",
    )
    how.add_argument(
        "--client-secret-stdin",
        action="store_true",
        help="read the client secret from one line of standard input",
    )
    how.add_argument(
        "--managed-identity",
        action="store_true",
        help="use the Azure host's managed identity (IMDS, or IDENTITY_ENDPOINT and"
        " IDENTITY_HEADER); --client-id or AZURE_CLIENT_ID picks a user-assigned one",
    )
    how.add_argument(
        "--client-secret",
        metavar="VALUE",
        help="the client secret (visible to other users in the process list; prefer the"
        " environment or --client-secret-stdin)",
    )


def _add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """How the token is asked for: the CAs trusted, the timeout, the retries, the cache."""
    add_ca_file_argument(parser)
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=10.0,
        help="how long to wait for each answer (default 10)",
    )
    parser.add_argument(
        "--max-retries",
        metavar="N",
        type=_retries,
        default=3,
        help=f"retries after a timeout, connection error, 429 or 5xx (0..{_MAX_RETRIES},"
        " default 3)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="do not use the token cache: $XDG_CACHE_HOME/ccflow/tokens.json (else"
        " ~/.cache/ccflow/tokens.json, mode 0600), or Redis when CCFLOW_TOKEN_CACHE is set",
    )


def message_for(exc: CCFlowError) -> str:
    """The error's message, plus the ids Azure AD support asks for and a TLS hint."""
    message = str(exc)
    if isinstance(exc, TokenRequestError):
        ids = [
            f"{label}: {value}"
            for label, value in (("trace id", exc.trace_id), ("correlation id", exc.correlation_id))
            if value and value not in message
        ]
        if ids:
            message = f"{message} ({', '.join(ids)})"
    if isinstance(exc, AuthorityUnreachableError):
        message = with_private_ca_hint(message)
    return message


def _env(name: str) -> str | None:
    """The stripped value of environment variable ``name``, or ``None`` if unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def _credential(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments giving TokenClient its credential; never echoes a secret."""
    from ccflow.credentials import ClientCertificate, credential_from_env

    if args.certificate:
        # The password only ever comes from the environment, never from a flag.
        password = _env("AZURE_CLIENT_CERTIFICATE_PASSWORD")
        return {
            "credential": _quietly(lambda: ClientCertificate(args.certificate, password=password))
        }
    if args.client_secret_stdin:
        try:
            return {"client_secret": read_stdin_line("the client secret")}
        except ValueError as exc:
            raise ConfigurationError(str(exc), setting="--client-secret-stdin") from None
    if args.client_secret is not None:
        warn(
            "--client-secret is visible to other users in the process list;"
            " prefer AZURE_CLIENT_SECRET or --client-secret-stdin"
        )
        if not args.client_secret:
            raise ConfigurationError("--client-secret is empty", setting="--client-secret")
        return {"client_secret": args.client_secret}
    # The one order TokenClient.from_env() reads (secret, certificate, federated token file).
    try:
        return {"credential": _quietly(lambda: credential_from_env(os.environ))}
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc}; or pipe the secret with --client-secret-stdin, or use --certificate PEM",
            setting=exc.setting,
        ) from None


def _quietly(make: Callable[[], Any]) -> Any:
    """``make()`` without Python's own warning output: an expired certificate is both logged
    (shown once as ``ccflow: warning: ...``) and warned about, with a line of source."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


def _client_kwargs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """TokenClient's keyword arguments, and the flag or variable each came from (for errors)."""
    client_id = args.client_id or _env("AZURE_CLIENT_ID")
    if not client_id:
        raise ConfigurationError(
            "no client id: pass --client-id or set AZURE_CLIENT_ID", setting="AZURE_CLIENT_ID"
        )
    if not args.scope:
        raise ConfigurationError(
            "no scope: pass --scope, e.g. --scope api://<app id uri>/.default", setting="--scope"
        )
    kwargs: dict[str, Any] = {"client_id": client_id}
    sources = {"client_id": "--client-id" if args.client_id else "AZURE_CLIENT_ID"}
    # An explicit --tenant-id beats CCFLOW_TOKEN_ENDPOINT from the environment; an explicit
    # --token-endpoint beats everything, --tenant-id and --authority-host included.
    endpoint = args.token_endpoint or (None if args.tenant_id else _env("CCFLOW_TOKEN_ENDPOINT"))
    if endpoint:
        kwargs["token_endpoint"] = endpoint
        source = "--token-endpoint" if args.token_endpoint else "CCFLOW_TOKEN_ENDPOINT"
        sources["token_endpoint"] = source
        for flag, value in (
            ("--tenant-id", args.tenant_id),
            ("--authority-host", args.authority_host),
        ):
            if value:
                warn(f"{flag} is ignored: {source} wins over any tenant")
    else:
        tenant_id = args.tenant_id or _env("AZURE_TENANT_ID")
        if not tenant_id:
            raise ConfigurationError(
                "no tenant: pass --tenant-id (or --token-endpoint URL) or set AZURE_TENANT_ID",
                setting="AZURE_TENANT_ID",
            )
        kwargs["tenant_id"] = tenant_id
        sources["tenant_id"] = "--tenant-id" if args.tenant_id else "AZURE_TENANT_ID"
        host = args.authority_host or _env("AZURE_AUTHORITY_HOST")
        if host:
            source = "--authority-host" if args.authority_host else "AZURE_AUTHORITY_HOST"
            kwargs["authority_host"] = require_scheme(host, source)
            sources["authority_host"] = source
    return kwargs, sources


def _identity_in_environment(args: argparse.Namespace) -> bool:
    """No credential flag, and the environment picks the managed identity as from_env() does."""
    from ccflow.credentials import identity_from_env

    flags = (args.certificate, args.client_secret_stdin, args.client_secret is not None)
    return not any(flags) and identity_from_env(os.environ) is not None


def _identity_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """TokenClient's keyword arguments for ``--managed-identity``: the identity alone."""
    from ccflow.credentials import ManagedIdentity

    if not args.scope:
        raise ConfigurationError(
            "no scope: pass --scope, e.g. --scope api://<app id uri>/.default", setting="--scope"
        )
    for flag, value in (
        ("--tenant-id", args.tenant_id),
        ("--token-endpoint", args.token_endpoint),
        ("--authority-host", args.authority_host),
    ):
        if value:
            warn(f"{flag} is ignored: a managed identity gets tokens from the Azure host")
    client_id = args.client_id or _env("AZURE_CLIENT_ID")
    return {"credential": ManagedIdentity(client_id or None)}


def _retried(credential: object) -> Callable[[int | None], bool]:
    """Which statuses the credential's requests were retried for (a managed identity's
    404 and 410 too): still failing after the retries means exit 4."""
    policy = getattr(credential, "retry_policy", None)
    return policy(0).retries if callable(policy) else is_retryable_status


def _log_request(request: httpx.Request) -> None:
    """``-v``: each request, its method and URL only (the body and headers hold secrets)."""
    _log.debug("%s %s", request.method, request.url)


def _log_response(response: httpx.Response) -> None:
    """``-v``: each answer's status."""
    _log.debug("HTTP %s from %s", response.status_code, response.request.url)


_log = logging.getLogger("ccflow.cli")
_REQUEST_LOG: dict[str, list[Callable[..., Any]]] = {
    "request": [_log_request],
    "response": [_log_response],
}


def _scopes(args: argparse.Namespace) -> list[str]:
    """Every ``--scope`` value, each split at whitespace."""
    return [scope for value in args.scope for scope in value.split()]


def _response_json(token: AccessToken, now: float) -> str:
    """The ``--json`` output: the token response's fields as the authority would name them."""
    scopes = list(token.scopes)
    return json.dumps(
        {
            "access_token": token.token,
            "token_type": token.token_type,
            "expires_in": max(0, int(token.expires_on - now)),
            "expires_on": int(token.expires_on),
            "scope": " ".join(scopes),
        },
        indent=2,
    )


@guarded
def run(args: argparse.Namespace) -> int:
    """Get one token as ``args`` say and print it; map every ccflow error to its exit code."""
    if stdout_closed():
        return EXIT_USAGE
    from ccflow import TokenClient  # type: ignore[attr-defined,unused-ignore]

    sources: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    try:
        if args.managed_identity or _identity_in_environment(args):
            kwargs = _identity_kwargs(args)
        else:
            kwargs, sources = _client_kwargs(args)
            kwargs.update(_credential(args))
        scopes = _scopes(args)
        kwargs.update(_cache(args, kwargs))
        http_client = httpx.Client(verify=verify_for(args.ca_file), event_hooks=_REQUEST_LOG)
        options = {"timeout": args.timeout, "max_retries": args.max_retries}
        with http_client, TokenClient(**kwargs, **options, http_client=http_client) as client:
            token = client.get_token(*scopes)
    except CCFlowError as exc:
        message = message_for(exc)
        source = sources.get(getattr(exc, "setting", None) or "")
        error(f"{source}: {message}" if source else message)
        return exit_code_for(exc, _retried(kwargs.get("credential")))
    now = time.time()
    if args.decode:
        try:
            decoded = decode_unverified(token.token)
        except CCFlowError as exc:
            error("the access token is not a JWT, so it cannot be decoded (it is still valid)")
            return exit_code_for(exc)
        print(decode.as_json(decoded) if args.json else decode.render(decoded, now=now))
    elif args.json:
        print(_response_json(token, now))
    else:
        print(token.token)
    return EXIT_OK
