"""Rules beyond one app role, through every face: delegated scopes (RequireScope, or_scopes),
per-route rules (@require, per_route), the FastAPI principal, and refusals (log and hook).

Tokens come from the local authority (TokenFactory.user_token for delegated ones); every
refusal asserts its status and WWW-Authenticate."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect
from tests.support import FACE_CASES, face_challenge_ok, face_token

from ccflow.authority import Authority
from ccflow.errors import ConfigurationError
from ccflow.fastapi import BearerClaims, Principal
from ccflow.starlette import (
    BearerAuthBackend,
    Refusal,
    RequireRole,
    RequireRoleOptions,
    RequireScope,
    TokenUser,
    require,
)
from ccflow.testing import TEST_USER_OID, TokenFactory

Faces = Callable[..., TestClient]


@pytest.fixture
def tokens(authority: Authority) -> TokenFactory:
    return TokenFactory(authority)


@pytest.fixture
def validator(validator_for: Callable[..., Any], authority: Authority) -> Any:
    return validator_for(
        allowed_clients=[
            authority.client("calc-client").client_id,
            authority.client("reader-client").client_id,
        ]
    )


async def whoami(request: Request) -> JSONResponse:
    user: TokenUser = request.user
    return JSONResponse(
        {"client": user.client_id, "scopes": list(user.scopes), "oid": user.object_id}
    )


def _challenge(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


def _client(app: Any) -> TestClient:
    return TestClient(app)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- RequireScope and or_scopes ------------------------------------------------------------


def _guarded(middleware: Any) -> TestClient:
    app = Starlette(routes=[Route("/who", whoami)])
    app.add_middleware(middleware)
    return _client(app)


def test_require_scope_admits_a_user_token_with_the_scope(
    validator: Any, tokens: TokenFactory
) -> None:
    with _guarded(RequireScope("Calc.Read", validator=validator)) as c:
        r = c.get("/who", headers=_bearer(tokens.user_token(scopes=["Calc.Read", "Calc.Write"])))
    assert r.status_code == 200
    assert r.json()["scopes"] == ["Calc.Read", "Calc.Write"]
    assert r.json()["oid"] == TEST_USER_OID


def test_an_app_token_never_satisfies_a_scope_rule(validator: Any, tokens: TokenFactory) -> None:
    with _guarded(RequireScope("Calc.Read", validator=validator)) as c:
        r = c.get("/who", headers=_bearer(tokens.valid()))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in _challenge(r)
    assert 'scope="Calc.Read"' in _challenge(r)


@pytest.mark.parametrize(
    ("token", "status"),
    [
        ("app_with_role", 200),
        ("user_with_scope", 200),
        ("user_with_assigned_role", 200),
        ("user_without", 403),
        ("app_without", 403),
    ],
)
def test_or_scopes_accepts_an_app_role_or_a_user_scope(
    validator: Any, tokens: TokenFactory, token: str, status: int
) -> None:
    raw = {
        "app_with_role": tokens.valid(),
        "user_with_scope": tokens.user_token(scopes=["Calc.Read"]),
        "user_with_assigned_role": tokens.user_token(scopes=["Other"], roles=["invokeRole"]),
        "user_without": tokens.user_token(scopes=["Other"]),
        "app_without": tokens.no_roles(),
    }[token]
    with _guarded(RequireRole("invokeRole", validator=validator, or_scopes=["Calc.Read"])) as c:
        r = c.get("/who", headers=_bearer(raw))
    assert r.status_code == status
    if status == 403:
        assert 'scope="invokeRole Calc.Read"' in _challenge(r)


def test_match_all_applies_to_the_scopes(validator: Any, tokens: TokenFactory) -> None:
    with _guarded(RequireScope("A", "B", validator=validator, match="all")) as c:
        assert c.get("/who", headers=_bearer(tokens.user_token(scopes=["A"]))).status_code == 403
        assert (
            c.get("/who", headers=_bearer(tokens.user_token(scopes=["B", "A"]))).status_code == 200
        )


@pytest.mark.parametrize("scopes", [[""], ["two words"], [1], "bad scope"])
def test_bad_scopes_fail_at_construction(scopes: Any) -> None:
    with pytest.raises(ConfigurationError):
        RequireRole("invokeRole", or_scopes=scopes)


def test_require_scope_needs_a_scope() -> None:
    with pytest.raises(ConfigurationError, match="at least one scope"):
        RequireScope()


def test_require_scope_hands_every_option_to_require_role(validator: Any) -> None:
    def hook(refusal: Any) -> None:
        pass

    options: dict[str, Any] = {
        "validator": validator,
        "match": "all",
        "exempt": ["/healthz"],
        "allow_preflight": True,
        "per_route": ["/admin/*"],
        "on_refusal": hook,
    }
    scoped = RequireScope("A", "B", or_roles=["r"], **options)
    plain = RequireRole("r", or_scopes=["A", "B"], **options)
    for name in RequireRole.__slots__:
        assert getattr(scoped, name) == getattr(plain, name), name
    assert scoped.rule.scopes == ("A", "B")


def test_the_options_require_scope_forwards_are_every_other_require_role_keyword() -> None:
    parameters = inspect.signature(RequireRole).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(RequireRoleOptions.__annotations__) == keywords - {"or_scopes"}


@pytest.mark.parametrize("keyword", ["or_scopes", "roles", "unknown"])
def test_require_scope_refuses_a_keyword_it_does_not_take(validator: Any, keyword: str) -> None:
    with pytest.raises(TypeError):
        RequireScope("A", validator=validator, **{keyword: ["x"]})


# -- every face refuses the same way -------------------------------------------------------


def _face_middleware(validator: Any) -> TestClient:
    return _guarded(RequireScope("Calc.Read", validator=validator, or_roles=["invokeRole"]))


def _face_backend(validator: Any) -> TestClient:
    app = Starlette(
        routes=[Route("/who", require(roles=["invokeRole"], scopes=["Calc.Read"])(whoami))],
        middleware=[
            Middleware(
                AuthenticationMiddleware,
                backend=BearerAuthBackend(validator),
                on_error=BearerAuthBackend.on_error,
            )
        ],
    )
    return _client(app)


def _face_per_route(validator: Any) -> TestClient:
    app = Starlette(
        routes=[Route("/who", require(roles=["invokeRole"], scopes=["Calc.Read"])(whoami))]
    )
    app.add_middleware(RequireRole("adminRole", validator=validator, per_route=["/who"]))
    return _client(app)


def _face_fastapi(validator: Any) -> TestClient:
    app = FastAPI()
    dependency = BearerClaims("invokeRole", or_scopes=["Calc.Read"], validator=validator)

    @app.get("/who")
    async def who(caller: Principal = Depends(dependency)) -> dict[str, Any]:  # noqa: B008
        return {"client": caller.client_id, "scopes": list(caller.scopes), "oid": caller.object_id}

    return _client(app)


FACES = {
    "middleware": _face_middleware,
    "backend": _face_backend,
    "per_route": _face_per_route,
    "fastapi": _face_fastapi,
}


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize(("case", "status", "challenge"), FACE_CASES)
def test_every_face_answers_the_same(
    face: str,
    case: str,
    status: int,
    challenge: str | None,
    validator: Any,
    tokens: TokenFactory,
) -> None:
    raw = face_token(case, tokens)
    with FACES[face](validator) as c:
        r = c.get("/who", headers=_bearer(raw) if raw else {})
    assert r.status_code == status, r.text
    assert face_challenge_ok(case, r.headers.get("www-authenticate"), challenge), r.headers


# -- per-route rules ---------------------------------------------------------------------


@require(roles=["adminRole"])
def sync_admin(request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin")


@require(scopes=["Calc.Read"])
async def async_reader(request: Request) -> PlainTextResponse:
    return PlainTextResponse("reader")


async def undecorated(request: Request) -> PlainTextResponse:
    return PlainTextResponse("open?")


class Reports(HTTPEndpoint):
    @require(roles=["invokeRole"])
    async def get(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("reports")

    def post(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("posted")


@require(scopes=["Calc.Read"])
async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


@pytest.fixture
def per_route(validator: Any) -> Iterator[TestClient]:
    app = Starlette(
        routes=[
            Route("/admin/sync", sync_admin),
            Route("/admin/reader", async_reader),
            Route("/admin/open", undecorated),
            Route("/admin/reports", Reports),
            Mount("/admin/sub", routes=[Route("/reader", async_reader)]),
            WebSocketRoute("/admin/ws", socket),
            Route("/other", async_reader),
        ]
    )
    app.add_middleware(RequireRole("invokeRole", validator=validator, per_route=["/admin/*"]))
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "method", "token", "status"),
    [
        ("/admin/sync", "GET", "app", 403),  # invokeRole, not adminRole: the route's rule
        ("/admin/sync", "GET", "none", 401),
        ("/admin/reader", "GET", "user", 200),  # no invokeRole needed: the route's scope
        ("/admin/reader", "GET", "app", 403),
        ("/admin/sub/reader", "GET", "user", 200),  # through a Mount
        ("/admin/open", "GET", "none", 401),  # no rule of its own: RequireRole's
        ("/admin/open", "GET", "user", 403),
        ("/admin/open", "GET", "app", 200),
        ("/admin/reports", "GET", "app", 200),
        ("/admin/reports", "GET", "user", 403),
        ("/admin/reports", "POST", "user", 403),  # an undecorated method: RequireRole's
        ("/admin/reports", "POST", "none", 401),
        ("/other", "GET", "user", 403),  # outside per_route: both rules apply
        ("/admin/sync", "GET", "bad", 401),  # a token sent is validated by the middleware
    ],
)
def test_per_route_rules_replace_the_middlewares_only_where_declared(
    per_route: TestClient, tokens: TokenFactory, path: str, method: str, token: str, status: int
) -> None:
    raw = {
        "app": tokens.valid(),
        "user": tokens.user_token(scopes=["Calc.Read"]),
        "bad": tokens.expired(),
        "none": None,
    }[token]
    r = per_route.request(method, path, headers=_bearer(raw) if raw else {})
    assert r.status_code == status, r.text
    if status == 401:
        assert _challenge(r).startswith('Bearer realm="')
    if status == 403:
        assert 'error="insufficient_scope"' in _challenge(r)


def test_a_per_route_websocket_is_refused_before_accept(
    per_route: TestClient, tokens: TokenFactory
) -> None:
    with per_route.websocket_connect("/admin/ws", headers=_bearer(tokens.user_token())) as ws:
        assert ws.receive_text() == "hello"
    refused = per_route.websocket_connect("/admin/ws", headers=_bearer(tokens.valid()))
    with pytest.raises(WebSocketDisconnect) as caught, refused:
        pass
    assert caught.value.code == 1008


def test_require_without_a_ccflow_guard_in_front_fails_closed() -> None:
    app = Starlette(routes=[Route("/x", async_reader)])
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/x").status_code == 500


def test_require_checks_its_arguments() -> None:
    with pytest.raises(ConfigurationError):
        require(roles=[""])
    with pytest.raises(ConfigurationError):
        require(scopes=["a b"])


# -- refusals: the log line and the hook ---------------------------------------------------


def test_a_refusal_is_logged_at_info_with_the_callers_ids_and_never_the_token(
    validator: Any, tokens: TokenFactory, authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    token = tokens.no_roles()
    with (
        caplog.at_level(logging.INFO, logger="ccflow.api"),
        _guarded(RequireRole("invokeRole", validator=validator)) as c,
    ):
        assert c.get("/who", headers=_bearer(token)).status_code == 403
    record = next(r for r in caplog.records if r.name == "ccflow.api")
    assert record.levelno == logging.INFO
    assert record.ccflow_status == 403  # type: ignore[attr-defined]
    assert record.ccflow_reason == "role"  # type: ignore[attr-defined]
    assert record.ccflow_client_id == authority.client("calc-client").client_id  # type: ignore[attr-defined]
    assert record.ccflow_tenant_id == authority.tenant_id  # type: ignore[attr-defined]
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


def test_a_forged_token_gives_no_caller_ids(validator: Any, tokens: TokenFactory) -> None:
    seen: list[Refusal] = []
    with _guarded(RequireRole("invokeRole", validator=validator, on_refusal=seen.append)) as c:
        assert c.get("/who", headers=_bearer(tokens.tampered())).status_code == 401
    assert seen[0].status == 401
    assert seen[0].client_id is None
    assert seen[0].tenant_id is None
    assert seen[0].error == "invalid_token"
    assert seen[0].reason == "signature"


@pytest.mark.parametrize("face", FACES)
def test_on_refusal_is_called_on_every_face(
    face: str, validator: Any, tokens: TokenFactory
) -> None:
    seen: list[Refusal] = []
    client = {
        "middleware": lambda: _guarded(
            RequireRole(
                "invokeRole", validator=validator, or_scopes=["Calc.Read"], on_refusal=seen.append
            )
        ),
        "backend": lambda: _backend_with_hook(
            validator, seen, require(roles=["invokeRole"])(whoami)
        ),
        "per_route": lambda: _per_route_with_hook(validator, seen),
        "fastapi": lambda: _fastapi_with_hook(validator, seen),
    }[face]()
    with client as c:
        assert c.get("/who", headers=_bearer(tokens.no_roles())).status_code == 403
        assert c.get("/who").status_code == 401
    assert [(r.status, r.reason) for r in seen] == [(403, seen[0].reason), (401, "no_token")]
    assert seen[0].reason in ("role", "role_or_scope")
    assert seen[0].path == "/who"


def _per_route_with_hook(validator: Any, seen: list[Refusal]) -> TestClient:
    app = Starlette(routes=[Route("/who", require(roles=["invokeRole"])(whoami))])
    app.add_middleware(
        RequireRole("x", validator=validator, per_route=["/who"], on_refusal=seen.append)
    )
    return _client(app)


def _backend_with_hook(validator: Any, seen: list[Refusal], endpoint: Any) -> TestClient:
    backend = BearerAuthBackend(validator, on_refusal=seen.append)
    middleware = Middleware(
        AuthenticationMiddleware, backend=backend, on_error=BearerAuthBackend.on_error
    )
    return _client(Starlette(routes=[Route("/who", endpoint)], middleware=[middleware]))


def _fastapi_who(dependency: BearerClaims) -> FastAPI:
    """A FastAPI app whose ``GET /who`` depends on ``dependency`` and answers the client id."""
    app = FastAPI()

    @app.get("/who")
    async def who(caller: Principal = Depends(dependency)) -> str:  # noqa: B008
        return str(caller.client_id)

    return app


def _fastapi_with_hook(validator: Any, seen: list[Refusal]) -> TestClient:
    dependency = BearerClaims("invokeRole", validator=validator, on_refusal=seen.append)
    return _client(_fastapi_who(dependency))


def test_a_hook_that_raises_never_turns_a_refusal_into_a_500(
    validator: Any, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(refusal: Refusal) -> None:
        raise ZeroDivisionError

    with (
        caplog.at_level(logging.INFO, logger="ccflow.api"),
        _guarded(RequireRole("invokeRole", validator=validator, on_refusal=broken)) as c,
    ):
        r = c.get("/who", headers=_bearer(tokens.no_roles()))
    assert r.status_code == 403
    assert caplog.text.count("on_refusal hook failed (ZeroDivisionError)") == 1


def test_on_refusal_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="on_refusal"):
        RequireRole("invokeRole", on_refusal="metrics")  # type: ignore[arg-type]


# -- FastAPI: the principal and the OpenAPI scheme -------------------------------------------


def test_the_principal_is_typed_and_still_a_mapping_of_the_claims(
    validator: Any, tokens: TokenFactory
) -> None:
    principal = Principal.of(_verdict(validator, tokens.user_token(scopes=["Calc.Read"])))
    assert principal.scopes == ("Calc.Read",)
    assert principal.object_id == TEST_USER_OID
    assert not principal.is_app_only
    assert principal["scp"] == "Calc.Read"
    assert principal.get("name") == "Alice Example"
    assert dict(principal) == dict(principal.claims)
    app = Principal.of(_verdict(validator, tokens.valid()))
    assert app.is_app_only
    assert app.roles == ("invokeRole",)
    assert app["roles"] == ("invokeRole",)


def _verdict(validator: Any, token: str) -> Any:
    import asyncio

    return asyncio.run(validator.validate(token))


def test_openapi_offers_client_credentials_at_the_configured_token_endpoint(
    authority: Authority, monkeypatch: pytest.MonkeyPatch, validator: Any
) -> None:
    api = authority.api("calc-api")
    monkeypatch.setenv("CCFLOW_TENANT_ID", authority.tenant_id)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", authority.host)
    monkeypatch.setenv("CCFLOW_AUDIENCE", f"{api.client_id},{api.identifier_uri}")
    monkeypatch.delenv("CCFLOW_ISSUER", raising=False)
    app = _fastapi_who(BearerClaims("invokeRole", validator=validator))
    with TestClient(app) as c:
        scheme = c.get("/openapi.json").json()["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "oauth2"
    flow = scheme["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == authority.token_endpoint
    assert list(flow["scopes"]) == [f"{api.identifier_uri}/.default"]
    # What Swagger UI's Authorize button sends: a client-credentials request to tokenUrl.
    client = authority.client("calc-client")
    with httpx.Client(transport=authority.transport()) as http:
        answer = http.post(
            flow["tokenUrl"],
            data={
                "grant_type": "client_credentials",
                "client_id": client.client_id,
                "client_secret": client.secret,
                "scope": next(iter(flow["scopes"])),
            },
        )
    assert answer.status_code == 200
    with TestClient(app) as c:
        token = answer.json()["access_token"]
        assert c.get("/who", headers=_bearer(token)).status_code == 200


def test_token_url_false_keeps_the_plain_bearer_scheme(validator: Any) -> None:
    app = _fastapi_who(BearerClaims(validator=validator, token_url=False))
    with TestClient(app) as c:
        scheme = c.get("/openapi.json").json()["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"


@pytest.mark.parametrize("face", ["middleware", "backend", "fastapi"])
@pytest.mark.parametrize("refused_by", ["validator", "rule"])
def test_a_403_names_the_caller_on_every_face(
    face: str,
    refused_by: str,
    validator: Any,
    validator_for: Callable[..., Any],
    tokens: TokenFactory,
    authority: Authority,
) -> None:
    # The validator's allow-list or the face's role rule: either names the verified caller.
    if refused_by == "validator":
        checking = validator_for(allowed_clients=["00000000-0000-0000-0000-000000000001"])
        token, reason = tokens.valid(), "client"
    else:
        checking, token, reason = validator, tokens.no_roles(), "role"
    seen: list[Refusal] = []
    client = {
        "middleware": lambda: _guarded(
            RequireRole("invokeRole", validator=checking, on_refusal=seen.append)
        ),
        "backend": lambda: _backend_with_hook(
            checking, seen, require(roles=["invokeRole"])(whoami)
        ),
        "fastapi": lambda: _fastapi_with_hook(checking, seen),
    }[face]()
    with client as c:
        assert c.get("/who", headers=_bearer(token)).status_code == 403
    assert (seen[0].reason, seen[0].client_id, seen[0].tenant_id) == (
        reason,
        authority.client("calc-client").client_id,
        authority.tenant_id,
    )
