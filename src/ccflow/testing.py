"""Testing helpers: access tokens from the local authority, valid and deliberately bad.

::

    from ccflow.authority import Authority
    from ccflow.testing import TokenFactory

    tokens = TokenFactory(Authority())
    tokens.valid()                 # calc-client calling calc-api, with invokeRole
    tokens.expired()               # ... and every way a token can be wrong, one method each
    tokens.hs256_with_public_key() # the classic algorithm-confusion attack
    tokens.user_token(scopes=["Calc.Read"])  # delegated: scp, the user's oid and name

Every method takes ``client=`` and ``api=`` (registration names) and returns the compact JWT;
without them, the factory's own :attr:`~TokenFactory.client` and :attr:`~TokenFactory.api`,
which come from the registrations the authority serves. With the pytest plugin, the
``ccflow_tokens`` fixture is a factory on the test's authority.
Also here: :func:`client_certificate` and :func:`client_assertion`, to test
``private_key_jwt`` against the authority.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization

from ccflow._core.b64 import b64url_encode
from ccflow.authority import Authority
from ccflow.authority._keys import foreign_key
from ccflow.authority._tls import CertificateMaterial, client_certificate
from ccflow.authority._tokens import delegated_claims, sign

__all__ = [
    "OTHER_TENANT_ID",
    "TEST_USER_OID",
    "CertificateMaterial",
    "TokenFactory",
    "client_assertion",
    "client_certificate",
    "decode_unverified",
]

OTHER_TENANT_ID = "00000bad-0000-4000-8000-000000000bad"
"""A tenant id that is not the authority's."""

TEST_USER_OID = "00000000-0000-4000-8000-00000000a11c"
"""The object id of the user in :meth:`TokenFactory.user_token`'s tokens."""


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(header, claims)`` of a token, without any check: for assertions in tests only."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return header, claims


