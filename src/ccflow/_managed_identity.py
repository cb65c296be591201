"""Managed identity: tokens as Azure hosts hand them out, without a secret of the app's own.

Which endpoint, read from the environment once, when the credential is made (as azure-identity
does; nothing is probed on the network):

=====================================  =========================================================
environment                            request
=====================================  =========================================================
``IDENTITY_ENDPOINT`` and              App Service, Functions, Container Apps:
``IDENTITY_HEADER``                    ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=``
                                       with the header ``X-IDENTITY-HEADER: {IDENTITY_HEADER}``
neither                                IMDS (VMs, scale sets, AKS): ``GET {host}/metadata/identity/
                                       oauth2/token?api-version=2018-02-01&resource=`` with
                                       ``Metadata: true``; ``host`` is
                                       ``AZURE_POD_IDENTITY_AUTHORITY_HOST``, else
                                       ``http://169.254.169.254``
only one of the two                    refused (Azure Arc and Service Fabric set one without the
                                       other; ccflow does not speak their protocols)
=====================================  =========================================================

The scope ``api://x/.default`` asks for ``resource=api://x``; a user-assigned identity is chosen
by ``client_id``. Building the request does no IO: :class:`ccflow.TokenClient` sends it with
the same cache, single flight, refresh and retries as every other credential, retrying
404, 410, 429 and 5xx as Azure's IMDS guidance asks (:class:`ManagedIdentityRetry`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from ccflow._core.retry import RetryPolicy, is_retryable_status
from ccflow._core.tokens import DEFAULT_SUFFIX, RequestFields, TokenRequest
from ccflow._unpicklable import Unpicklable
from ccflow.errors import ConfigurationError

__all__ = [
    "APP_SERVICE_API_VERSION",
    "IMDS_API_VERSION",
    "IMDS_HOST",
    "IMDS_PATH",
    "ManagedIdentity",
    "ManagedIdentityRetry",
]

IMDS_HOST = "http://169.254.169.254"
IMDS_PATH = "/metadata/identity/oauth2/token"
IMDS_API_VERSION = "2018-02-01"
APP_SERVICE_API_VERSION = "2019-08-01"
#: Statuses IMDS answers while it cannot serve yet: 404 (identity being assigned), 410
#: (IMDS being updated); 429 and 5xx are retried as for every endpoint.
_IMDS_RETRY_STATUSES = frozenset({404, 410})


def _default_imds_host() -> str:
    """The IMDS address (a function, so that the test suite can refuse to reach it)."""
    return IMDS_HOST


@dataclass(frozen=True, slots=True)
class ManagedIdentityRetry(RetryPolicy):
    """Azure's IMDS retry guidance: 404, 410, 429 and 5xx are retried with exponential backoff
    (0.8 s doubling, at most 12.8 s); a 410 (IMDS updating, which Azure says may last up to
    70 s) waits 10 s doubling up to 40 s, so the default three retries span 35-70 s."""

    base: float = 0.8
    max_backoff: float = 12.8
    updating_base: float = 10.0
    updating_max_backoff: float = 40.0

    def retries(self, status: int | None) -> bool:
        """404 and 410 too, besides 429 and 5xx."""
        return status in _IMDS_RETRY_STATUSES or is_retryable_status(status)

    def delay(
        self, attempt: int, retry_after: float | None = None, status: int | None = None
    ) -> float:
        """The longer backoff after a 410; otherwise :meth:`RetryPolicy.delay`."""
        if retry_after is None and status == 410:
            return self.backoff(self.updating_base, attempt, self.updating_max_backoff)
        return RetryPolicy.delay(self, attempt, retry_after, status)


class ManagedIdentity(Unpicklable):
    """The managed identity of the Azure host this runs on, as a credential.

    ``client_id`` picks a user-assigned identity; ``None`` is the system-assigned one.
    ``environ`` (default ``os.environ``) is read once, here::

        client = TokenClient(credential=ManagedIdentity())
        token = client.get_token("api://calc-api/.default")

        TokenClient(credential=ManagedIdentity(client_id="<user-assigned client id>"))

    One resource per request (``api://x/.default`` asks for ``resource=api://x``). The
    ``IDENTITY_HEADER`` secret never appears in ``repr``, logs or errors.
    """

    __slots__ = ("_client_id", "_endpoint", "_header", "_kind")
    _WHY_UNPICKLABLE = (
        "may hold the host's IDENTITY_HEADER secret and cannot be pickled; create one in the "
        "other process"
    )

    def __init__(
        self, client_id: str | None = None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        if client_id is not None and (not isinstance(client_id, str) or not client_id.strip()):
            raise ConfigurationError(
                f"client_id must be the user-assigned identity's client id, or None for the "
                f"system-assigned identity; got {client_id!r}",
                setting="client_id",
            )
        env = os.environ if environ is None else environ
        self._client_id = client_id.strip() if client_id else None
        endpoint = env.get("IDENTITY_ENDPOINT", "").strip()
        header = env.get("IDENTITY_HEADER", "").strip()
        if endpoint and header:
            if not (header.isascii() and header.isprintable()):
                # Never sent: httpx's and h11's errors would quote the value.
                raise ConfigurationError(
                    "IDENTITY_HEADER holds characters no HTTP header may carry (non-ASCII or "
                    "control characters); it must be the value the Azure host set",
                    setting="IDENTITY_HEADER",
                )
            self._kind = "app_service"
            self._endpoint = _checked_url(endpoint, "IDENTITY_ENDPOINT")
            self._header: str | None = header
        elif endpoint or header:
            present, absent = (
                ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")
                if endpoint
                else ("IDENTITY_HEADER", "IDENTITY_ENDPOINT")
            )
            raise ConfigurationError(
                f"{present} is set but {absent} is not: App Service, Functions and Container "
                "Apps set both (Azure Arc and Service Fabric, which set one, are not supported)",
                setting=absent,
            )
        else:
            host = env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", "").strip()
            setting = "AZURE_POD_IDENTITY_AUTHORITY_HOST"
            base = _checked_url(host, setting) if host else _default_imds_host()
            self._kind = "imds"
            self._endpoint = base.rstrip("/") + IMDS_PATH
            self._header = None

    @property
    def client_id(self) -> str | None:
        """The user-assigned identity's client id; ``None`` for the system-assigned one."""
        return self._client_id

    @property
    def endpoint(self) -> str:
        """Where tokens come from: the IMDS token URL or ``IDENTITY_ENDPOINT``."""
        return self._endpoint

    @property
    def kind(self) -> str:
        """``"imds"`` or ``"app_service"`` (App Service, Functions, Container Apps)."""
        return self._kind

    @property
    def name(self) -> str:
        """How messages name the identity."""
        if self._client_id is None:
            return "system-assigned managed identity"
        return f"managed identity {self._client_id}"

    def __repr__(self) -> str:
        return (
            f"ManagedIdentity(client_id={self._client_id!r}, kind={self._kind!r}, "
            f"endpoint={self._endpoint!r})"
        )

    def retry_policy(self, max_retries: int) -> RetryPolicy:
        """How token requests are retried: :class:`ManagedIdentityRetry`."""
        return ManagedIdentityRetry(max_retries=max_retries)

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """Nothing: the client proves nothing itself (see :meth:`token_request`)."""
        return RequestFields()

    def token_request(self, *, scopes: tuple[str, ...], now: float) -> TokenRequest:
        """The GET for ``scopes`` (one resource, ``<resource>/.default``)."""
        if len(scopes) != 1:
            raise ConfigurationError(
                f"a managed identity gets a token for one resource at a time, got "
                f"{len(scopes)} scopes ({' '.join(scopes)}); ask for each separately",
                setting="scopes",
            )
        resource = scopes[0].removesuffix(DEFAULT_SUFFIX)
        if self._kind == "imds":
            query = [("api-version", IMDS_API_VERSION), ("resource", resource)]
            headers: tuple[tuple[str, str], ...] = (("Metadata", "true"),)
        else:
            assert self._header is not None
            query = [("api-version", APP_SERVICE_API_VERSION), ("resource", resource)]
            headers = (("X-IDENTITY-HEADER", self._header),)
        if self._client_id is not None:
            query.append(("client_id", self._client_id))
        joiner = "&" if "?" in self._endpoint else "?"
        url = f"{self._endpoint}{joiner}{urlencode(query)}"
        return TokenRequest(url, (*headers, ("Accept", "application/json")), b"", method="GET")


def _checked_url(value: str, setting: str) -> str:
    """``value`` if it is an http(s) URL with a host; the error names ``setting``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"{setting} must be an http:// or https:// URL, got {value!r}", setting=setting
        )
    return value
