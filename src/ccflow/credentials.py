"""How a client proves who it is: the :class:`Credential` protocol and :class:`ClientSecret`.

A credential is asked, once per token request (never on a cache hit), for the form fields and
headers that authenticate the client::

    fields = credential.request_fields(
        client_id="...", token_endpoint="https://.../token", auth_method="client_secret_post",
        now=time.time(),
    )

Design decision (for certificates and client assertions, issue 6): ``request_fields`` is
**synchronous and must be cheap**. Signing a ``private_key_jwt`` assertion takes about a
millisecond and the result is reused for minutes; reading a federated token file is one small
local read done at most every few minutes. Both faces therefore call the same method, and the
async face does not need a second code path. A credential that must do real IO (ask a remote
service for an assertion) may additionally implement ``async arequest_fields(...)`` with the
same arguments (:class:`AsyncCredential`); :class:`ccflow.AsyncTokenClient` prefers it when
present, :class:`ccflow.TokenClient` always uses the synchronous method.

Secrets never leave through ``repr``/``str`` and credentials refuse to be pickled.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, runtime_checkable
from urllib.parse import quote_plus

from ccflow._core.tokens import RequestFields
from ccflow.errors import ConfigurationError

__all__ = [
    "AUTH_METHODS",
    "AsyncCredential",
    "ClientSecret",
    "Credential",
    "RequestFields",
    "credential_from_env",
]

#: The ``auth_method`` values a client accepts. Secrets use the first two; assertion
#: credentials (certificates, federated tokens) always send ``private_key_jwt`` fields.
AUTH_METHODS = ("client_secret_post", "client_secret_basic", "private_key_jwt")


@runtime_checkable
class Credential(Protocol):
    """Anything that can authenticate a client-credentials token request.

    Implement one method; it runs on the slow path only (a token fetch), so it may sign or
    read a file, but it must not block for long. Example, a pre-made client assertion::

        class StaticAssertion:
            def __init__(self, jwt: str) -> None:
                self._jwt = jwt

            def request_fields(self, *, client_id, token_endpoint, auth_method, now):
                return RequestFields(form=(
                    ("client_id", client_id),
                    ("client_assertion_type",
                     "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", self._jwt),
                ))

        TokenClient(client_id="...", credential=StaticAssertion(jwt), tenant_id="...")
    """

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """Form fields and headers for one token request at ``now`` (Unix seconds)."""
        ...


@runtime_checkable
class AsyncCredential(Protocol):
    """Optional async twin of :meth:`Credential.request_fields` for credentials that do IO."""

    async def arequest_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """Like :meth:`Credential.request_fields`, awaited by :class:`ccflow.AsyncTokenClient`."""
        ...


def _no_pickle(obj: object) -> NoReturn:
    raise TypeError(
        f"{type(obj).__name__} holds a secret and cannot be pickled; "
        "build it again from configuration in the other process"
    )


@dataclass(frozen=True, slots=True)
class ClientSecret:
    """A client secret (the ``Value`` shown once in the Azure portal, not the Secret ID).

    ``TokenClient(client_secret="...")`` is short for ``credential=ClientSecret("...")``.
    Sent as ``client_secret_post`` (form fields, as Azure AD and msal do) or, with
    ``auth_method="client_secret_basic"``, as an ``Authorization: Basic`` header whose id and
    secret are form-urlencoded first (RFC 6749 section 2.3.1), so ``+ / % & = :`` survive::

        >>> ClientSecret("s3cret")
        ClientSecret(secret=<redacted>)
        >>> fields = ClientSecret("a:b").request_fields(
        ...     client_id="id", token_endpoint="https://x/token",
        ...     auth_method="client_secret_basic", now=0)
        >>> fields.headers
        (('Authorization', 'Basic aWQ6YSUzQWI='),)
    """

    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or not self.secret:
            raise ConfigurationError(
                "client_secret is empty; pass the secret's Value", setting="client_secret"
            )

    def __repr__(self) -> str:
        return "ClientSecret(secret=<redacted>)"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _no_pickle(self)

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """``client_id`` + ``client_secret`` form fields, or a Basic header."""
        if auth_method == "client_secret_post":
            return RequestFields(form=(("client_id", client_id), ("client_secret", self.secret)))
        if auth_method == "client_secret_basic":
            pair = f"{quote_plus(client_id)}:{quote_plus(self.secret)}".encode()
            header = "Basic " + base64.b64encode(pair).decode("ascii")
            return RequestFields(headers=(("Authorization", header),))
        raise ConfigurationError(
            f"auth_method {auth_method!r} does not work with a client secret; use "
            "'client_secret_post' or 'client_secret_basic'",
            setting="auth_method",
        )


def credential_from_env(environ: Mapping[str, str]) -> Credential:
    """The credential the environment describes, in azure-identity's EnvironmentCredential
    order. Today: ``AZURE_CLIENT_SECRET``. Issue 6 adds, after the secret, a certificate
    (``AZURE_CLIENT_CERTIFICATE_PATH``...) and then ``AZURE_FEDERATED_TOKEN_FILE`` here."""
    secret = environ.get("AZURE_CLIENT_SECRET")
    if secret:
        return ClientSecret(secret)
    raise ConfigurationError(
        "no credential in the environment: set AZURE_CLIENT_SECRET",
        setting="AZURE_CLIENT_SECRET",
    )