def _segment(data: Mapping[str, Any]) -> str:
    """A JSON object as one compact JWS segment."""
    return b64url_encode(json.dumps(dict(data), separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True)
class TokenFactory:
    """Valid and deliberately bad access tokens signed (or not) as the ``authority`` would.

    Each bad token differs from :meth:`valid` in exactly one way, so a test that expects a
    rejection tests exactly one check.

    ``client`` and ``api`` name the registrations a method uses when not told otherwise. By
    default they come from the authority's registrations: ``api`` is the first API app
    registered, ``client`` the first client app granted a role on it (else the first client
    app). With the built-in registrations they are ``calc-client`` and ``calc-api``::

        TokenFactory(Authority(registrations=Registrations.from_toml("apps.toml")))
        TokenFactory(authority, client="shop", api="orders-api")
    """

    authority: Authority
    client: str | None = None
    api: str | None = None

    def __post_init__(self) -> None:
        registrations = self.authority.registrations
        api = self.api
        if api is None:
            api = registrations.apis[0].name if registrations.apis else None
        else:
            registrations.api(api)  # a KeyError naming the registered ones
        client = self.client
        if client is None:
            granted = [c for c in registrations.clients if api and c.roles_for(api)]
            candidates = granted or list(registrations.clients)
            client = candidates[0].name if candidates else None
        else:
            registrations.client(client)
        object.__setattr__(self, "api", api)
        object.__setattr__(self, "client", client)

    def _names(self, client: str | None, api: str | None) -> tuple[str, str]:
        """The client and API a method was given, else the factory's own."""
        client, api = client or self.client, api or self.api
        if client is None or api is None:
            missing = [
                what for what, name in (("client app", client), ("API app", api)) if not name
            ]
            raise KeyError(
                f"TokenFactory: no {' and no '.join(missing)} registered;"
                " register one or pass the name"
            )
        return client, api

    def valid(self, client: str | None = None, api: str | None = None, **options: Any) -> str:
        """A token exactly as the token endpoint issues it; ``options`` go to
        :meth:`Authority.mint` (``roles``, ``version``, ``lifetime``, ``now``, ``claims``,
        ``omit``, ``kid``, ``headers``)."""
        return self.authority.mint(*self._names(client, api), **options)

    def claims(self, client: str | None = None, api: str | None = None) -> dict[str, Any]:
        """The claims :meth:`valid` would carry (issued now)."""
        return self.authority.token_claims(*self._names(client, api))

    def user_token(
        self,
        client: str | None = None,
        api: str | None = None,
        *,
        scopes: Sequence[str] = ("Calc.Read",),
        roles: Sequence[str] = (),
        user_oid: str = TEST_USER_OID,
        name: str = "Alice Example",
        username: str = "alice@example.test",
        **options: Any,
    ) -> str:
        """A delegated token, as if ``client`` called ``api`` for a signed-in user: ``scp``
        (the ``scopes``, space-separated), the user's ``oid``, ``name`` and
        ``preferred_username``, ``idtyp`` ``"user"``; ``roles`` only when given (app roles
        assigned to the user). No interactive sign-in: signed as the authority would.
        ``options`` as :meth:`valid` (``version``, ``lifetime``, ``now``, ``claims``, ``omit``,
        ``kid``, ``headers``)."""
        claims = dict(options.pop("claims", None) or {})
        omit = tuple(options.pop("omit", ()))
        kid, headers = options.pop("kid", None), options.pop("headers", None)
        app = self.authority.token_claims(*self._names(client, api), **options)
        body = delegated_claims(
            app,
            scopes=tuple(scopes),
            user_oid=user_oid,
            name=name,
            username=username,
            roles=tuple(roles),
        )
        body.update(claims)
        for claim in omit:
            body.pop(claim, None)
        return self.authority.sign(body, kid=kid, headers=headers)

    def _now(self) -> float:
        """The authority's clock."""
        return self.authority.clock()

    def expired(self, client: str | None = None, api: str | None = None, *, ago: int = 3600) -> str:
        """Expired ``ago`` seconds ago (default one hour: beyond any leeway)."""
        lifetime = self.authority.token_lifetime
        return self.valid(client, api, now=self._now() - lifetime - ago)

    def not_yet_valid(
        self, client: str | None = None, api: str | None = None, *, ahead: int = 3600
    ) -> str:
        """``nbf`` (and ``iat``) ``ahead`` seconds in the future."""
        return self.valid(client, api, now=self._now() + ahead)

    def wrong_audience(
        self, client: str | None = None, api: str | None = None, *, audience: str | None = None
    ) -> str:
        """``aud`` naming another app (a random GUID unless ``audience`` is given)."""
        return self.valid(client, api, claims={"aud": audience or str(uuid.uuid4())})

    def wrong_issuer(
        self, client: str | None = None, api: str | None = None, *, issuer: str | None = None
    ) -> str:
        """``iss`` of another authority: by default the issuer :meth:`valid` would carry (the
        client's tenant, the API's token version) on ``https://login.evil.test``, e.g.
        ``https://login.evil.test/<tid>/v2.0``."""
        client, api = self._names(client, api)
        if issuer is None:
            version = self.authority.api(api).access_token_version
            tenant = self.authority.registrations.tenant_of(self.authority.client(client))
            own = self.authority.issuer_for(tenant, version=version)
            issuer = "https://login.evil.test" + own.removeprefix(self.authority.host)
        return self.valid(client, api, claims={"iss": issuer})

    def wrong_tenant(
        self, client: str | None = None, api: str | None = None, *, tenant_id: str | None = None
    ) -> str:
        """Issued for another tenant: ``tid`` and the tenant in ``iss`` (and, in a v1 token,
        ``idp``) changed, as a token from another tenant of the same cloud would be."""
        client, api = self._names(client, api)
        tid = tenant_id or OTHER_TENANT_ID
        version = self.authority.api(api).access_token_version
        changes = {"tid": tid, "iss": self.authority.issuer_for(tid, version=version)}
        if version == 1:
            changes["idp"] = self.authority.issuer_for(tid, version=1)
        return self.valid(client, api, claims=changes)

    def no_roles(self, client: str | None = None, api: str | None = None) -> str:
        """Valid, but without a ``roles`` claim (a client with no grant)."""
        return self.valid(client, api, roles=())

    def with_roles(
        self, roles: Sequence[str], client: str | None = None, api: str | None = None
    ) -> str:
        """Valid, with exactly these ``roles``."""
        return self.valid(client, api, roles=roles)

    def v1(self, client: str | None = None, api: str | None = None) -> str:
        """A v1-shaped token: ``aud`` the App ID URI, ``appid``, v1 issuer, ``ver`` ``1.0``."""
        return self.valid(client, api, version=1)

    def other_key(self, client: str | None = None, api: str | None = None) -> str:
        """Signed with a key the authority never published, under a published ``kid``."""
        kid = self.authority.signing_kid
        return sign(self.claims(client, api), foreign_key(), headers={"kid": kid, "x5t": kid})

    def unknown_kid(self, client: str | None = None, api: str | None = None) -> str:
        """Signed with an unpublished key whose ``kid`` the JWKS does not list."""
        return sign(self.claims(client, api), foreign_key())

    def alg_none(self, client: str | None = None, api: str | None = None) -> str:
        """``alg: none`` and an empty signature."""
        kid = self.authority.signing_kid
        header = {"typ": "JWT", "alg": "none", "kid": kid, "x5t": self.authority.key(kid).x5t}
        return f"{_segment(header)}.{_segment(self.claims(client, api))}."

    def hs256_with_public_key(self, client: str | None = None, api: str | None = None) -> str:
        """``alg: HS256`` keyed with the authority's RSA public key (PEM): the algorithm
        confusion attack. PyJWT refuses to build it, so it is built by hand."""
        kid = self.authority.signing_kid
        public = self.authority.key(kid).public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {"typ": "JWT", "alg": "HS256", "kid": kid, "x5t": self.authority.key(kid).x5t}
        signing_input = f"{_segment(header)}.{_segment(self.claims(client, api))}"
        mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url_encode(mac)}"

    def oversized(
        self, client: str | None = None, api: str | None = None, *, size: int = 20_000
    ) -> str:
        """Validly signed, but at least ``size`` characters long (default beyond 16 KiB)."""
        padding = "x" * size
        return self.valid(client, api, claims={"padding": padding})

    def tampered(self, client: str | None = None, api: str | None = None) -> str:
        """A valid token whose claims were changed after signing: ``"admin"`` added to
        ``roles``, every other claim (``uti``, ``aio``, ...) as signed."""
        token = self.valid(client, api)
        header, _, signature = token.split(".")
        _, claims = decode_unverified(token)
        claims["roles"] = [*claims.get("roles", ()), "admin"]
        return f"{header}.{_segment(claims)}.{signature}"


