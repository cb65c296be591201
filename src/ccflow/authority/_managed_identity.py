"""The managed identity endpoints, as Azure hosts serve them, for tests and demos.

=================  ==================================  =======================================
endpoint           path                                proof the caller runs on the host
=================  ==================================  =======================================
``imds``           ``/metadata/identity/oauth2/token``  header ``Metadata: true`` (else 400
                   (VMs, AKS: IMDS)                    ``invalid_request``, "Required metadata
                                                       header not specified")
``app_service``    ``/msi/token`` (App Service,        header ``X-IDENTITY-HEADER`` with the
                   Functions, Container Apps)          secret (missing or wrong: 401)
=================  ==================================  =======================================

Both take ``GET ?api-version=...&resource=<App ID URI or client id>[&client_id=...]``. The
system-assigned identity is the client named by ``Authority(managed_identity=...)``
(``calc-client`` by default); ``client_id`` picks any registered client of the home tenant as a
user-assigned identity. IMDS answers every number as a string, ``expires_in`` included; App
Service (api-version 2019-08-01) sends ``expires_on`` and no ``expires_in``. Errors come in each
host's own shape: IMDS's OAuth ``error``/``error_description``, App Service's
``statusCode``/``message``.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

import httpx

from ccflow.authority._aad import answer_headers, json_response
from ccflow.authority._registrations import ApiApp, ClientApp, Registrations

__all__ = [
    "APP_SERVICE_PATH",
    "IDENTITY_HEADER",
    "IMDS_PATH",
    "IdentityError",
    "answer_identity",
]

IMDS_PATH = "/metadata/identity/oauth2/token"
APP_SERVICE_PATH = "/msi/token"
IDENTITY_HEADER = "ccflow-local-identity-header"
"""The App Service header secret of the local authority: public, like its other test secrets."""

_API_VERSIONS = {"imds": ("2018-02-01", "2019-08-01"), "app_service": ("2019-08-01",)}


class IdentitySite(Protocol):
    """What the endpoints ask of the authority (its members of these names)."""

    @property
    def registrations(self) -> Registrations: ...
    @property
    def token_lifetime(self) -> int: ...
    @property
    def managed_identity(self) -> str: ...
    def token_claims(
        self, client: str, api: str, *, now: float | None = None, credential_type: str = "1"
    ) -> dict[str, Any]: ...
    def sign(self, claims: dict[str, Any]) -> str: ...


class IdentityError(Exception):
    """A refusal: HTTP status, an OAuth ``error`` code (IMDS) and the text."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def answer_identity(
    site: IdentitySite, request: httpx.Request, endpoint: str, *, now: float
) -> httpx.Response:
    """The ``imds`` or ``app_service`` endpoint's answer to ``request``."""
    try:
        client, api, resource = _decide(site, request, endpoint)
    except IdentityError as err:
        return _error(err, endpoint, request)
    claims = site.token_claims(client.name, api.name, now=now, credential_type="2")
    token = site.sign(claims)
    body: dict[str, Any] = {
        "access_token": token,
        "client_id": client.client_id,
        "expires_on": str(claims["exp"]),
        "resource": resource,
        "token_type": "Bearer",
    }
    if endpoint == "imds":
        body.update(
            refresh_token="",
            expires_in=str(site.token_lifetime),
            ext_expires_in=str(site.token_lifetime),
            not_before=str(claims["nbf"]),
        )
    return json_response(200, body, headers=answer_headers(request))


def _decide(
    site: IdentitySite, request: httpx.Request, endpoint: str
) -> tuple[ClientApp, ApiApp, str]:
    """The identity and API of a request that passes, or raise :class:`IdentityError`."""
    if request.method != "GET":
        raise IdentityError(405, "invalid_request", f"{request.method} is not allowed; use GET")
    _check_proof(request, endpoint)
    query = request.url.params
    version = query.get("api-version")
    if not version:
        raise IdentityError(
            400, "invalid_request", "Required query variable 'api-version' is missing"
        )
    if version not in _API_VERSIONS[endpoint]:
        raise IdentityError(400, "invalid_request", f"Invalid version {version}")
    resource = query.get("resource", "").strip()
    if not resource:
        raise IdentityError(400, "invalid_request", "Required audience parameter not specified")
    client = _identity(site, query.get("client_id"))
    registrations = site.registrations
    api = registrations.api_for_resource(resource)
    if api is None:
        tenant = registrations.tenant_of(client)
        raise IdentityError(
            400,
            "invalid_resource",
            f"AADSTS500011: The resource principal named {resource} was not found in the "
            f"tenant named {tenant}.",
        )
    return client, api, resource


def _check_proof(request: httpx.Request, endpoint: str) -> None:
    """The header that shows the caller runs on the host."""
    if endpoint == "imds":
        if request.headers.get("Metadata", "").lower() != "true":
            raise IdentityError(400, "invalid_request", "Required metadata header not specified")
        return
    given = request.headers.get("X-IDENTITY-HEADER", "")
    if not secrets.compare_digest(given.encode(), IDENTITY_HEADER.encode()):
        raise IdentityError(
            401, "unauthorized", "Unauthorized: the X-IDENTITY-HEADER header is missing or wrong."
        )


def _identity(site: IdentitySite, client_id: str | None) -> ClientApp:
    """The system-assigned identity, or the user-assigned one ``client_id`` names."""
    registrations = site.registrations
    if client_id is None:
        try:
            return registrations.client(site.managed_identity)
        except KeyError:
            raise IdentityError(400, "invalid_request", "Identity not found") from None
    client = registrations.client_by_id(client_id)
    if client is None or registrations.tenant_of(client) != registrations.tenant_id:
        raise IdentityError(400, "invalid_request", "Identity not found")
    return client


def _error(err: IdentityError, endpoint: str, request: httpx.Request) -> httpx.Response:
    """``err`` in the endpoint's own shape."""
    headers = answer_headers(request)
    if endpoint == "imds":
        payload: dict[str, Any] = {"error": err.error, "error_description": err.description}
    else:
        payload = {"statusCode": err.status, "message": err.description}
    if err.status == 405:
        headers["Allow"] = "GET"
    return json_response(err.status, payload, headers=headers)
