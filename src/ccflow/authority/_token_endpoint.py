"""The token endpoint's decision: which client, authenticated how, gets a token for which API.

Checked in Azure AD's order, each failure one row of :mod:`ccflow.authority._aad`: the form
and HTTP Basic, ``grant_type``, the client (in the tenant of the endpoint called), its one
credential (secret, Basic or ``private_key_jwt``), then the API (v2: by ``scope``,
``<resource>/.default``; v1: by ``resource``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ccflow.authority import _aad
from ccflow.authority._assertions import JWT_BEARER, ReplayCache, verify_assertion
from ccflow.authority._form import parse_basic, parse_form
from ccflow.authority._registrations import ApiApp, ClientApp, Registrations

__all__ = ["Grant", "decide", "token_body"]


@dataclass(frozen=True, slots=True)
class Grant:
    """A token request that passed: the token to issue, not yet issued."""

    client: ClientApp
    api: ApiApp
    credential_type: str
    """``azpacr``: "1" for a secret, "2" for a certificate."""
    resource: str = ""
    """The v1 endpoint's ``resource``, echoed in its answer."""


def decide(
    request: httpx.Request,
    *,
    registrations: Registrations,
    tenant: str,
    version: int,
    now: float,
    replays: ReplayCache,
    token_endpoint: str,
) -> Grant:
    """The grant ``request`` earns at ``token_endpoint`` (of ``tenant``), or raise
    :class:`~ccflow.authority._aad.AadError`."""
    form = parse_form(request)
    basic = parse_basic(request)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise _aad.MISSING_PARAMETER(name="grant_type")
    if grant_type != "client_credentials":
        raise _aad.UNSUPPORTED_GRANT(grant_type=grant_type)
    client = _client(form, basic, registrations, tenant)
    credential_type = _authenticate(
        client, form, basic, now=now, replays=replays, token_endpoint=token_endpoint
    )
    if version == 1:
        # The v1 endpoint names the API by `resource` (App ID URI or client id) and ignores
        # `scope`. The token's version is still the API's own choice.
        resource = form.get("resource", "").strip()
        if not resource:
            raise _aad.MISSING_PARAMETER(name="resource")
        return Grant(client, _api(resource, tenant, registrations), credential_type, resource)
    api = _api(_scope_resource(form.get("scope")), tenant, registrations)
    return Grant(client, api, credential_type)


def token_body(
    grant: Grant, *, token: str, claims: Mapping[str, Any], lifetime: int, version: int
) -> dict[str, Any]:
    """The token answer: v2 with numbers, v1 with every number a string (as Azure AD's)."""
    if version == 1:
        return {
            "token_type": "Bearer",
            "expires_in": str(lifetime),
            "ext_expires_in": str(lifetime),
            "expires_on": str(claims["exp"]),
            "not_before": str(claims["nbf"]),
            "resource": grant.resource,
            "access_token": token,
        }
    return {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    }


def _client(
    form: Mapping[str, str],
    basic: tuple[str, str] | None,
    registrations: Registrations,
    tenant: str,
) -> ClientApp:
    """The client the request names (body or Basic, which must agree), in ``tenant``."""
    client_id = form.get("client_id")
    if basic is not None:
        if client_id and client_id.lower() != basic[0].lower():
            raise _aad.CLIENT_ID_MISMATCH()
        client_id = basic[0]
    if not client_id:
        raise _aad.MISSING_PARAMETER(name="client_id")
    client = registrations.client_by_id(client_id)
    if client is None or registrations.tenant_of(client) != tenant:
        raise _aad.UNKNOWN_CLIENT(client_id=client_id, tenant=tenant)
    return client


def _authenticate(
    client: ClientApp,
    form: Mapping[str, str],
    basic: tuple[str, str] | None,
    *,
    now: float,
    replays: ReplayCache,
    token_endpoint: str,
) -> str:
    """Check the client's one credential; return ``azpacr`` ("1" secret, "2" certificate)."""
    supplied = [
        method
        for method, present in (
            ("client_secret_basic", basic is not None),
            ("client_secret_post", "client_secret" in form),
            ("private_key_jwt", "client_assertion" in form),
        )
        if present
    ]
    if len(supplied) > 1:
        raise _aad.TWO_AUTH_METHODS(methods=" and ".join(supplied))
    if not supplied:
        raise _aad.NO_CREDENTIAL()
    if supplied[0] == "private_key_jwt":
        if form.get("client_assertion_type") != JWT_BEARER:
            raise _aad.BAD_ASSERTION_TYPE(expected=JWT_BEARER)
        verify_assertion(
            form["client_assertion"],
            client=client,
            token_endpoint=token_endpoint,
            now=now,
            replays=replays,
        )
        return "2"
    secret = basic[1] if basic is not None else form["client_secret"]
    # An empty secret never matches, even if one was registered by mistake.
    if not secret or not any(
        secrets.compare_digest(secret.encode(), s.encode()) for s in client.secrets
    ):
        raise _aad.WRONG_SECRET(client_id=client.client_id)
    return "1"


def _scope_resource(scope: str | None) -> str:
    """The resource a v2 ``scope`` names (``<resource>/.default``)."""
    if scope is None or not scope.strip():
        raise _aad.MISSING_PARAMETER(name="scope")
    scopes = scope.split()
    if len(scopes) > 1:
        raise _aad.SEVERAL_SCOPES(scope=scope)
    if not scopes[0].endswith("/.default"):
        raise _aad.SCOPE_NOT_DEFAULT(scope=scopes[0])
    return scopes[0].removesuffix("/.default")


def _api(resource: str, tenant: str, registrations: Registrations) -> ApiApp:
    """The API ``resource`` names, if a client of ``tenant`` may call it."""
    api = registrations.api_for_resource(resource)
    if api is None or not (tenant == registrations.tenant_id or api.multi_tenant):
        raise _aad.UNKNOWN_RESOURCE(resource=resource, tenant=tenant)
    return api
