"""RequireRole's cache-hit path with a real TokenValidator: a repeated token skips validate(),
and every refusal still gets the same answer as on the full path."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from _validation_tokens import Clock
from ccflow import RequireRole, TokenValidator, ValidatedToken
from ccflow.authority import Authority
from ccflow.errors import InvalidTokenError
from ccflow.starlette import TokenUser

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0


class CountingValidator(TokenValidator):
    """Counts the awaited validations, to see which requests took the synchronous path."""

    validations = 0

    async def validate(self, token: str) -> ValidatedToken:
        self.validations += 1
        return await super().validate(token)


async def whoami(request: Request) -> JSONResponse:
    user = request.user
    assert isinstance(user, TokenUser)
    return JSONResponse({"client_id": user.client_id, "scopes": request.auth.scopes})


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def authority(clock: Clock) -> Authority:
    return Authority(clock=clock)


def calc_validator(kind: type[TokenValidator], authority: Authority, clock: Clock) -> Any:
    api = authority.api("calc-api")
    return kind(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=clock,
        leeway=0,
    )


@pytest.fixture
def validator(authority: Authority, clock: Clock) -> CountingValidator:
    counting: CountingValidator = calc_validator(CountingValidator, authority, clock)
    return counting


def make_app(validator: TokenValidator, *roles: str, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/whoami", whoami)])
    app.add_middleware(RequireRole(*(roles or ("invokeRole",)), validator=validator, **options))
    return app


async def call(app: Starlette, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, str]]:
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

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}

    await app(scope, receive, send)
    return answer["status"], answer["headers"]


def auth(value: str, name: bytes = b"authorization") -> tuple[bytes, bytes]:
    return (name, value.encode())


async def test_repeated_token_is_served_without_validate(
    authority: Authority, validator: CountingValidator
) -> None:
    app, token = make_app(validator), authority.mint()
    for _ in range(3):
        status, _ = await call(app, [auth(f"Bearer {token}")])
        assert status == 200
    assert validator.validations == 1


async def test_lowercase_scheme_hits_as_well(
    authority: Authority, validator: CountingValidator
) -> None:
    app, token = make_app(validator), authority.mint()
    await call(app, [auth(f"Bearer {token}")])
    assert (await call(app, [auth(f"bearer {token}")]))[0] == 200
    assert validator.validations == 1


@pytest.mark.parametrize(
    "headers",
    [
        lambda t: [auth(f"Bearer {t}"), auth(f"Bearer {t}")],
        lambda t: [auth(f"Bearer {t}"), auth(f"Bearer {t}", b"Authorization")],
        lambda t: [auth(f"Bearer {t}", b"AUTHORIZATION"), auth("Bearer x")],
    ],
    ids=["twice", "mixed-case duplicate", "upper-case then another"],
)
async def test_cached_token_in_several_headers_is_still_400(
    authority: Authority, validator: CountingValidator, headers: Any
) -> None:
    app, token = make_app(validator), authority.mint()
    await call(app, [auth(f"Bearer {token}")])
    status, answer = await call(app, headers(token))
    assert status == 400
    assert 'error="invalid_request"' in answer["www-authenticate"]


async def test_cached_token_without_the_role_is_still_403(
    authority: Authority, validator: CountingValidator
) -> None:
    app, token = make_app(validator, "adminRole"), authority.mint()
    for _ in range(2):
        status, answer = await call(app, [auth(f"Bearer {token}")])
        assert status == 403
        assert 'error="insufficient_scope"' in answer["www-authenticate"]


@pytest.mark.parametrize(
    ("roles", "match", "status"),
    [
        (("adminRole", "invokeRole"), "any", 200),
        (("adminRole", "invokeRole"), "all", 403),
        (("invokeRole", "invokeRole"), "all", 200),
    ],
)
async def test_several_roles_on_the_cached_path(
    authority: Authority, validator: CountingValidator, roles: Any, match: Any, status: int
) -> None:
    app, token = make_app(validator, *roles, match=match), authority.mint()
    for _ in range(2):
        assert (await call(app, [auth(f"Bearer {token}")]))[0] == status


async def test_cached_token_past_exp_is_401_expired(
    authority: Authority, validator: CountingValidator, clock: Clock
) -> None:
    app, token = make_app(validator), authority.mint(lifetime=100)
    assert (await call(app, [auth(f"Bearer {token}")]))[0] == 200
    clock.advance(100)
    status, answer = await call(app, [auth(f"Bearer {token}")])
    assert status == 401
    assert 'error="invalid_token"' in answer["www-authenticate"]
    assert "expired" in answer["www-authenticate"]


@pytest.mark.parametrize(
    ("value", "status", "validations"),
    [("Bearer  {t}", 200, 2), ("Bearer {t} ", 200, 2), ("Bearer\t{t}", 400, 1)],
)
async def test_unusual_spacing_gets_the_full_path_answer(
    authority: Authority, validator: CountingValidator, value: str, status: int, validations: int
) -> None:
    app, token = make_app(validator), authority.mint()
    await call(app, [auth(f"Bearer {token}")])
    assert (await call(app, [auth(value.format(t=token))]))[0] == status
    assert validator.validations == validations


@pytest.fixture
def plain_validator(authority: Authority, clock: Clock) -> TokenValidator:
    plain: TokenValidator = calc_validator(TokenValidator, authority, clock)
    return plain


async def test_a_new_token_is_parsed_once_then_served_from_the_cache(
    authority: Authority, plain_validator: TokenValidator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plain TokenValidator hands RequireRole the digest of a miss: one parse, one digest.
    from ccflow import validation

    parses: list[bytes] = []
    digests: list[bytes] = []
    real_parse, real_sha256 = validation.parse_ascii, validation._sha256

    def parse(raw: bytes, *args: Any) -> Any:
        parses.append(raw)
        return real_parse(raw, *args)

    def sha256(data: bytes) -> Any:
        digests.append(data)
        return real_sha256(data)

    monkeypatch.setattr(validation, "parse_ascii", parse)
    monkeypatch.setattr(validation, "_sha256", sha256)
    app, token = make_app(plain_validator), authority.mint()
    for _ in range(3):
        assert (await call(app, [auth(f"Bearer {token}")]))[0] == 200
    assert parses == [token.encode()]
    assert len(digests) == 3  # one per request, none twice
    assert plain_validator.cached(token) is not None


async def test_a_new_token_lacking_the_role_is_403_on_the_miss_path(
    authority: Authority, plain_validator: TokenValidator
) -> None:
    app = make_app(plain_validator, "adminRole")
    status, headers = await call(app, [auth(f"Bearer {authority.mint()}")])
    assert status == 403
    assert 'error="insufficient_scope"' in headers["www-authenticate"]


@pytest.mark.parametrize(
    "value",
    [b"Bearer ", b"Bearer  TOKEN", b"Bearer TOKEN ", b"Bearer TOKEN\t", "Bearer tök".encode()],
    ids=["no token", "two blanks", "trailing blank", "trailing tab", "not ascii"],
)
async def test_odd_bearer_values_get_the_full_paths_answer(
    authority: Authority, plain_validator: TokenValidator, value: bytes
) -> None:
    token = authority.mint()
    app = make_app(plain_validator)
    status, headers = await call(app, [(b"authorization", value.replace(b"TOKEN", token.encode()))])
    if value in (b"Bearer  TOKEN", b"Bearer TOKEN ", b"Bearer TOKEN\t"):
        assert status == 200  # blanks around the token are tolerated, as on the full path
    else:
        assert status == 400
        assert 'error="invalid_request"' in headers["www-authenticate"]


class Denylist:
    """A wrapper that adds its own check and delegates everything else to a TokenValidator."""

    def __init__(self, inner: TokenValidator, banned: set[str]) -> None:
        self.inner, self.banned = inner, banned

    async def validate(self, token: str) -> ValidatedToken:
        verdict = await self.inner.validate(token)
        if verdict.client_id in self.banned:
            raise InvalidTokenError("banned caller", reason="client")
        return verdict

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_delegating_wrappers_validate_sees_every_new_token(
    authority: Authority, clock: Clock
) -> None:
    token = authority.mint()
    client_id = authority.client("calc-client").client_id
    app = make_app(Denylist(calc_validator(TokenValidator, authority, clock), {client_id}))
    status, headers = await call(app, [auth(f"Bearer {token}")])
    assert status == 401
    assert "banned caller" in headers["www-authenticate"]


async def test_a_validate_replaced_on_the_instance_sees_every_new_token(
    authority: Authority, plain_validator: TokenValidator
) -> None:
    async def refuse_all(token: str) -> ValidatedToken:
        raise InvalidTokenError("refused by the replacement", reason="client")

    plain_validator.validate = refuse_all  # type: ignore[method-assign]
    status, headers = await call(make_app(plain_validator), [auth(f"Bearer {authority.mint()}")])
    assert status == 401
    assert "refused by the replacement" in headers["www-authenticate"]