def client_assertion(
    certificate: CertificateMaterial,
    *,
    client_id: str,
    audience: str,
    now: float | None = None,
    lifetime: int = 600,
    jti: str | None = None,
    header_style: Literal["x5t#S256", "x5t"] = "x5t#S256",
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A ``private_key_jwt`` client assertion as msal and ccflow send it: ``aud`` the token
    endpoint, ``iss`` = ``sub`` = client id, ``jti``, ``nbf``/``iat`` now, ``exp`` now +
    ``lifetime``; PS256 with ``x5t#S256``, or RS256 with ``x5t``; ``x5c`` carries the
    certificate. ``claims`` overrides."""
    issued = time.time() if now is None else now
    body: dict[str, Any] = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": jti or str(uuid.uuid4()),
        "nbf": int(issued),
        "iat": int(issued),
        "exp": int(issued) + lifetime,
        **(claims or {}),
    }
    header: dict[str, Any]
    if header_style == "x5t#S256":
        algorithm, header = "PS256", {"x5t#S256": certificate.x5t_s256}
    else:
        algorithm, header = "RS256", {"x5t": certificate.x5t}
    # RFC 7515 4.1.6: a list of base64 (not base64url) DER certificates, leaf first.
    header["x5c"] = [
        base64.b64encode(certificate.certificate.public_bytes(serialization.Encoding.DER)).decode()
    ]
    return jwt.encode(body, certificate.private_key, algorithm=algorithm, headers=header)
