"""The endpoint handlers: one request in, one answer (or a fault's misbehaviour) out.

No waiting and no sockets here: :class:`Outcome` says what to send and how late, and the faces
(:meth:`Authority.handle`, the ASGI app, the HTTP server) do the waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ccflow._core.urls import MULTI_TENANT_NAMES
from ccflow.authority import _aad
from ccflow.authority._aad import AadError, answer_headers, error_response, json_response
from ccflow.authority._assertions import ReplayCache
from ccflow.authority._faults import Fault
from ccflow.authority._managed_identity import answer_identity
from ccflow.authority._registrations import Registrations
from ccflow.authority._routes import Endpoints, Route
from ccflow.authority._token_endpoint import decide, token_body

__all__ = ["MAX_BODY", "Outcome", "Site", "answer", "discovery_document", "outcome"]

MAX_BODY = 1 << 20
"""The largest request body either server face reads (1 MiB); a larger one is answered 413."""

_METADATA_CACHE = {"Cache-Control": "max-age=86400, private"}
_SLOW_ANSWER = 30.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with one request: answer (maybe after a delay), or drop the connection."""

    response: httpx.Response | None
    delay: float = 0.0
    drop: bool = False
    timeout: bool = False

    @property
    def wait(self) -> float:
        """Seconds a server face holds the answer back: ``delay``, or 30 for a timeout
        without one (which a client with a shorter timeout sees as a timeout)."""
        return self.delay or (_SLOW_ANSWER if self.timeout else 0.0)


class Site(Protocol):
    """What the handlers ask of the authority they serve: :class:`Authority`'s members of
    these names, documented there."""

    @property
    def host(self) -> str: ...
    @property
    def registrations(self) -> Registrations: ...
    @property
    def tenant_ids(self) -> tuple[str, ...]: ...
    @property
    def token_lifetime(self) -> int: ...
    @property
    def managed_identity(self) -> str: ...
    def endpoints(self, *, tenant: str | None = None, version: int = 2) -> Endpoints: ...
    def jwks(self, *, version: int = 2, tenant_id: str | None = None) -> dict[str, Any]: ...
    def discovery(self, *, version: int = 2, tenant_id: str | None = None) -> dict[str, Any]: ...
    def token_claims(
        self, client: str, api: str, *, now: float | None = None, credential_type: str = "1"
    ) -> dict[str, Any]: ...
    def sign(self, claims: dict[str, Any]) -> str: ...


def outcome(
    fault: Fault | None,
    answer: Callable[[], httpx.Response],
    fault_answer: Callable[[Fault], httpx.Response],
) -> Outcome:
    """The outcome of a request under ``fault``: ``answer()`` is called only when the normal
    answer is sent (a token request is not even looked at when the fault replaces it)."""
    if fault is None:
        return Outcome(answer())
    if fault.drop:
        return Outcome(None, delay=fault.delay, drop=True)
    if fault.timeout:
        # In-process this is a read timeout; the servers answer, but only late.
        late = fault_answer(fault) if fault.answers else answer()
        return Outcome(late, delay=fault.delay, timeout=True)
    if fault.answers:
        return Outcome(fault_answer(fault), delay=fault.delay)
    return Outcome(answer(), delay=fault.delay)


def fault_response(
    fault: Fault, request: httpx.Request, *, host: str, now: float
) -> httpx.Response:
    """The answer a fault puts in place of the endpoint's: its body, or Azure AD's 503."""
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    if fault.body is not None:
        return httpx.Response(fault.status or 200, content=fault.body, headers=headers)
    err = _aad.TRANSIENT.with_status(fault.status or 503)()
    return error_response(err, host=host, now=now, request=request, headers=headers)


def answer(
    site: Site, request: httpx.Request, route: Route, *, now: float, replays: ReplayCache
) -> httpx.Response:
    """The endpoint's answer to ``request``, errors in Azure AD's shape."""
    if route.endpoint == "other":
        return _not_found(site, request)
    if route.endpoint in ("imds", "app_service"):
        return answer_identity(site, request, route.endpoint, now=now)
    try:
        tenant = _tenant(route, site.tenant_ids)
        if route.endpoint == "token":
            if request.method != "POST":
                raise _aad.POST_ONLY(method=request.method)
            return _token(site, request, tenant, route.version, now=now, replays=replays)
        if request.method not in ("GET", "HEAD"):
            raise _aad.GET_ONLY(method=request.method)
        if route.endpoint == "jwks":
            document = site.jwks(version=route.version, tenant_id=tenant)
        else:
            document = site.discovery(version=route.version, tenant_id=tenant)
        return json_response(200, document, headers=_METADATA_CACHE)
    except AadError as err:
        allow = "POST" if route.endpoint == "token" else "GET"
        extra = {"Allow": allow} if err.status == 405 else {}
        return error_response(err, host=site.host, now=now, request=request, headers=extra)


def _not_found(site: Site, request: httpx.Request) -> httpx.Response:
    """A 404 naming the endpoints that do exist (not an AADSTS error: no endpoint answered)."""
    urls = site.endpoints()
    description = (
        f"No endpoint at {request.url.path}. This authority serves "
        f"{urls.discovery_url}, {urls.jwks_uri} and {urls.token_endpoint}."
    )
    return json_response(404, {"error": "not_found", "error_description": description})


def _tenant(route: Route, tenant_ids: tuple[str, ...]) -> str:
    """The tenant the path names, as registered (``organizations``: metadata only)."""
    tenant = route.tenant
    if tenant.lower() in MULTI_TENANT_NAMES:
        if route.endpoint == "token":
            raise _aad.NO_TENANT(tenant=tenant)
        return tenant
    # Tenant ids are GUIDs (or domains): Azure AD matches them case-insensitively.
    known = {t.lower(): t for t in tenant_ids}
    if tenant.lower() not in known:
        row = _aad.TENANT_NOT_FOUND if route.endpoint == "token" else _aad.TENANT_NOT_FOUND_METADATA
        raise row(tenant=tenant)
    return known[tenant.lower()]


def _token(
    site: Site,
    request: httpx.Request,
    tenant: str,
    version: int,
    *,
    now: float,
    replays: ReplayCache,
) -> httpx.Response:
    """The token endpoint: decide the grant, then issue and sign the token."""
    grant = decide(
        request,
        registrations=site.registrations,
        tenant=tenant,
        version=version,
        now=now,
        replays=replays,
        token_endpoint=site.endpoints(tenant=tenant, version=version).token_endpoint,
    )
    claims = site.token_claims(
        grant.client.name, grant.api.name, now=now, credential_type=grant.credential_type
    )
    lifetime = site.token_lifetime
    token = site.sign(claims)
    body = token_body(grant, token=token, claims=claims, lifetime=lifetime, version=version)
    return json_response(200, body, headers=answer_headers(request))


def discovery_document(urls: Endpoints, *, host: str) -> dict[str, Any]:
    """The OpenID discovery document of ``urls``' tenant, shaped as Azure AD's."""
    oauth2 = urls.token_endpoint.removesuffix("/token")
    return {
        "issuer": urls.issuer,
        "authorization_endpoint": f"{oauth2}/authorize",
        "token_endpoint": urls.token_endpoint,
        "device_authorization_endpoint": f"{oauth2}/devicecode",
        "end_session_endpoint": f"{oauth2}/logout",
        "jwks_uri": urls.jwks_uri,
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver", "roles"],
        "request_uri_parameter_supported": False,
        "tenant_region_scope": None,
        "cloud_instance_name": httpx.URL(host).host,
    }
