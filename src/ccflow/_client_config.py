"""A token client's settings, checked once into a frozen :class:`ClientConfig`.

``TokenClient(...)`` and ``AsyncTokenClient(...)`` build one from their keywords;
``from_env()`` reads the same keywords from the environment (:func:`arguments_from_env`) and
goes through the same constructor, so every check is written here once. Errors about an
argument name the argument; ``from_env()`` renames those about a value read from a variable
(:func:`named_after_variable`), in the one form of :class:`ccflow._config.SettingNames`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ccflow._azure_core import allowed_tenants
from ccflow._config import (
    ALLOWED_TENANTS_VARIABLE,
    CALLER_VARIABLES,
    SettingNames,
    authority_host_from,
)
from ccflow._core.cache import RefreshPolicy
from ccflow._core.flow import FetchConfig
from ccflow._core.numbers import is_seconds
from ccflow._core.retry import RetryPolicy
from ccflow._core.tokens import is_azure_token_endpoint
from ccflow._core.urls import reject_tenant_in_host, require_secure_url, token_endpoint_for
from ccflow._managed_identity import ManagedIdentity
from ccflow.credentials import (
    AUTH_METHODS,
    CREDENTIAL_VARIABLES,
    ClientSecret,
    Credential,
    credential_from_env,
    identity_from_env,
)
from ccflow.errors import ConfigurationError

__all__ = ["DEFAULT_TIMEOUT", "ClientConfig", "arguments_from_env", "named_after_variable"]

DEFAULT_TIMEOUT = 10.0
# Constructor keywords that from_env() takes from the environment, not from its **options.
_FROM_ENV_SETTINGS = frozenset({"client_secret", "credential", *CALLER_VARIABLES})
_VARIABLES = SettingNames(CALLER_VARIABLES)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a token client was told, checked: see :meth:`build`."""

    client_id: str
    credential: Credential = field(repr=False)
    token_endpoint: str
    azure: bool
    auth_method: str
    timeout: float | httpx.Timeout
    clock: Callable[[], float]
    fetch: FetchConfig

    @classmethod
    def build(
        cls,
        *,
        client_id: str | None,
        client_secret: str | None,
        credential: Credential | None,
        tenant_id: str | None,
        authority_host: str | None,
        token_endpoint: str | None,
        auth_method: str,
        refresh_margin: float,
        max_retries: int,
        timeout: float | httpx.Timeout,
        clock: Callable[[], float],
    ) -> ClientConfig:
        """The checked settings; ``ConfigurationError`` names the first bad keyword."""
        if isinstance(credential, ManagedIdentity):
            # The host's endpoint names no tenant, and the identity is its own client.
            _refuse_beside_identity(
                credential, client_id, client_secret, tenant_id, authority_host, token_endpoint
            )
            client_id = credential.name
        _check_client_id(client_id)
        assert client_id is not None
        checked = _credential(client_secret, credential, auth_method)
        _check_numbers(max_retries, refresh_margin, timeout)
        if not callable(clock):
            raise ConfigurationError(
                "clock must be a callable returning Unix seconds (like time.time)", setting="clock"
            )
        if isinstance(credential, ManagedIdentity):
            endpoint, azure = credential.endpoint, True
            retry = credential.retry_policy(max_retries)
        else:
            endpoint, azure = _endpoint(tenant_id, authority_host, token_endpoint)
            retry = RetryPolicy(max_retries=max_retries)
        fetch = FetchConfig(
            token_endpoint=endpoint,
            client_id=client_id,
            auth_method=auth_method,
            retry=retry,
            refresh=RefreshPolicy(margin=float(refresh_margin)),
        )
        return cls(client_id, checked, endpoint, azure, auth_method, timeout, clock, fetch)


