"""ccflow.starlette: header parsing, RFC 6750 answers, the middleware and the backend, on a
stand-in validator and on real TokenValidators over the local authority."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from tests.support import API_VARIABLES, REALM, REVOKED, REVOKING, FakeValidator, FakeVerdict

from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.errors import (
    CCFlowError,
    ConfigurationError,
    InsufficientScopeError,
    InvalidTokenError,
    KeysUnavailableError,
)
from ccflow.fastapi import BearerClaims
from ccflow.starlette import (
    BearerAuthBackend,
    InvalidRequestError,
    RequireRole,
    TokenUser,
    bearer_token,
    rejection_for,
)

if TYPE_CHECKING:
    from tests.api.conftest import ValidatorFactory
    from tests.conftest import FakeClock


GOOD = "good.token.sig"
READER = "reader.token.sig"
BOTH = "both.token.sig"
ADMIN_ONLY = "admin.token.sig"


def make_validator() -> FakeValidator:
    return FakeValidator(
        answers={
            GOOD: FakeVerdict(claims={"azp": "client-1", "roles": ["invokeRole"]}),
            READER: FakeVerdict(client_id="reader", roles=()),
            BOTH: FakeVerdict(roles=("invokeRole", "adminRole")),
            ADMIN_ONLY: FakeVerdict(roles=("adminRole",)),
            "expired.token.sig": InvalidTokenError("the token expired", reason="expired"),
            "stranger.token.sig": InsufficientScopeError(
                "caller stranger is not an allowed client", reason="client"
            ),
            "cold.token.sig": KeysUnavailableError("no signing keys", retry_after=7),
            "buggy.token.sig": RuntimeError("validator bug"),
        }
    )


async def whoami(request: Request) -> JSONResponse:
    user = request.user
    assert isinstance(user, TokenUser)
    return JSONResponse(
        {
            "client_id": user.client_id,
            "tenant_id": user.tenant_id,
            "roles": list(user.roles),
            "scopes": request.auth.scopes,
            "claims": dict(user.claims),
            "identity": user.identity,
            "display_name": user.display_name,
            "authenticated": user.is_authenticated,
        }
    )


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"ok {request.user.is_authenticated}")


@requires("adminRole")
async def admin(request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin")


async def preflight_target(request: Request) -> PlainTextResponse:
    return PlainTextResponse("options reached the app")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.user.identity)
    await websocket.close()


ROUTES = [
    Route("/whoami", whoami),
    Route("/healthz", health),
    Route("/health/ready", health),
    Route("/admin", admin),
    Route("/cors", preflight_target, methods=["GET", "OPTIONS"]),
    WebSocketRoute("/ws", ws_echo),
]


def make_app(validator: FakeValidator, *roles: str, **options: object) -> Starlette:
    app = Starlette(routes=ROUTES)
    app.add_middleware(RequireRole(*(roles or ("invokeRole",)), validator=validator, **options))  # type: ignore[arg-type]
    return app


@pytest.fixture
def validator() -> FakeValidator:
    return make_validator()


@pytest.fixture
def client(validator: FakeValidator) -> Iterator[TestClient]:
    with TestClient(make_app(validator, exempt=["/healthz", "/health/*"])) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the Authorization header -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        ([(b"authorization", b"Bearer abc.def.ghi")], "abc.def.ghi"),
        ([(b"authorization", b"bearer abc")], "abc"),
        ([(b"authorization", b"BEARER abc")], "abc"),
        ([(b"Authorization", b"Bearer abc")], "abc"),
        ([(b"authorization", b"Bearer   abc  ")], "abc"),
        ([(b"authorization", b"Bearer a-b_c~d+e/f==")], "a-b_c~d+e/f=="),
        ([(b"authorization", b"Basic dXNlcjpwYXNz")], None),
        ([(b"x-authorization", b"Bearer abc")], None),
    ],
)
def test_bearer_token_extracts_the_token(
    headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    assert bearer_token(headers) == expected


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")], "more than one"),
        ([(b"authorization", b"Bearer a"), (b"Authorization", b"Bearer a")], "more than one"),
        ([(b"authorization", b"")], "empty"),
        ([(b"authorization", b"   ")], "empty"),
        ([(b"authorization", b"Bearer")], "without a token"),
        ([(b"authorization", b"Bearer    ")], "without a token"),
        ([(b"authorization", b"Bearer a b")], "b64token"),
        ([(b"authorization", b"Bearer a=b")], "b64token"),
        ([(b"authorization", b'Bearer "abc"')], "b64token"),
        ([(b"authorization", b"Bearer \xff\xfe")], "b64token"),
        ([(b"authorization", b"Bearer,abc")], "malformed"),
        ([(b"authorization", b"(Bearer) abc")], "malformed"),
    ],
)
def test_bearer_token_refuses_malformed_headers(
    headers: list[tuple[bytes, bytes]], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        bearer_token(headers)


# --- RFC 6750 answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "challenge"),
    [
        (None, 401, 'Bearer realm="r"'),
        (
            InvalidRequestError("more than one Authorization header"),
            400,
            'Bearer realm="r", error="invalid_request", '
            'error_description="more than one Authorization header"',
        ),
        (
            InvalidTokenError("the token expired", reason="expired"),
            401,
            'Bearer realm="r", error="invalid_token", error_description="the token expired"',
        ),
        (
            InsufficientScopeError("role missing", required=("a", "b")),
            403,
            'Bearer realm="r", error="insufficient_scope", error_description="role missing", '
            'scope="a b"',
        ),
        (
            InsufficientScopeError("caller not allowed", reason="client"),
            403,
            'Bearer realm="r", error="insufficient_scope", error_description="caller not allowed"',
        ),
        (KeysUnavailableError("no keys", retry_after=9), 503, None),
        (
            RuntimeError("boom"),
            401,
            'Bearer realm="r", error="invalid_token", '
            'error_description="the token could not be validated"',
        ),
    ],
)
def test_rejection_for_maps_errors_to_rfc6750(
    exc: Exception | None, status: int, challenge: str | None
) -> None:
    rejection = rejection_for(exc, "r")
    assert (rejection.status, rejection.www_authenticate) == (status, challenge)


def test_rejection_for_keys_unavailable_carries_retry_after() -> None:
    rejection = rejection_for(KeysUnavailableError("no keys", retry_after=9), "r")
    assert rejection.headers["retry-after"] == "9"


def test_challenge_strips_characters_rfc6750_forbids() -> None:
    rejection = rejection_for(InvalidTokenError('bad "aud"\\ value\n'), 'r"x')
    assert rejection.www_authenticate == (
        'Bearer realm="r\'x", error="invalid_token", error_description="bad \'aud\'/ value?"'
    )


def test_rejection_body_is_json() -> None:
    rejection = rejection_for(InvalidTokenError("the token expired"), "r")
    assert rejection.body == b'{"error":"invalid_token","error_description":"the token expired"}'


# --- RequireRole over HTTP ----------------------------------------------------------------


def test_valid_token_with_role_reaches_the_endpoint_with_user_and_auth(client: TestClient) -> None:
    response = client.get("/whoami", headers=bearer(GOOD))
    assert response.status_code == 200
    assert response.json() == {
        "client_id": "client-1",
        "tenant_id": "tenant-1",
        "roles": ["invokeRole"],
        "scopes": ["invokeRole"],
        "claims": {"azp": "client-1", "roles": ["invokeRole"]},
        "identity": "client-1",
        "display_name": "client-1",
        "authenticated": True,
    }


def test_no_token_is_401_without_error_code(client: TestClient) -> None:
    response = client.get("/whoami")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer realm="{REALM}"'
    assert response.json()["error"] == "unauthorized"


def test_other_scheme_counts_as_no_token(client: TestClient) -> None:
    response = client.get("/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert (response.status_code, response.headers["www-authenticate"]) == (
        401,
        f'Bearer realm="{REALM}"',
    )


def test_lowercase_scheme_is_accepted(client: TestClient) -> None:
    assert client.get("/whoami", headers={"Authorization": f"bearer {GOOD}"}).status_code == 200


def test_bad_token_is_401_invalid_token_naming_the_check(client: TestClient) -> None:
    response = client.get("/whoami", headers=bearer("expired.token.sig"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="{REALM}", error="invalid_token", error_description="the token expired"'
    )
    assert response.json() == {"error": "invalid_token", "error_description": "the token expired"}


def test_missing_role_is_403_insufficient_scope(client: TestClient) -> None:
    response = client.get("/whoami", headers=bearer(READER))
    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith(
        f'Bearer realm="{REALM}", error="insufficient_scope"'
    )
    assert 'scope="invokeRole"' in response.headers["www-authenticate"]


def test_caller_not_allowed_is_403(client: TestClient) -> None:
    response = client.get("/whoami", headers=bearer("stranger.token.sig"))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_two_authorization_headers_are_400_invalid_request(client: TestClient) -> None:
    response = client.get(
        "/whoami", headers=[("Authorization", f"Bearer {GOOD}"), ("Authorization", "Bearer x")]
    )
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("value", ["Bearer a b", 'Bearer "abc"', "Bearer abc,def", "Bearer"])
def test_malformed_header_is_400_invalid_request(client: TestClient, value: str) -> None:
    response = client.get("/whoami", headers={"Authorization": value})
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


def test_repeated_headers_never_reach_the_validator(
    client: TestClient, validator: FakeValidator
) -> None:
    client.get("/whoami", headers=[("Authorization", f"Bearer {GOOD}")] * 2)
    assert validator.seen == []


def test_cold_start_without_keys_is_503_with_retry_after(client: TestClient) -> None:
    response = client.get("/whoami", headers=bearer("cold.token.sig"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert "www-authenticate" not in response.headers


def test_validator_bug_is_401_not_500(client: TestClient) -> None:
    response = client.get("/whoami", headers=bearer("buggy.token.sig"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_refusals_are_not_cached(client: TestClient) -> None:
    assert client.get("/whoami").headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("token", "status"), [(GOOD, 200), (ADMIN_ONLY, 200), (READER, 403)])
def test_any_of_several_roles_is_enough_by_default(
    validator: FakeValidator, token: str, status: int
) -> None:
    with TestClient(make_app(validator, "invokeRole", "adminRole")) as c:
        assert c.get("/whoami", headers=bearer(token)).status_code == status


@pytest.mark.parametrize(("token", "status"), [(GOOD, 403), (ADMIN_ONLY, 403), (BOTH, 200)])
def test_match_all_requires_every_role(validator: FakeValidator, token: str, status: int) -> None:
    with TestClient(make_app(validator, "invokeRole", "adminRole", match="all")) as c:
        assert c.get("/whoami", headers=bearer(token)).status_code == status


@pytest.mark.parametrize("path", ["/healthz", "/health/ready"])
def test_exempt_paths_need_no_token(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert (response.status_code, response.text) == (200, "ok False")


@pytest.mark.parametrize("path", ["/svc/healthz", "/svc/health/ready"])
def test_exempt_paths_are_matched_as_routed_under_a_root_path(
    validator: FakeValidator, path: str
) -> None:
    # Mounted (or run with uvicorn --root-path), scope["path"] carries the root path.
    inner = make_app(validator, exempt=["/healthz", "/health/*"])
    outer = Starlette(routes=[Mount("/svc", app=inner)])
    with TestClient(outer) as c:
        assert c.get(path).status_code == 200
        assert c.get("/svc/whoami").status_code == 401


def test_a_root_path_that_looks_exempt_does_not_open_the_routes_below_it(
    validator: FakeValidator,
) -> None:
    # The app routes "/whoami" here; the full path "/health/whoami" must not make it exempt.
    outer = Starlette(routes=[Mount("/health", app=make_app(validator, exempt=["/health/*"]))])
    with TestClient(outer) as c:
        assert c.get("/health/whoami").status_code == 401


def test_exemption_is_exact_not_a_prefix(validator: FakeValidator) -> None:
    with TestClient(make_app(validator, exempt=["/health"])) as c:
        assert c.get("/health/ready").status_code == 401


def test_requires_decorator_sees_the_roles(client: TestClient) -> None:
    assert client.get("/admin", headers=bearer(GOOD)).status_code == 403
    assert client.get("/admin", headers=bearer(BOTH)).status_code == 200


PREFLIGHT = {"Origin": "https://web.example", "Access-Control-Request-Method": "GET"}


def test_cors_preflight_needs_a_token_by_default(client: TestClient) -> None:
    # Anyone can send Origin and Access-Control-Request-Method: passing them through let an
    # OPTIONS reach handlers (and mounted apps) that answer it, with no token.
    response = client.options("/cors", headers=PREFLIGHT)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer realm="{REALM}"'


def test_cors_preflight_passes_without_token_when_allowed(validator: FakeValidator) -> None:
    with TestClient(make_app(validator, allow_preflight=True)) as c:
        response = c.options("/cors", headers=PREFLIGHT)
        assert (response.status_code, response.text) == (200, "options reached the app")
        assert c.options("/cors").status_code == 401  # a plain OPTIONS still needs a token


def test_plain_options_still_needs_a_token(client: TestClient) -> None:
    assert client.options("/cors").status_code == 401


def test_options_without_origin_is_no_preflight_and_needs_a_token(validator: FakeValidator) -> None:
    # A browser's preflight always carries Origin (Fetch standard); without it the request is
    # an ordinary OPTIONS that happens to carry the header.
    with TestClient(make_app(validator, allow_preflight=True)) as c:
        response = c.options("/cors", headers={"Access-Control-Request-Method": "GET"})
    assert response.status_code == 401


def test_cors_middleware_outside_answers_preflights_without_a_token(
    validator: FakeValidator,
) -> None:
    # The set-up docs/api.md recommends: CORSMiddleware added after RequireRole wraps it, and
    # answers a preflight before RequireRole sees it; other requests still need a token.
    app = Starlette(routes=ROUTES)
    app.add_middleware(RequireRole("invokeRole", validator=validator))
    app.add_middleware(CORSMiddleware, allow_origins=["https://web.example"], allow_methods=["*"])
    with TestClient(app) as c:
        preflight = c.options("/whoami", headers=PREFLIGHT)
        refused = c.get("/whoami", headers={"Origin": "https://web.example"})
        served = c.get("/whoami", headers={"Origin": "https://web.example", **bearer(GOOD)})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://web.example"
    assert validator.seen == [GOOD]
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://web.example"
    assert served.status_code == 200


def test_cors_middleware_inside_answers_preflight_when_allowed(validator: FakeValidator) -> None:
    app = Starlette(routes=ROUTES)
    app.add_middleware(CORSMiddleware, allow_origins=["https://web.example"], allow_methods=["*"])
    app.add_middleware(RequireRole("invokeRole", validator=validator, allow_preflight=True))
    with TestClient(app) as c:
        response = c.options("/whoami", headers=PREFLIGHT)
    assert response.headers["access-control-allow-origin"] == "https://web.example"


def test_lifespan_passes_through_and_keeps_a_given_validator_open(
    validator: FakeValidator,
) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.add_middleware(RequireRole("invokeRole", validator=validator))
    with TestClient(app):
        pass
    assert (events, validator.closed) == (["startup", "shutdown"], False)


def test_tokens_never_reach_the_log(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ccflow")
    for token in ("expired.token.sig", "buggy.token.sig", READER):
        client.get("/whoami", headers=bearer(token))
    assert caplog.records
    assert "token.sig" not in caplog.text


# --- RequireRole over WebSocket -----------------------------------------------------------


def test_websocket_with_valid_token_is_accepted(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=bearer(GOOD)) as ws:
        assert ws.receive_text() == "client-1"


@pytest.mark.parametrize(
    "headers", [{}, bearer("expired.token.sig"), bearer(READER), {"Authorization": "Bearer a b"}]
)
def test_websocket_refused_with_1008_before_accept(
    client: TestClient, headers: dict[str, str]
) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as info,
        client.websocket_connect("/ws", headers=headers),
    ):
        pass  # pragma: no cover - the handshake itself is refused
    assert info.value.code == 1008


def test_websocket_without_signing_keys_is_closed_try_again_later(client: TestClient) -> None:
    # 1008 (policy violation) would tell the client its token is bad; the keys are what is
    # missing, so 1013 (try again later, the 503 of WebSockets).
    with (
        pytest.raises(WebSocketDisconnect) as info,
        client.websocket_connect("/ws", headers=bearer("cold.token.sig")),
    ):
        pass  # pragma: no cover - the handshake itself is refused
    assert info.value.code == 1013


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "options", "setting"),
    [
        ((), {}, "roles"),
        (("",), {}, "roles"),
        ((1,), {}, "roles"),
        (("invokeRole",), {"match": "some"}, "match"),
        (("invokeRole",), {"exempt": ["healthz"]}, "exempt"),
        (("invokeRole",), {"exempt": None}, "exempt"),
        (("invokeRole",), {"exempt": 5}, "exempt"),
        (("invokeRole",), {"exempt": ["/healthz", "/*"]}, "exempt"),
        (("invokeRole",), {"exempt": "/*"}, "exempt"),
        (("invokeRole",), {"validator": "not a validator"}, "validator"),
    ],
)
def test_bad_configuration_fails_at_construction(
    validator: FakeValidator, roles: tuple[object, ...], options: dict[str, object], setting: str
) -> None:
    options = {"validator": validator, **options}
    with pytest.raises(ConfigurationError) as info:
        RequireRole(*roles, **options)  # type: ignore[arg-type]
    assert info.value.setting == setting


def test_one_exempt_path_may_be_given_as_a_string(validator: FakeValidator) -> None:
    # A plain string is one path, not a sequence of one-character paths.
    with TestClient(make_app(validator, exempt="/healthz")) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/whoami").status_code == 401


def test_backend_refuses_something_that_is_not_a_validator() -> None:
    with pytest.raises(ConfigurationError) as info:
        BearerAuthBackend("not a validator")  # type: ignore[arg-type]
    assert info.value.setting == "validator"


def test_token_user_repr_shows_no_claims() -> None:
    user = TokenUser(FakeVerdict(claims={"secretish": "x"}))
    assert repr(user) == "TokenUser(client_id='client-1', roles=('invokeRole',))"


# --- BearerAuthBackend --------------------------------------------------------------------


@pytest.fixture
def backend_client(validator: FakeValidator) -> Iterator[TestClient]:
    app = Starlette(routes=ROUTES)
    app.add_middleware(
        AuthenticationMiddleware,
        backend=BearerAuthBackend(validator),
        on_error=BearerAuthBackend.on_error,
    )
    with TestClient(app) as c:
        yield c


def test_backend_sets_user_and_scopes(backend_client: TestClient) -> None:
    body = backend_client.get("/whoami", headers=bearer(GOOD)).json()
    assert (body["client_id"], body["scopes"]) == ("client-1", ["invokeRole"])


def test_backend_without_token_leaves_the_user_unauthenticated(backend_client: TestClient) -> None:
    assert backend_client.get("/healthz").text == "ok False"


@pytest.mark.parametrize(("token", "status"), [(GOOD, 403), (BOTH, 200)])
def test_backend_lets_requires_check_roles(
    backend_client: TestClient, token: str, status: int
) -> None:
    assert backend_client.get("/admin", headers=bearer(token)).status_code == status


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        (bearer("expired.token.sig"), 401, "invalid_token"),
        (bearer("stranger.token.sig"), 403, "insufficient_scope"),
        ({"Authorization": "Bearer a b"}, 400, "invalid_request"),
    ],
)
def test_backend_errors_answer_rfc6750(
    backend_client: TestClient, headers: dict[str, str], status: int, error: str
) -> None:
    response = backend_client.get("/healthz", headers=headers)
    assert response.status_code == status
    assert f'error="{error}"' in response.headers["www-authenticate"]


def test_backend_cold_start_is_503(backend_client: TestClient) -> None:
    response = backend_client.get("/healthz", headers=bearer("cold.token.sig"))
    assert (response.status_code, response.headers["retry-after"]) == (503, "7")


@pytest.mark.anyio
async def test_backend_aclose_closes_only_a_validator_built_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A backend built from the environment left its validator's HTTP client open for good:
    # nothing could close it (RequireRole and BearerClaims both can).
    given = FakeValidator()
    await BearerAuthBackend(given).aclose()
    assert given.closed is False

    built = FakeValidator()
    monkeypatch.setattr(TokenValidator, "from_env", classmethod(lambda cls: built))
    backend = BearerAuthBackend()
    assert backend.validator is built
    await backend.aclose()
    assert built.closed is True


# --- InvalidRequestError ------------------------------------------------------------------


def test_invalid_request_error_is_in_the_one_tree_and_still_a_value_error() -> None:
    err = InvalidRequestError("more than one Authorization header")
    assert isinstance(err, CCFlowError)
    assert isinstance(err, ValueError)
    clone = pickle.loads(pickle.dumps(err))
    assert (type(clone), str(clone), clone.message) == (type(err), str(err), err.message)


# --- scope types --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["webtransport", "custom", ""])
def test_an_unknown_scope_type_is_refused_and_never_reaches_the_app(
    validator: FakeValidator, kind: str
) -> None:
    # Fail closed: an unknown scope type was passed to the app unchecked.
    reached: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    async def receive() -> Message:
        raise AssertionError("never called")

    async def send(message: Message) -> None:
        raise AssertionError("never called")

    middleware = RequireRole("invokeRole", validator=validator)(inner)
    with pytest.raises(RuntimeError, match=repr(kind)):
        asyncio.run(middleware({"type": kind, "headers": []}, receive, send))
    assert reached == []


# --- configuration from the environment ---------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in API_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_env")
def test_declaring_require_role_needs_no_environment() -> None:
    # Importing a module that declares RequireRole("invokeRole") must not fail for want of
    # CCFLOW_* variables: they are read when the app starts.
    app = Starlette(routes=ROUTES)
    app.add_middleware(RequireRole("invokeRole"))


@pytest.mark.usefixtures("no_env")
def test_a_missing_variable_fails_the_start_up_naming_it() -> None:
    app = Starlette(routes=ROUTES)
    app.add_middleware(RequireRole("invokeRole"))
    with pytest.raises(ConfigurationError, match="CCFLOW_AUDIENCE") as info, TestClient(app):
        pass  # pragma: no cover - the start-up itself fails
    assert info.value.setting == "CCFLOW_AUDIENCE"


@pytest.mark.usefixtures("no_env")
def test_a_missing_variable_fails_the_lifespan_start_up_so_a_server_stops() -> None:
    # uvicorn's default lifespan mode ("auto") takes a bare exception for "no lifespan support"
    # and serves anyway; lifespan.startup.failed makes it stop, printing the message.
    middleware = RequireRole("invokeRole")(Starlette(routes=ROUTES))
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(ConfigurationError, match="CCFLOW_AUDIENCE"):
        asyncio.run(middleware({"type": "lifespan", "state": {}}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "CCFLOW_AUDIENCE" in sent[0]["message"]


@pytest.mark.usefixtures("no_env")
def test_a_backend_from_the_environment_reads_it_on_first_use() -> None:
    backend = BearerAuthBackend()  # declared at import time: no configuration needed yet
    assert backend.owns_validator
    app = Starlette(routes=ROUTES)
    app.add_middleware(AuthenticationMiddleware, backend=backend)
    with TestClient(app) as c, pytest.raises(ConfigurationError, match="CCFLOW_AUDIENCE"):
        c.get("/healthz", headers=bearer(GOOD))


# --- with a real TokenValidator -----------------------------------------------------------


def real_app(validator: Any, *roles: str, **options: Any) -> Starlette:
    app = Starlette(routes=ROUTES)
    app.add_middleware(RequireRole(*(roles or ("invokeRole",)), validator=validator, **options))
    return app


@pytest.mark.parametrize("how", REVOKING)
def test_require_role_asks_validate_on_every_request(
    revoking_validator: Callable[[str], Any], authority: Authority, how: str
) -> None:
    # A repeated token was served from TokenValidator's cache without calling an overridden
    # validate(): a token revoked after its first use was still a 200.
    token = authority.mint()
    with TestClient(real_app(revoking_validator(how))) as c:
        first = c.get("/whoami", headers=bearer(token))
        second = c.get("/whoami", headers=bearer(token))
    assert first.status_code == 200
    assert second.status_code == 401
    assert REVOKED in second.headers["www-authenticate"]


@pytest.mark.parametrize("how", REVOKING)
def test_require_role_asks_validate_on_every_websocket(
    revoking_validator: Callable[[str], Any], authority: Authority, how: str
) -> None:
    token = authority.mint()
    with TestClient(real_app(revoking_validator(how))) as c:
        with c.websocket_connect("/ws", headers=bearer(token)) as ws:
            assert ws.receive_text() == authority.client("calc-client").client_id
        with (
            pytest.raises(WebSocketDisconnect) as info,
            c.websocket_connect("/ws", headers=bearer(token)),
        ):
            pass  # pragma: no cover - the handshake itself is refused
    assert info.value.code == 1008


@pytest.mark.parametrize("how", REVOKING)
def test_the_backend_asks_validate_on_every_request(
    revoking_validator: Callable[[str], Any], authority: Authority, how: str
) -> None:
    app = Starlette(routes=ROUTES)
    app.add_middleware(
        AuthenticationMiddleware,
        backend=BearerAuthBackend(revoking_validator(how)),
        on_error=BearerAuthBackend.on_error,
    )
    token = authority.mint()
    with TestClient(app) as c:
        assert c.get("/whoami", headers=bearer(token)).status_code == 200
        second = c.get("/whoami", headers=bearer(token))
    assert second.status_code == 401
    assert REVOKED in second.headers["www-authenticate"]


@pytest.mark.parametrize(
    "headers",
    [
        lambda t: [("Authorization", f"Bearer {t}"), ("Authorization", f"Bearer {t}")],
        lambda t: [("authorization", f"Bearer {t}"), ("AUTHORIZATION", "Bearer x")],
    ],
    ids=["twice", "mixed-case duplicate"],
)
def test_an_accepted_token_in_several_headers_is_still_400(
    validator_for: ValidatorFactory, authority: Authority, headers: Any
) -> None:
    token = authority.mint()
    with TestClient(real_app(validator_for(leeway=0))) as c:
        assert c.get("/whoami", headers=bearer(token)).status_code == 200
        response = c.get("/whoami", headers=headers(token))
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("roles", "match", "status"),
    [
        (("adminRole",), "any", 403),
        (("adminRole", "invokeRole"), "any", 200),
        (("adminRole", "invokeRole"), "all", 403),
        (("invokeRole", "invokeRole"), "all", 200),
    ],
)
def test_roles_are_checked_on_every_request_of_a_token(
    validator_for: ValidatorFactory,
    authority: Authority,
    roles: tuple[str, ...],
    match: str,
    status: int,
) -> None:
    token = authority.mint()
    with TestClient(real_app(validator_for(leeway=0), *roles, match=match)) as c:
        for _ in range(2):
            response = c.get("/whoami", headers=bearer(token))
            assert response.status_code == status
    if status == 403:
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_a_token_accepted_before_is_401_expired_past_its_exp(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    token = authority.mint(lifetime=100)
    with TestClient(real_app(validator_for(leeway=0))) as c:
        assert c.get("/whoami", headers=bearer(token)).status_code == 200
        clock.advance(100)
        response = c.get("/whoami", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "expired" in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (b"Bearer TOKEN", 200),
        (b"bearer TOKEN", 200),
        (b"Bearer  TOKEN", 200),
        (b"Bearer TOKEN ", 200),
        (b"Bearer TOKEN\t", 200),
        (b"Bearer\tTOKEN", 400),
        (b"Bearer ", 400),
        ("Bearer tök".encode(), 400),
    ],
    ids=["plain", "lower", "two blanks", "trailing blank", "trailing tab", "tab", "none", "utf-8"],
)
def test_odd_bearer_values_get_the_same_answer_new_or_repeated(
    validator_for: ValidatorFactory, authority: Authority, value: bytes, status: int
) -> None:
    token = authority.mint()
    raw = value.replace(b"TOKEN", token.encode())
    app = real_app(validator_for(leeway=0))
    for _ in range(2):
        answer = asyncio.run(_get(app, [(b"authorization", raw)]))
        assert answer[0] == status
        if status == 400:
            assert 'error="invalid_request"' in answer[1]


async def _get(app: Starlette, headers: list[tuple[bytes, bytes]]) -> tuple[int, str]:
    """GET /whoami on a hand-built scope: status and WWW-Authenticate."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/whoami",
        "raw_path": b"/whoami",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    answer: dict[str, Any] = {}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["challenge"] = dict(message["headers"]).get(b"www-authenticate", b"").decode()

    await app(scope, receive, send)
    return answer["status"], answer["challenge"]


