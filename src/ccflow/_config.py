"""Settings read from the environment, in one table, and the one way errors name them.

Constructors take keyword arguments; ``from_env()`` reads the variables below and passes the
same values through the same checks. A bad value read from a variable is reported under the
variable's name (``CCFLOW_AUDIENCE: ...``), a bad argument under the argument's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ccflow._core.urls import DEFAULT_AUTHORITY_HOST, normalize_authority_host
from ccflow.errors import ConfigurationError

__all__ = [
    "ALLOWED_TENANTS_VARIABLE",
    "CACHE_VARIABLES",
    "CALLER_VARIABLES",
    "CLIENT_SECRET_VARIABLES",
    "VALIDATOR_VARIABLES",
    "ARGUMENTS",
    "SettingNames",
    "authority_host_from",
]

CALLER_VARIABLES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "client_id": "AZURE_CLIENT_ID",
        "tenant_id": "AZURE_TENANT_ID",
        "authority_host": "AZURE_AUTHORITY_HOST",
        "token_endpoint": "CCFLOW_TOKEN_ENDPOINT",
    }
)
"""Which variable ``TokenClient.from_env`` reads for each constructor argument (the
credential's variables are :data:`ccflow.credentials.CREDENTIAL_VARIABLES`)."""

ALLOWED_TENANTS_VARIABLE: Final = "AZURE_ADDITIONALLY_ALLOWED_TENANTS"
"""Where ``TokenClient.from_env`` reads ``additionally_allowed_tenants``: tenant ids separated
by ``;`` (``*``: any), as the Azure SDKs for .NET, Java, JavaScript and Go read it."""

CLIENT_SECRET_VARIABLES: Final[tuple[str, ...]] = ("AZURE_CLIENT_SECRET", "CCFLOW_CLIENT_SECRET")
"""Where ``from_env()`` and ``ccflow token`` read a client secret, first set wins:
``AZURE_CLIENT_SECRET`` (azure-identity's name), then ``CCFLOW_CLIENT_SECRET``."""

CACHE_VARIABLES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cache": "CCFLOW_TOKEN_CACHE",
        "encryption_key": "CCFLOW_TOKEN_CACHE_KEY",
    }
)
"""The shared token cache ``TokenClient.from_env`` and ``ccflow token`` use (a ``redis://``,
``rediss://`` or ``unix://`` URL), and the key that encrypts its entries."""

VALIDATOR_VARIABLES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "issuer": "CCFLOW_ISSUER",
        "tenant_id": "CCFLOW_TENANT_ID",
        "authority_host": "AZURE_AUTHORITY_HOST",
        "audience": "CCFLOW_AUDIENCE",
        "allowed_clients": "CCFLOW_ALLOWED_CLIENTS",
        "allowed_tenants": "CCFLOW_ALLOWED_TENANTS",
        "accept_v1": "CCFLOW_ACCEPT_V1",
    }
)
"""Which variable ``TokenValidator.from_env`` reads for each constructor argument."""


class SettingNames:
    """How configuration errors name a setting: the argument, or the variable it came from."""

    __slots__ = ("_names",)

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self._names: Mapping[str, str] = names or {}

    def __call__(self, setting: str) -> str:
        """The name a user set ``setting`` by."""
        return self._names.get(setting, setting)

    def error(self, setting: str, message: str) -> ConfigurationError:
        """``ConfigurationError("<name>: <message>")`` with ``setting`` set to that name."""
        name = self(setting)
        return ConfigurationError(f"{name}: {message}", setting=name)


ARGUMENTS: Final = SettingNames()
"""Errors about constructor arguments name the argument."""


def authority_host_from(
    given: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """``(normalised host, the setting it came from)``: the argument, else
    ``AZURE_AUTHORITY_HOST`` (as the Azure SDKs read it), else the public cloud's host."""
    env = os.environ if environ is None else environ
    if given is not None:
        return normalize_authority_host(given), "authority_host"
    from_env = env.get("AZURE_AUTHORITY_HOST", "").strip()
    if from_env:
        setting = "AZURE_AUTHORITY_HOST"
        return normalize_authority_host(from_env, setting=setting), setting
    return DEFAULT_AUTHORITY_HOST, "authority_host"