def _refuse_beside_identity(
    identity: ManagedIdentity,
    client_id: str | None,
    client_secret: str | None,
    tenant_id: str | None,
    authority_host: str | None,
    token_endpoint: str | None,
) -> None:
    """Refuse settings a managed identity does not take (it names its own endpoint)."""
    if client_id is not None and client_id != identity.client_id:
        raise ConfigurationError(
            "a managed identity is chosen by ManagedIdentity(client_id=...): pass the "
            "user-assigned identity's client id there, not to the client",
            setting="client_id",
        )
    given = [
        name
        for name, value in (
            ("client_secret", client_secret),
            ("tenant_id", tenant_id),
            ("authority_host", authority_host),
            ("token_endpoint", token_endpoint),
        )
        if value is not None
    ]
    if given:
        raise ConfigurationError(
            f"{', '.join(given)} do(es) not apply to a managed identity, which gets its tokens "
            "from the Azure host's endpoint; leave them out",
            setting=given[0],
        )


def _check_client_id(client_id: object) -> None:
    """Refuse a client id that is not a non-blank string."""
    if client_id is None:
        raise ConfigurationError(
            "client_id is required (AZURE_CLIENT_ID), unless the credential is a ManagedIdentity()",
            setting="client_id",
        )
    if not isinstance(client_id, str):
        raise ConfigurationError(
            f"client_id must be a string (the app's Application ID), got "
            f"{type(client_id).__name__}",
            setting="client_id",
        )
    if not client_id.strip():
        raise ConfigurationError("client_id is required (AZURE_CLIENT_ID)", setting="client_id")


def _credential(
    client_secret: str | None, credential: Credential | None, auth_method: str
) -> Credential:
    """The one credential given (a secret becomes ``ClientSecret``), fit for ``auth_method``."""
    if (client_secret is None) == (credential is None):
        raise ConfigurationError(
            "pass exactly one of client_secret=... or credential=...", setting="credential"
        )
    if credential is None:
        assert client_secret is not None
        credential = ClientSecret(client_secret)
    if isinstance(credential, type):
        raise ConfigurationError(
            f"credential must be an instance, got the class {credential.__name__}; e.g. "
            "credential=ClientSecret('...')",
            setting="credential",
        )
    if not callable(getattr(credential, "request_fields", None)):
        raise ConfigurationError(
            f"credential must implement ccflow.credentials.Credential, got "
            f"{type(credential).__name__}",
            setting="credential",
        )
    if auth_method not in AUTH_METHODS:
        raise ConfigurationError(
            f"auth_method must be one of {', '.join(AUTH_METHODS)}, got {auth_method!r}",
            setting="auth_method",
        )
    if isinstance(credential, ClientSecret) and auth_method == "private_key_jwt":
        raise ConfigurationError(
            "auth_method 'private_key_jwt' needs a certificate or assertion credential; a "
            "client secret is sent with 'client_secret_post' or 'client_secret_basic'",
            setting="auth_method",
        )
    return credential


def _check_numbers(max_retries: int, refresh_margin: float, timeout: float | httpx.Timeout) -> None:
    """Refuse a negative retry count, a margin that is not finite, a timeout that is no wait."""
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError("max_retries must be an int >= 0", setting="max_retries")
    # A NaN margin compared false to everything: every get_token() became a POST.
    if not is_seconds(refresh_margin) or refresh_margin < 0:
        raise ConfigurationError(
            "refresh_margin must be a finite number of seconds >= 0", setting="refresh_margin"
        )
    if not isinstance(timeout, httpx.Timeout) and (not is_seconds(timeout) or timeout <= 0):
        raise ConfigurationError(
            f"timeout must be seconds > 0 or an httpx.Timeout, got {timeout!r}",
            setting="timeout",
        )


def _endpoint(
    tenant_id: str | None, authority_host: str | None, token_endpoint: str | None
) -> tuple[str, bool]:
    """The token endpoint URL and whether it is Azure-AD-shaped."""
    if token_endpoint is not None:
        if tenant_id is not None or authority_host is not None:
            raise ConfigurationError(
                "token_endpoint replaces tenant_id and authority_host; pass one or the other",
                setting="token_endpoint",
            )
        endpoint = require_secure_url(token_endpoint, setting="token_endpoint")
        return endpoint, is_azure_token_endpoint(endpoint)
    if not tenant_id:
        raise ConfigurationError(
            "tenant_id is required (AZURE_TENANT_ID), or pass token_endpoint=... for a "
            "non-Azure OAuth 2.0 server",
            setting="tenant_id",
        )
    host, host_setting = authority_host_from(authority_host)
    endpoint = token_endpoint_for(host, tenant_id)
    reject_tenant_in_host(host, tenant_id, setting=host_setting)
    return endpoint, True