def test_add_middleware_with_the_class_says_how_to_write_it() -> None:
    # Starlette's usual idiom, add_middleware(Cls, *args), passed the wrapped app as a role:
    # the error quoted "<ExceptionMiddleware object at 0x...>" as a role that is not a string.
    app = Starlette()
    app.add_middleware(RequireRole, "invokeRole", validator=FakeValidator())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"add_middleware\(RequireRole\('invokeRole'"):
        TestClient(app).get("/")


@pytest.mark.parametrize("shutdown_fails", [False, True], ids=["shutdown", "failed shutdown"])
def test_a_validator_from_the_environment_is_closed_however_shutdown_ends(
    monkeypatch: pytest.MonkeyPatch, shutdown_fails: bool
) -> None:
    # It was closed on lifespan.shutdown.complete only: an app whose shutdown raised left the
    # validator's HTTP client open.
    validator = FakeValidator()
    monkeypatch.setattr(TokenValidator, "from_env", classmethod(lambda cls: validator))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if shutdown_fails:
            raise RuntimeError("the app's own shutdown failed")

    app = Starlette(lifespan=lifespan)
    app.add_middleware(RequireRole("invokeRole"))
    with contextlib.suppress(RuntimeError), TestClient(app):
        assert not validator.closed
    assert validator.closed


