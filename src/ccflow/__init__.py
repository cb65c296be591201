"""ccflow: the OAuth 2.0 client-credentials flow, simple, fast and safe at both ends.

Caller side::

    from ccflow import TokenClient

    with TokenClient(client_id=..., client_secret=..., tenant_id=...) as client:
        token = client.get_token("api://calc-api/.default")

API side::

    app.add_middleware(RequireRole("invokeRole"))
"""

from __future__ import annotations

import typing

from ccflow._core.tokens import AccessToken
from ccflow._token_cache import (
    AsyncTokenCache,
    CacheEntry,
    FileTokenCache,
    MemoryTokenCache,
    TokenCache,
    TokenKey,
)
from ccflow._version import __version__
from ccflow.client import AsyncTokenClient, TokenClient
from ccflow.credentials import (
    ClientAssertion,
    ClientCertificate,
    ClientSecret,
    Credential,
    ManagedIdentity,
)
from ccflow.errors import (
    AuthorityUnreachableError,
    CCFlowError,
    ConfigurationError,
    CredentialError,
    InsufficientScopeError,
    InvalidTokenError,
    KeysUnavailableError,
    TokenRequestError,
)
from ccflow.httpx_auth import AsyncBearerAuth, BearerAuth
from ccflow.validation import TokenValidator, ValidatedToken

if typing.TYPE_CHECKING:
    from ccflow.starlette import RequireRole, RequireScope

__all__ = [
    "AccessToken",
    "AsyncBearerAuth",
    "AsyncTokenCache",
    "AsyncTokenClient",
    "AuthorityUnreachableError",
    "BearerAuth",
    "CCFlowError",
    "CacheEntry",
    "ClientAssertion",
    "ClientCertificate",
    "ClientSecret",
    "ConfigurationError",
    "Credential",
    "CredentialError",
    "FileTokenCache",
    "InsufficientScopeError",
    "InvalidTokenError",
    "KeysUnavailableError",
    "ManagedIdentity",
    "MemoryTokenCache",
    "RequireRole",
    "RequireScope",
    "TokenCache",
    "TokenClient",
    "TokenKey",
    "TokenRequestError",
    "TokenValidator",
    "ValidatedToken",
    "__version__",
]


def __getattr__(name: str) -> typing.Any:
    # The middlewares are imported on first use, so that the caller side imports no ASGI
    # framework.
    if name in ("RequireRole", "RequireScope"):
        from ccflow import starlette

        return getattr(starlette, name)
    raise AttributeError(f"module 'ccflow' has no attribute {name!r}")
