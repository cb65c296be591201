"""The local authority: Azure AD v2's discovery, JWKS and token endpoint, in-process."""

from __future__ import annotations

import collections
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import jwt

from ccflow._core.urls import (
    MULTI_TENANT_NAMES,
    discovery_url_for,
    jwks_uri_for,
    normalize_authority_host,
    token_endpoint_for,
)
from ccflow.authority._aad import (
    AadError,
    error_response,
    json_response,
    missing,
    parse_basic,
    parse_form,
    success_headers,
)
from ccflow.authority._assertions import JWT_BEARER, ReplayCache, verify_assertion
from ccflow.authority._faults import Fault, FaultBoard
from ccflow.authority._keys import SigningKey, pool_key
from ccflow.authority._registrations import (
    ApiApp,
    ClientApp,
    Registrations,
)

if TYPE_CHECKING:
    import respx

__all__ = ["DEFAULT_HOST", "Authority"]

DEFAULT_HOST = "https://login.ccflow.test"
_TEMPLATE = "{tenantid}"
MAX_BODY = 1 << 20
"""The largest request body either server face reads (1 MiB); a larger one is answered 413."""

ASGIScope = Mapping[str, Any]
ASGIReceive = Callable[[], Any]
ASGISend = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with one request: answer (maybe after a delay), or drop the connection."""

    response: httpx.Response | None
    delay: float = 0.0
    drop: bool = False
    timeout: bool = False


class Authority:
    """A local token issuer shaped like Azure AD v2, served from memory.

    ::

        authority = Authority()
        with httpx.Client(transport=authority.transport()) as http:
            r = http.post(authority.token_endpoint, data={
                "grant_type": "client_credentials",
                "client_id": authority.client("calc-client").client_id,
                "client_secret": authority.client("calc-client").secret,
                "scope": authority.api("calc-api").default_scope,
            })

    Endpoints (``{t}`` is the tenant id): ``/{t}/v2.0/.well-known/openid-configuration``,
    ``/{t}/.well-known/openid-configuration`` (v1), ``/{t}/discovery/v2.0/keys``,
    ``/{t}/discovery/keys`` (v1), ``/{t}/oauth2/v2.0/token`` and ``/{t}/oauth2/token``
    (v1: ``resource`` instead of ``scope``). Thread-safe: the real server
    (``ccflow authority serve``) calls :meth:`handle` from many threads.

    Multi-tenant, as Azure AD: every tenant of :attr:`tenant_ids` has these endpoints, and
    ``/organizations/...`` and ``/common/...`` serve discovery documents whose issuer is the
    template ``{host}/{tenantid}/v2.0`` (v1: ``{host}/{tenantid}/``) and the same keys. A
    client gets tokens from its home tenant's token endpoint, naming that tenant in ``tid`` and
    ``iss`` (see :meth:`Registrations.multi_tenant`).

    ``one_time_assertions=True`` refuses a client assertion presented a second time; by
    default, as in Azure AD, a client may resend the same assertion until it expires and only
    another assertion reusing a seen ``jti`` is refused (AADSTS700229).
    """

    def __init__(
        self,
        registrations: Registrations | None = None,
        *,
        host: str = DEFAULT_HOST,
        token_lifetime: int = 3599,
        clock: Callable[[], float] = time.time,
        one_time_assertions: bool = False,
    ) -> None:
        if registrations is not None and not isinstance(registrations, Registrations):
            # A TOML path (or a mapping) passed as is failed later with an AttributeError.
            hint = (
                "Registrations.from_toml(path)"
                if isinstance(registrations, str | os.PathLike)
                else "Registrations.from_mapping(...)"
            )
            raise TypeError(
                f"registrations must be a Registrations, got {type(registrations).__name__}: "
                f"pass {hint}"
            )
        if isinstance(token_lifetime, bool) or not isinstance(token_lifetime, int):
            raise TypeError(f"token_lifetime must be whole seconds, got {token_lifetime!r}")
        if token_lifetime <= 0:
            raise ValueError(f"token_lifetime must be positive, got {token_lifetime!r}")
        self.registrations = (
            registrations if registrations is not None else (Registrations.default())
        )
        self.host = normalize_authority_host(host, setting="host")
        # A host with a path (a proxy prefix, ``https://host/prefix``) puts its endpoints under
        # that prefix: requests are routed on what follows it.
        self._prefix = httpx.URL(self.host).path.rstrip("/")
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._faults = FaultBoard()
        self._replays = ReplayCache(one_time=one_time_assertions)
        self._next_key = 0
        self._keys: dict[str, SigningKey] = {}
        self._published: list[str] = []
        self._signing_kid = ""
        self.rotate_keys()

    def __repr__(self) -> str:
        return f"Authority(host={self.host!r}, tenant_id={self.tenant_id!r})"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def tenant_id(self) -> str:
        """The tenant id (fixed for the built-in registrations)."""
        return self.registrations.tenant_id

    @property
    def issuer(self) -> str:
        """The v2 issuer: ``{host}/{tenant_id}/v2.0``."""
        return f"{self.host}/{self.tenant_id}/v2.0"

    @property
    def tenant_ids(self) -> tuple[str, ...]:
        """Every tenant served: :attr:`tenant_id` first, then the registrations' ``tenants``."""
        return self.registrations.tenant_ids

    def issuer_for(self, tenant_id: str, *, version: int = 2) -> str:
        """The issuer of tokens from ``tenant_id`` (``"organizations"``/``"common"``: the
        ``{tenantid}`` template their discovery documents carry)."""
        if tenant_id.lower() in MULTI_TENANT_NAMES:
            tenant_id = _TEMPLATE
        return f"{self.host}/{tenant_id}/v2.0" if version == 2 else f"{self.host}/{tenant_id}/"

    def token_endpoint_for(self, tenant_id: str, *, version: int = 2) -> str:
        """``{host}/{tenant_id}/oauth2/v2.0/token``: a client's home tenant's token endpoint
        (``version=1``: the v1 endpoint, ``{host}/{tenant_id}/oauth2/token``)."""
        if version == 1:
            return f"{self.host}/{tenant_id}/oauth2/token"
        return token_endpoint_for(self.host, tenant_id)

    def discovery_url_for(self, tenant_id: str, *, version: int = 2) -> str:
        """The discovery document of ``tenant_id``, or of ``"organizations"``/``"common"``."""
        return discovery_url_for(self.host, tenant_id, version=version)

    @property
    def issuer_v1(self) -> str:
        """The v1 issuer: ``{host}/{tenant_id}/`` (Azure AD's is ``https://sts.windows.net/{tid}/``;
        the local authority keeps its own host so v1 tokens cannot pass as Azure AD's)."""
        return f"{self.host}/{self.tenant_id}/"

    @property
    def token_endpoint(self) -> str:
        """``{host}/{tenant_id}/oauth2/v2.0/token``."""
        return token_endpoint_for(self.host, self.tenant_id)

    @property
    def token_endpoint_v1(self) -> str:
        """``{host}/{tenant_id}/oauth2/token``: the v1 endpoint, which takes ``resource``
        instead of ``scope`` and answers its numbers as strings, as Azure AD's does."""
        return self.token_endpoint_for(self.tenant_id, version=1)

    @property
    def jwks_uri(self) -> str:
        """``{host}/{tenant_id}/discovery/v2.0/keys``."""
        return jwks_uri_for(self.host, self.tenant_id)

    @property
    def jwks_uri_v1(self) -> str:
        """``{host}/{tenant_id}/discovery/keys``."""
        return jwks_uri_for(self.host, self.tenant_id, version=1)

    @property
    def discovery_url(self) -> str:
        """``{host}/{tenant_id}/v2.0/.well-known/openid-configuration``."""
        return discovery_url_for(self.host, self.tenant_id)

    @property
    def discovery_url_v1(self) -> str:
        """``{host}/{tenant_id}/.well-known/openid-configuration``."""
        return discovery_url_for(self.host, self.tenant_id, version=1)

    def api(self, name: str) -> ApiApp:
        """The API app registered under ``name`` (``"calc-api"``)."""
        return self.registrations.api(name)

    def client(self, name: str) -> ClientApp:
        """The client app registered under ``name`` (``"calc-client"``, ``"reader-client"``)."""
        return self.registrations.client(name)

    # -- keys --------------------------------------------------------------------------------

    @property
    def signing_kid(self) -> str:
        """The ``kid`` new tokens are signed with."""
        return self._signing_kid

    @property
    def kids(self) -> tuple[str, ...]:
        """The ``kid`` of every published key, oldest first."""
        with self._lock:
            return tuple(self._published)

    def key(self, kid: str) -> SigningKey:
        """The signing key with this ``kid`` (published or retired)."""
        return self._keys[kid]

    def rotate_keys(self) -> str:
        """Add a key, publish it and sign with it from now on; the previous key stays
        published until :meth:`retire_key`. Returns the new ``kid``."""
        with self._lock:
            key = pool_key(self._next_key)
            self._next_key += 1
            self._keys[key.kid] = key
            self._published.append(key.kid)
            self._signing_kid = key.kid
            return key.kid

    def retire_key(self, kid: str) -> None:
        """Stop publishing ``kid``. Retiring the signing key makes the newest remaining key sign;
        the last published key cannot be retired (rotate first)."""
        with self._lock:
            if kid not in self._published:
                raise KeyError(f"kid {kid!r} is not published; published: {self._published}")
            if len(self._published) == 1:
                raise ValueError("cannot retire the only published key; call rotate_keys() first")
            self._published.remove(kid)
            if kid == self._signing_kid:
                self._signing_kid = self._published[-1]

    def jwks(self, *, version: int = 2, tenant_id: str | None = None) -> dict[str, Any]:
        """The JWKS document the keys endpoints serve (of ``tenant_id``, default the first
        tenant; every tenant publishes the same keys, each naming its own issuer)."""
        issuer = self.issuer_for(tenant_id or self.tenant_id) if version == 2 else None
        return {"keys": [self._keys[kid].jwk(issuer=issuer) for kid in self.kids]}

    # -- faults ------------------------------------------------------------------------------

    def set_fault(self, endpoint: str, fault: Fault) -> None:
        """Make ``endpoint`` (``"token"``, ``"jwks"`` or ``"discovery"``) misbehave."""
        self._faults.set(endpoint, fault)

    def clear_fault(self, endpoint: str | None = None) -> None:
        """Undo :meth:`set_fault` for ``endpoint`` (every endpoint when ``None``)."""
        self._faults.clear(endpoint)

    # -- tokens ------------------------------------------------------------------------------

    def token_claims(
        self,
        client: str = "calc-client",
        api: str = "calc-api",
        *,
        roles: Sequence[str] | None = None,
        version: int | None = None,
        lifetime: int | None = None,
        now: float | None = None,
        credential_type: str = "1",
    ) -> dict[str, Any]:
        """The claims of an access token for ``client`` calling ``api``, as the token endpoint
        issues it. ``roles=None`` means the granted roles; ``()`` means no ``roles`` claim."""
        client_app, api_app = self.client(client), self.api(api)
        return self._claims(
            client_app,
            api_app,
            roles=client_app.roles_for(api_app.name) if roles is None else tuple(roles),
            version=version or api_app.access_token_version,
            lifetime=self.token_lifetime if lifetime is None else lifetime,
            now=self.clock() if now is None else now,
            credential_type=credential_type,
        )

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` with the current key (or the key ``kid``), RS256, with Azure AD's
        header (``typ``, ``alg``, ``kid``, ``x5t``) updated by ``headers``."""
        key = self._keys[kid or self._signing_kid]
        header = {"typ": "JWT", "alg": "RS256", "x5t": key.x5t, "kid": key.kid, **(headers or {})}
        return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=header)

    def mint(
        self,
        client: str = "calc-client",
        api: str = "calc-api",
        *,
        roles: Sequence[str] | None = None,
        version: int | None = None,
        lifetime: int | None = None,
        now: float | None = None,
        claims: Mapping[str, Any] | None = None,
        omit: Iterable[str] = (),
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed access token, as the token endpoint would issue it, without a request.

        ``roles`` overrides the granted roles (``()`` for none), ``version`` the API's token
        version (1 or 2), ``lifetime`` the lifetime in seconds, ``now`` the issue time;
        ``claims`` adds or replaces claims, ``omit`` removes them; ``kid`` signs with another
        (published or retired) key; ``headers`` adds or replaces header fields.
        """
        body = self.token_claims(
            client, api, roles=roles, version=version, lifetime=lifetime, now=now
        )
        body.update(claims or {})
        for name in omit:
            body.pop(name, None)
        return self.sign(body, kid=kid, headers=headers)

    def _claims(
        self,
        client: ClientApp,
        api: ApiApp,
        *,
        roles: tuple[str, ...],
        version: int,
        lifetime: int,
        now: float,
        credential_type: str,
    ) -> dict[str, Any]:
        iat = int(now)
        oid = client.object_id or client.client_id
        tenant = self.registrations.tenant_of(client)
        claims: dict[str, Any] = {
            "aud": api.client_id if version == 2 else api.identifier_uri,
            "iss": self.issuer_for(tenant, version=version),
            "iat": iat,
            "nbf": iat,
            "exp": iat + lifetime,
            "aio": _opaque(48),
        }
        if version == 2:
            claims.update(azp=client.client_id, azpacr=credential_type)
        else:
            claims.update(
                appid=client.client_id,
                appidacr=credential_type,
                idp=self.issuer_for(tenant, version=1),
            )
        claims.update(oid=oid)
        if roles:
            claims["roles"] = list(roles)
        claims.update(
            rh=f"0.A{_opaque(40)}.",
            sub=oid,
            tid=tenant,
            uti=_opaque(22),
            ver="2.0" if version == 2 else "1.0",
        )
        return claims

    # -- the server --------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request, synchronously, applying faults (``drop`` raises
        ``httpx.ConnectError``, ``timeout`` raises ``httpx.ReadTimeout``)."""
        outcome = self.serve(request)
        if outcome.drop:
            raise httpx.ConnectError("connection dropped (fault)", request=request)
        if outcome.timeout:
            raise httpx.ReadTimeout("timed out (fault)", request=request)
        assert outcome.response is not None
        return outcome.response

    def transport(self) -> httpx.MockTransport:
        """An httpx transport onto :meth:`handle`, for ``httpx.Client`` and ``AsyncClient``."""
        return httpx.MockTransport(self.handle)

    def mock(self, router: respx.MockRouter | None = None) -> respx.MockRouter:
        """respx routes sending every request for :attr:`host` to :meth:`handle`.

        ``with authority.mock(): ...`` patches httpx for the block; pass a ``router`` (e.g. the
        ``respx_mock`` fixture) to add the route to it instead.
        """
        try:
            import respx
        except ImportError:  # pragma: no cover - respx is a testing extra
            raise ImportError(
                "Authority.mock() needs respx: pip install 'ccflow[testing]'"
            ) from None
        if router is None:
            router = respx.mock(assert_all_called=False, assert_all_mocked=True)
        url = httpx.URL(self.host)
        pattern: dict[str, Any] = {"scheme": url.scheme, "host": url.host}
        if url.port is not None:
            pattern["port"] = url.port
        router.route(**pattern).mock(side_effect=self.handle)
        return router

    @property
    def asgi(self) -> Callable[[ASGIScope, ASGIReceive, ASGISend], Any]:
        """The same server as an ASGI application (for uvicorn and ASGI test clients)."""
        return self._asgi

    async def _asgi(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        import anyio

        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            # No WebSocket endpoints: refuse the handshake rather than leave it hanging.
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            return
        chunks = bytearray()
        while True:
            message = await receive()
            chunks += message.get("body", b"")
            if len(chunks) > MAX_BODY:
                # As the TLS server does: a bounded read, whatever Content-Length claimed.
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send(
                    {
                        "type": "http.response.body",
                        "body": f"request body over {MAX_BODY} bytes".encode(),
                    }
                )
                return
            if not message.get("more_body"):
                break
        body = bytes(chunks)
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{self.host}{scope['path']}" + (f"?{query}" if query else "")
        # As bytes: httpx insists on ASCII for str header values, ASGI's may be any bytes.
        headers = [(bytes(k), bytes(v)) for k, v in scope["headers"]]
        request = httpx.Request(scope["method"], url, headers=headers, content=body)
        outcome = self.serve(request)
        if outcome.delay or outcome.timeout:
            await anyio.sleep(outcome.delay or 30.0)
        if outcome.drop or outcome.response is None:
            # ASGI has no way to close a connection silently; failing before the response
            # starts makes the server abort it.
            raise ConnectionAbortedError("connection dropped (fault)")
        response = outcome.response
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in response.headers.multi_items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    def serve(self, request: httpx.Request) -> Outcome:
        """Route one request and decide what to do with it, faults included, without waiting
        (the faces wait: :meth:`handle` never, the real server and :attr:`asgi` do)."""
        try:
            request.content  # noqa: B018 - raises if the body was not read yet
        except httpx.RequestNotRead:
            request.read()
        path = request.url.path
        prefix = self._prefix
        if prefix:
            path = path[len(prefix) :] if path.startswith(prefix + "/") else ""
        endpoint, tenant, version = _route(path)
        with self._lock:
            self.hits[endpoint] += 1
        now = self.clock()
        fault = self._faults.take(endpoint) if endpoint in ("token", "jwks", "discovery") else None
        if fault is not None:
            if fault.drop:
                return Outcome(None, delay=fault.delay, drop=True)
            if fault.timeout:
                # In-process this is a read timeout; the servers answer, but only late.
                late = (
                    self._fault_response(fault, request, now)
                    if fault.answers
                    else self._answer(request, endpoint, tenant, version, now)
                )
                return Outcome(late, delay=fault.delay, timeout=True)
            if fault.answers:
                return Outcome(self._fault_response(fault, request, now), delay=fault.delay)
        return Outcome(
            self._answer(request, endpoint, tenant, version, now),
            delay=fault.delay if fault else 0.0,
        )

    def _fault_response(self, fault: Fault, request: httpx.Request, now: float) -> httpx.Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        if fault.body is not None:
            return httpx.Response(fault.status or 200, content=fault.body, headers=headers)
        status = fault.status or 503
        err = AadError(
            status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        )
        return error_response(err, host=self.host, now=now, request=request, headers=headers)

    def _answer(
        self, request: httpx.Request, endpoint: str, tenant: str, version: int, now: float
    ) -> httpx.Response:
        if endpoint == "other":
            return json_response(
                404,
                {
                    "error": "not_found",
                    "error_description": (
                        f"No endpoint at {request.url.path}. This authority serves "
                        f"{self.discovery_url}, {self.jwks_uri} and {self.token_endpoint}."
                    ),
                },
            )
        try:
            alias = tenant.lower() in MULTI_TENANT_NAMES
            if alias and endpoint == "token":
                raise AadError(
                    400,
                    "invalid_request",
                    50059,
                    f"No tenant-identifying information found in either the request or "
                    f"implied by any provided credentials. The client credentials flow needs "
                    f"a tenant id in the token endpoint, not '{tenant}'.",
                )
            if not alias:
                # Tenant ids are GUIDs (or domains): Azure AD matches them case-insensitively.
                known = {t.lower(): t for t in self.tenant_ids}
                if tenant.lower() not in known:
                    raise AadError(
                        400,
                        # As Azure AD: the token endpoint says invalid_request, the discovery
                        # and keys endpoints invalid_tenant.
                        "invalid_request" if endpoint == "token" else "invalid_tenant",
                        90002,
                        f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                        f"tenant ID and are signing into the correct cloud.",
                    )
                tenant = known[tenant.lower()]
            if endpoint == "token":
                if request.method != "POST":
                    raise AadError(
                        405,
                        "invalid_request",
                        900561,
                        f"The endpoint only accepts POST requests. Received a "
                        f"{request.method} request.",
                    )
                return self._token(request, now, tenant, version)
            if request.method not in ("GET", "HEAD"):
                raise AadError(
                    405,
                    "invalid_request",
                    900561,
                    f"The endpoint only accepts GET requests. Received a {request.method} request.",
                )
            cache = {"Cache-Control": "max-age=86400, private"}
            if endpoint == "jwks":
                jwks = self.jwks(version=version, tenant_id=tenant)
                return json_response(200, jwks, headers=cache)
            document = self.discovery(version=version, tenant_id=tenant)
            return json_response(200, document, headers=cache)
        except AadError as err:
            extra = {"Allow": "POST" if endpoint == "token" else "GET"} if err.status == 405 else {}
            return error_response(err, host=self.host, now=now, request=request, headers=extra)

    def discovery(self, *, version: int = 2, tenant_id: str | None = None) -> dict[str, Any]:
        """The OpenID discovery document (v2 or v1) the discovery endpoints serve, for
        ``tenant_id`` (default the first tenant; ``"organizations"``/``"common"`` give the
        multi-tenant document with the ``{tenantid}`` issuer template)."""
        tenant = tenant_id or self.tenant_id
        base = f"{self.host}/{tenant}"
        v = "/v2.0" if version == 2 else ""
        return {
            "issuer": self.issuer_for(tenant, version=version),
            "authorization_endpoint": f"{base}/oauth2{v}/authorize",
            "token_endpoint": f"{base}/oauth2{v}/token",
            "device_authorization_endpoint": f"{base}/oauth2{v}/devicecode",
            "end_session_endpoint": f"{base}/oauth2{v}/logout",
            "jwks_uri": jwks_uri_for(self.host, tenant, version=version),
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
            "cloud_instance_name": httpx.URL(self.host).host,
        }

    def _token(
        self, request: httpx.Request, now: float, tenant: str, version: int = 2
    ) -> httpx.Response:
        form = parse_form(request)
        basic = parse_basic(request)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise missing("grant_type")
        if grant_type != "client_credentials":
            raise AadError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'. "
                f"This authority supports only 'client_credentials'.",
            )
        client_id = form.get("client_id")
        if basic is not None:
            if client_id and client_id.lower() != basic[0].lower():
                raise AadError(
                    400,
                    "invalid_request",
                    9002313,
                    "Invalid request. The client_id in the body differs from the one "
                    "in the Authorization header.",
                )
            client_id = basic[0]
        if not client_id:
            raise missing("client_id")
        client = self.registrations.client_by_id(client_id)
        if client is None or self.registrations.tenant_of(client) != tenant:
            raise AadError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the "
                f"directory '{tenant}'. This can happen if the application "
                f"has not been installed by the administrator of the tenant or "
                f"consented to by any user in the tenant. You may have sent your "
                f"authentication request to the wrong tenant.",
            )
        credential_type = self._authenticate(client, form, basic, now, tenant, version)
        if version == 1:
            # The v1 endpoint names the API by `resource` (App ID URI or client id) and
            # ignores `scope`. The token's version is still the API's own choice.
            resource = form.get("resource", "").strip()
            if not resource:
                raise missing("resource")
            api = self._api(resource, tenant)
        else:
            api = self._api(self._scope_resource(form.get("scope")), tenant)
        roles = client.roles_for(api.name)
        claims = self._claims(
            client,
            api,
            roles=roles,
            version=api.access_token_version,
            lifetime=self.token_lifetime,
            now=now,
            credential_type=credential_type,
        )
        token = self.sign(claims)
        if version == 1:
            # Azure AD's v1 endpoint answers every number as a string.
            body: dict[str, Any] = {
                "token_type": "Bearer",
                "expires_in": str(self.token_lifetime),
                "ext_expires_in": str(self.token_lifetime),
                "expires_on": str(claims["exp"]),
                "not_before": str(claims["nbf"]),
                "resource": resource,
                "access_token": token,
            }
        else:
            body = {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            }
        return json_response(200, body, headers=success_headers(request))

    def _authenticate(
        self,
        client: ClientApp,
        form: Mapping[str, str],
        basic: tuple[str, str] | None,
        now: float,
        tenant: str,
        version: int = 2,
    ) -> str:
        """Check the client's credential; return ``azpacr`` ("1" secret, "2" certificate).
        A client assertion's ``aud`` must be the endpoint called (v1 or v2)."""
        supplied = [
            m
            for m, present in (
                ("client_secret_basic", basic is not None),
                ("client_secret_post", "client_secret" in form),
                ("private_key_jwt", "client_assertion" in form),
            )
            if present
        ]
        if len(supplied) > 1:
            raise AadError(
                400,
                "invalid_request",
                9002313,
                f"Invalid request. Use one client authentication method, not "
                f"{' and '.join(supplied)}.",
            )
        if not supplied:
            raise AadError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'.",
            )
        if supplied[0] == "private_key_jwt":
            if form.get("client_assertion_type") != JWT_BEARER:
                raise AadError(
                    400,
                    "invalid_request",
                    9002313,
                    f"Invalid request. client_assertion_type must be '{JWT_BEARER}'.",
                )
            verify_assertion(
                form["client_assertion"],
                client=client,
                token_endpoint=self.token_endpoint_for(tenant, version=version),
                now=now,
                replays=self._replays,
            )
            return "2"
        secret = basic[1] if basic is not None else form["client_secret"]
        # An empty secret never matches, even if one was registered by mistake.
        if not secret or not any(
            secrets.compare_digest(secret.encode(), s.encode()) for s in client.secrets
        ):
            raise AadError(
                401,
                "invalid_client",
                7000215,
                f"Invalid client secret provided. Ensure the secret being sent in the "
                f"request is the client secret value, not the client secret ID, for "
                f"a secret added to app '{client.client_id}'.",
            )
        return "1"

    def _scope_resource(self, scope: str | None) -> str:
        """The resource a v2 ``scope`` names (``<resource>/.default``)."""
        if scope is None or not scope.strip():
            raise missing("scope")
        scopes = scope.split()
        if len(scopes) > 1:
            raise AadError(
                400,
                "invalid_scope",
                70011,
                f"The provided request must include a 'scope' input parameter. The "
                f"provided value for the input parameter 'scope' is not valid. The "
                f"scope {scope} is not valid: the client credentials flow takes one "
                f"scope, '<App ID URI>/.default'.",
            )
        if not scopes[0].endswith("/.default"):
            raise AadError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scopes[0]} is not valid. Client "
                f"credential flows must have a scope value with /.default suffixed "
                f"to the resource identifier (application ID URI).",
            )
        return scopes[0].removesuffix("/.default")

    def _api(self, resource: str, tenant: str) -> ApiApp:
        api = self.registrations.api_for_resource(resource)
        if api is None or not (tenant == self.tenant_id or api.multi_tenant):
            raise AadError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the "
                f"tenant named {tenant}. This can happen if the application "
                f"has not been installed by the administrator of the tenant or "
                f"consented to by any user in the tenant. You might have sent your "
                f"authentication request to the wrong tenant.",
            )
        return api


def _opaque(length: int) -> str:
    return secrets.token_urlsafe(length)[:length]


def _route(path: str) -> tuple[str, str, int]:
    """``(endpoint, tenant, version)`` for a path; endpoint ``"other"`` when unknown."""
    parts = path.strip("/").split("/")
    if len(parts) < 2:
        return "other", "", 2
    tenant, rest = parts[0], "/".join(parts[1:])
    table = {
        "v2.0/.well-known/openid-configuration": ("discovery", 2),
        ".well-known/openid-configuration": ("discovery", 1),
        "discovery/v2.0/keys": ("jwks", 2),
        "discovery/keys": ("jwks", 1),
        "oauth2/v2.0/token": ("token", 2),
        "oauth2/token": ("token", 1),
    }
    endpoint, version = table.get(rest, ("other", 2))
    return endpoint, tenant, version