@pytest.mark.parametrize("owner", ["RequireRole", "BearerAuthBackend", "BearerClaims"])
def test_the_validator_class_instead_of_an_instance_fails_at_construction(owner: str) -> None:
    # TokenValidator (the class) has a validate and a realm too: it was accepted, and every
    # request then failed with a TypeError inside the refusal itself, a 500.
    build: dict[str, Callable[..., object]] = {
        "RequireRole": lambda v: RequireRole("invokeRole", validator=v),
        "BearerAuthBackend": BearerAuthBackend,
        "BearerClaims": lambda v: BearerClaims("invokeRole", validator=v),
    }
    with pytest.raises(ConfigurationError, match="class TokenValidator") as info:
        build[owner](TokenValidator)
    assert info.value.setting == "validator"


def test_a_validator_whose_realm_is_not_a_string_fails_at_construction() -> None:
    # Its realm goes into every WWW-Authenticate: anything but a string made each refusal a 500.
    class NoRealm:
        realm = None

        async def validate(self, token: str) -> object:
            raise AssertionError("never called")

    with pytest.raises(ConfigurationError, match=r"must be a ccflow\.TokenValidator"):
        RequireRole("invokeRole", validator=NoRealm())  # type: ignore[arg-type]


def _validator() -> FakeValidator:
    return FakeValidator({GOOD: FakeVerdict(roles=("invokeRole",))})