def arguments_from_env(environ: Mapping[str, str], options: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor keywords ``environ`` holds (see ``TokenClient.from_env``).

    Every missing variable is named in one error, so a bare environment is fixed in one go.
    """
    _refuse_settings_read_from_env(options)
    tenants = _allowed_tenants_from_env(environ, options)
    identity = identity_from_env(environ)
    if identity is not None:
        return {"credential": identity, **tenants}
    # Stripped, as `ccflow token` does: a value read from a file often ends in a newline.
    given_id = environ.get("AZURE_CLIENT_ID")
    client_id = (given_id or "").strip()
    endpoint = environ.get("CCFLOW_TOKEN_ENDPOINT")
    tenant_id = environ.get("AZURE_TENANT_ID")
    missing: list[ConfigurationError] = []
    if not client_id:
        blank = "blank" if given_id else "not set"
        missing.append(ConfigurationError(f"AZURE_CLIENT_ID is {blank}", setting="AZURE_CLIENT_ID"))
    if not endpoint and not tenant_id:
        missing.append(
            ConfigurationError(
                "AZURE_TENANT_ID is not set (or set CCFLOW_TOKEN_ENDPOINT for another server)",
                setting="AZURE_TENANT_ID",
            )
        )
    if missing and not any(environ.get(name) for name in CREDENTIAL_VARIABLES):
        try:
            credential_from_env(environ)
        except ConfigurationError as exc:
            missing.append(exc)
    if missing:
        raise _one_error(missing)
    arguments: dict[str, Any] = {
        "client_id": client_id,
        "credential": credential_from_env(environ),
        **tenants,
    }
    if endpoint:
        arguments["token_endpoint"] = endpoint
    else:
        arguments["tenant_id"] = tenant_id
        arguments["authority_host"] = authority_host_from(None, environ)[0]
    return arguments


def _allowed_tenants_from_env(
    environ: Mapping[str, str], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``additionally_allowed_tenants`` from ``AZURE_ADDITIONALLY_ALLOWED_TENANTS``, if set."""
    tenants = [t.strip() for t in environ.get(ALLOWED_TENANTS_VARIABLE, "").split(";")]
    tenants = [t for t in tenants if t]
    if not tenants:
        return {}
    if "additionally_allowed_tenants" in options:
        raise ConfigurationError(
            f"from_env() reads additionally_allowed_tenants from {ALLOWED_TENANTS_VARIABLE}; "
            "unset the variable or drop the additionally_allowed_tenants= option",
            setting="additionally_allowed_tenants",
        )
    try:
        return {"additionally_allowed_tenants": list(allowed_tenants(tenants))}
    except ConfigurationError as exc:
        names = SettingNames({"additionally_allowed_tenants": ALLOWED_TENANTS_VARIABLE})
        raise names.error("additionally_allowed_tenants", str(exc)) from None


def _refuse_settings_read_from_env(options: Mapping[str, Any]) -> None:
    """Refuse ``from_env()`` options that would compete with a variable."""
    from_environment = sorted(set(options) & _FROM_ENV_SETTINGS)
    if from_environment:
        raise ConfigurationError(
            f"from_env() reads {', '.join(from_environment)} from the environment; set the "
            "variable, or call the constructor with every setting instead",
            setting=from_environment[0],
        )


def _one_error(errors: list[ConfigurationError]) -> ConfigurationError:
    """``errors`` as one ``ConfigurationError`` (the first one's setting)."""
    if len(errors) == 1:
        return errors[0]
    return ConfigurationError("; ".join(map(str, errors)), setting=errors[0].setting)


def named_after_variable(exc: ConfigurationError) -> ConfigurationError | None:
    """``exc`` about a setting ``from_env()`` read, renamed after its variable; else ``None``."""
    setting = exc.setting
    if setting is None or setting not in CALLER_VARIABLES:
        return None
    return _VARIABLES.error(setting, str(exc))
