"""ccflow.fastapi on a stand-in validator: the dependency, its answers, its OpenAPI scheme."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request, Security, WebSocket
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.support import API_VARIABLES, REALM, REVOKED, REVOKING, FakeValidator, FakeVerdict

from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.errors import ConfigurationError, InvalidTokenError, KeysUnavailableError
from ccflow.fastapi import BearerClaims

if TYPE_CHECKING:
    pass


GOOD = "good.token.sig"
READER = "reader.token.sig"
ADMIN = "admin.token.sig"


VALIDATOR = FakeValidator(
    answers={
        GOOD: FakeVerdict(claims={"azp": "client-1", "roles": ["invokeRole"]}),
        READER: FakeVerdict(client_id="reader", roles=()),
        ADMIN: FakeVerdict(client_id="admin", roles=("invokeRole", "adminRole")),
        "expired.token.sig": InvalidTokenError("the token expired", reason="expired"),
        "cold.token.sig": KeysUnavailableError("no signing keys", retry_after=5),
    }
)
# Module level: FastAPI resolves the string annotations against the module's globals.
invoker = BearerClaims("invokeRole", validator=VALIDATOR)
anyone = BearerClaims(validator=VALIDATOR)
app = FastAPI()


@app.get("/add/{a}/{b}")
async def add(a: int, b: int, claims: Annotated[Mapping[str, Any], Depends(invoker)]) -> Any:
    return {"result": a + b, "caller": claims["azp"]}


@app.get("/me")
async def me(request: Request, claims: Annotated[Mapping[str, Any], Depends(anyone)]) -> Any:
    return {"user": request.user.identity, "scopes": request.auth.scopes}


@app.get("/admin")
async def admin(
    claims: Annotated[Mapping[str, Any], Security(anyone, scopes=["adminRole"])],
) -> Any:
    return "admin"


@app.get("/both")
async def both(
    claims: Annotated[Mapping[str, Any], Security(invoker, scopes=["invokeRole", "adminRole"])],
) -> Any:
    return "both"


@app.get("/open")
async def open_route() -> str:
    return "open"


@app.websocket("/ws")
async def ws(websocket: WebSocket, claims: Annotated[Mapping[str, Any], Depends(invoker)]) -> None:
    await websocket.accept()
    await websocket.send_text(claims["azp"])
    await websocket.close()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_dependency_returns_the_claims(client: TestClient) -> None:
    response = client.get("/add/2/3", headers=bearer(GOOD))
    assert response.json() == {"result": 5, "caller": "client-1"}


def test_dependency_sets_user_and_auth(client: TestClient) -> None:
    assert client.get("/me", headers=bearer(GOOD)).json() == {
        "user": "client-1",
        "scopes": ["invokeRole"],
    }


def test_dependency_on_a_websocket_route_accepts_a_good_token(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=bearer(GOOD)) as ws:
        assert ws.receive_text() == "client-1"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, 1008),
        (bearer("expired.token.sig"), 1008),
        (bearer(READER), 1008),
        (bearer("cold.token.sig"), 1013),
    ],
)
def test_dependency_on_a_websocket_route_refuses_before_accept(
    client: TestClient, headers: dict[str, str], code: int
) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as info,
        client.websocket_connect("/ws", headers=headers),
    ):
        pass  # pragma: no cover - the handshake itself is refused
    assert info.value.code == code


def test_dependency_without_roles_accepts_any_valid_token(client: TestClient) -> None:
    assert client.get("/me", headers=bearer(READER)).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "challenge_start"),
    [
        ({}, 401, f'Bearer realm="{REALM}"'),
        (bearer("expired.token.sig"), 401, f'Bearer realm="{REALM}", error="invalid_token"'),
        (bearer(READER), 403, f'Bearer realm="{REALM}", error="insufficient_scope"'),
        ({"Authorization": "Bearer a b"}, 400, f'Bearer realm="{REALM}", error="invalid_request"'),
    ],
)
def test_refusals_answer_rfc6750(
    client: TestClient, headers: dict[str, str], status: int, challenge_start: str
) -> None:
    response = client.get("/add/2/3", headers=headers)
    assert response.status_code == status
    assert response.headers["www-authenticate"].startswith(challenge_start)
    assert "detail" in response.json()


def test_no_token_challenge_has_no_error_code(client: TestClient) -> None:
    assert client.get("/add/2/3").headers["www-authenticate"] == f'Bearer realm="{REALM}"'


def test_cold_start_is_503_with_retry_after(client: TestClient) -> None:
    response = client.get("/add/2/3", headers=bearer("cold.token.sig"))
    assert (response.status_code, response.headers["retry-after"]) == (503, "5")


def test_openapi_declares_a_bearer_scheme_on_protected_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An OAuth 2.0 access token (client credentials).",
    }
    assert spec["paths"]["/add/{a}/{b}"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/open"]["get"]


@pytest.mark.parametrize(
    ("roles", "options", "setting"),
    [(("",), {}, "roles"), (("invokeRole",), {"match": "most"}, "match")],
)
def test_bad_configuration_fails_at_construction(
    roles: tuple[str, ...], options: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        BearerClaims(*roles, validator=FakeValidator(), **options)
    assert info.value.setting == setting


def test_something_that_is_not_a_validator_fails_at_construction() -> None:
    with pytest.raises(ConfigurationError) as info:
        BearerClaims("invokeRole", validator="not a validator")  # type: ignore[arg-type]
    assert info.value.setting == "validator"


def test_importing_ccflow_starlette_does_not_import_fastapi() -> None:
    code = "import sys, ccflow, ccflow.starlette; print('fastapi' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


@pytest.mark.anyio
async def test_aclose_closes_only_a_validator_built_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = FakeValidator()
    await BearerClaims("invokeRole", validator=given).aclose()
    assert given.closed is False

    built = FakeValidator()
    monkeypatch.setattr(TokenValidator, "from_env", classmethod(lambda cls: built))
    invoker = BearerClaims("invokeRole")
    assert invoker.validator is built
    await invoker.aclose()
    assert built.closed is True


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/admin", ADMIN, 200),
        ("/admin", GOOD, 403),  # valid, but without the route's scope
        ("/admin", READER, 403),
        ("/both", ADMIN, 200),
        ("/both", GOOD, 403),  # Security scopes are all required
        ("/admin", "expired.token.sig", 401),  # a bad token is a 401 before any scope
    ],
)
def test_security_scopes_are_roles_the_route_needs(
    client: TestClient, path: str, token: str, status: int
) -> None:
    # Security(dependency, scopes=[...]) was accepted and its scopes silently ignored: a route
    # written to need adminRole let any valid token in.
    response = client.get(path, headers=bearer(token))
    assert response.status_code == status
    if status == 403:
        challenge = response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert "adminRole" in challenge


def test_openapi_lists_a_routes_security_scopes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["paths"]["/admin"]["get"]["security"] == [{"bearerAuth": ["adminRole"]}]


def test_declaring_the_dependency_needs_no_environment_until_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A module declaring BearerClaims("invokeRole") imports without CCFLOW_* variables; the
    # first request then fails with the error naming the missing one.
    for name in API_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    from_env = BearerClaims("invokeRole")
    assert from_env.owns_validator
    api = FastAPI()

    @api.get("/add", dependencies=[Depends(from_env)])
    async def add() -> str:
        return "never"  # pragma: no cover

    with TestClient(api) as c, pytest.raises(ConfigurationError, match="CCFLOW_AUDIENCE"):
        c.get("/add", headers=bearer(GOOD))


@pytest.mark.parametrize("how", REVOKING)
def test_the_dependency_asks_validate_on_every_request(
    authority: Authority, revoking_validator: Callable[[str], Any], how: str
) -> None:
    revoking = BearerClaims("invokeRole", validator=revoking_validator(how))
    api = FastAPI()

    @api.get("/add", dependencies=[Depends(revoking)])
    async def add() -> str:
        return "ok"

    token = authority.mint()
    with TestClient(api) as c:
        assert c.get("/add", headers=bearer(token)).status_code == 200
        second = c.get("/add", headers=bearer(token))
    assert second.status_code == 401
    assert REVOKED in second.headers["www-authenticate"]