async def _inner(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"inner"})


def _call(
    middleware: Any,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    method: str = "GET",
    root_path: str = "",
) -> tuple[int, bytes]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": root_path,
        "query_string": b"",
        "headers": headers or [],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_refused_path_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    # scope["path"] is percent-decoded by the server: "/calc%0a..." arrives with a real line
    # break, and the refusal's debug line printed it as is, so a caller could write lines of
    # its own choosing into the API's log (or drive a terminal with escape sequences).
    middleware = RequireRole("invokeRole", validator=_validator())(_inner)
    forged = "/calc\nINFO ccflow.starlette: accepted GET /admin\r\x1b[2J\u2028"
    with caplog.at_level(logging.INFO, logger="ccflow.api"):
        assert _call(middleware, forged)[0] == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "ccflow.api"]
    assert lines, "the refusal is logged at INFO"
    for line in lines:
        assert not any(ch in line for ch in "\n\r\x1b\u2028"), line
    assert "/calc\\nINFO" in lines[0]


def _user_app() -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        body = b"authenticated" if user is not None and user.is_authenticated else b"anonymous"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


RAW_PREFLIGHT = [(b"origin", b"https://evil.example"), (b"access-control-request-method", b"GET")]


@pytest.mark.parametrize("authorization", [None, b"Bearer " + GOOD.encode(), b"Bearer forged"])
def test_an_allowed_preflight_reaches_the_app_as_the_unauthenticated_user(
    authorization: bytes | None,
) -> None:
    # Anyone can send Origin + Access-Control-Request-Method: what the docs tell a handler
    # answering OPTIONS to check (request.user.is_authenticated) must say "no" for it.
    middleware = RequireRole("invokeRole", validator=_validator(), allow_preflight=True)(
        _user_app()
    )
    headers = list(RAW_PREFLIGHT)
    if authorization is not None:
        headers.append((b"authorization", authorization))
    assert _call(middleware, "/data", headers, method="OPTIONS") == (200, b"anonymous")
    assert _call(middleware, "/data", headers[:1], method="OPTIONS")[0] == 401
    lower = _call(middleware, "/data", headers, method="options")
    assert lower[1] != b"anonymous"  # only the upper-case ASGI method counts as a preflight


def test_a_preflight_needs_a_token_unless_allowed() -> None:
    # The pass-through let a preflight's attacker-chosen headers reach handlers that answer
    # OPTIONS themselves, and mounted apps, with no token: it is opt-in now.
    middleware = RequireRole("invokeRole", validator=_validator())(_user_app())
    assert _call(middleware, "/data", RAW_PREFLIGHT, method="OPTIONS")[0] == 401
    with_token = [*RAW_PREFLIGHT, (b"authorization", b"Bearer " + GOOD.encode())]
    assert _call(middleware, "/data", with_token, method="OPTIONS") == (200, b"authenticated")


@pytest.mark.parametrize(
    ("path", "root_path"),
    [
        ("/healthz/", ""),
        ("//healthz", ""),
        ("/healthz/../calc", ""),
        ("/HEALTHZ", ""),
        ("/Healthz", ""),
        ("/healthz\x00", ""),
        ("/healthz%2f", ""),
        ("/health", ""),
        ("/healthy/x", ""),
        ("/api/healthz", ""),
        ("/healthz", "/healthz"),
        ("/health/x", "/health"),
        ("/apihealthz", "/api"),
        ("/api", "/api"),
    ],
)
def test_exempt_paths_are_not_opened_by_near_misses(path: str, root_path: str) -> None:
    middleware = RequireRole(
        "invokeRole", validator=_validator(), exempt=["/healthz", "/health/*"]
    )(_user_app())
    assert _call(middleware, path, root_path=root_path)[0] == 401


@pytest.mark.parametrize(
    ("path", "root_path"),
    [("/healthz", ""), ("/health/ready", ""), ("/api/healthz", "/api"), ("/a/health/x", "/a")],
)
def test_exempt_paths_still_pass(path: str, root_path: str) -> None:
    middleware = RequireRole(
        "invokeRole", validator=_validator(), exempt=["/healthz", "/health/*"]
    )(_user_app())
    assert _call(middleware, path, root_path=root_path) == (200, b"anonymous")
