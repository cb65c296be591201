"""Flask behind RequireRoleWSGI and RequireScopeWSGI: the bad-request suite, the refusals every
face answers alike, the environ verdict and principal, the refusal log and hook, threads on a
cold cache, exemptions and configuration errors."""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from tests.support import (
    FACE_CASES,
    NOW,
    ON_BAD_REQUESTS,
    Builder,
    Minter,
    authorization,
    calc_validator,
    challenge_ok,
    face_challenge_ok,
    face_token,
    statuses_at_once,
)

from ccflow import TokenValidator
from ccflow.authority import Authority, Fault
from ccflow.errors import ConfigurationError, InsufficientScopeError
from ccflow.starlette import AccessRule, Refusal
from ccflow.testing import TEST_USER_OID, TokenFactory
from ccflow.wsgi import (
    ENVIRON_KEY,
    PRINCIPAL_KEY,
    RequireRoleWSGI,
    RequireRoleWSGIOptions,
    RequireScopeWSGI,
    authenticate_sync,
)


@dataclass
class FlaskBed(Minter):
    validator: TokenValidator
    client: FlaskClient


def make_validator(authority: Authority, **options: Any) -> TokenValidator:
    validator: TokenValidator = calc_validator(authority, sync=True, **options)
    return validator


def make_app(validator: TokenValidator, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.get("/calc/v1/add/<int:a>/<int:b>")
    def add(a: int, b: int) -> Any:
        token = request.environ[ENVIRON_KEY]
        return jsonify(result=a + b, caller=token.client_id)

    @app.get("/healthz")
    def health() -> Any:
        return jsonify(ok=ENVIRON_KEY not in request.environ)

    app.wsgi_app = RequireRoleWSGI(app.wsgi_app, "invokeRole", validator=validator, **options)  # type: ignore[method-assign]
    return app


@pytest.fixture
def bed() -> Iterator[FlaskBed]:
    authority = Authority(clock=lambda: float(NOW))
    validator = make_validator(authority)
    app = make_app(validator, exempt=["/healthz"])
    yield FlaskBed(authority, TokenFactory(authority), validator, app.test_client())
    validator.close()


@ON_BAD_REQUESTS
def test_bad_request_is_refused_as_require_role_refuses_it(
    bed: FlaskBed, builder: Builder, status: int, error: str | None, fragment: str
) -> None:
    response = bed.client.get("/calc/v1/add/2/3", headers=authorization(builder(bed)))
    assert response.status_code == status
    challenge = response.headers.get("www-authenticate")
    assert challenge_ok(bed.validator.realm, challenge, error, fragment), challenge
    assert response.json == {"error": error or "unauthorized", "error_description": ANY}


class _Any:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY = _Any()


def test_good_token_reaches_the_view_with_its_verdict(bed: FlaskBed) -> None:
    response = bed.client.get("/calc/v1/add/2/3", headers={"Authorization": f"Bearer {bed.mint()}"})
    assert response.status_code == 200
    assert response.json == {"result": 5, "caller": bed.authority.client("calc-client").client_id}


@pytest.mark.parametrize(("value", "status"), [(b"Bearer a.b.c", 401), (b"Bearer \xe9", 400)])
def test_a_bytes_header_from_a_non_pep_3333_server_is_refused_not_a_500(
    bed: FlaskBed, value: bytes, status: int
) -> None:
    statuses: list[str] = []
    app = bed.client.application.wsgi_app
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/calc/v1/add/2/3",
        "HTTP_AUTHORIZATION": value,
    }
    body = b"".join(app(environ, lambda status, headers, *_: statuses.append(status)))
    assert statuses[0].startswith(f"{status} ")
    assert b"error" in body


def test_exempt_path_is_served_without_a_token(bed: FlaskBed) -> None:
    assert bed.client.get("/healthz").json == {"ok": True}


def test_outage_on_a_cold_cache_is_503_with_retry_after(bed: FlaskBed) -> None:
    bed.authority.set_fault("jwks", Fault(status=503))
    response = bed.client.get("/calc/v1/add/2/3", headers={"Authorization": f"Bearer {bed.mint()}"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert "www-authenticate" not in response.headers


def test_threads_on_a_cold_cache_fetch_the_keys_once() -> None:
    authority = Authority(clock=lambda: float(NOW))
    validator = make_validator(authority)
    app = make_app(validator)
    tokens = [authority.mint(now=NOW, claims={"uti": f"u{i}"}) for i in range(32)]

    def call(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return app.test_client().get("/calc/v1/add/1/1", headers=headers).status_code

    statuses = statuses_at_once(tokens, call)
    validator.close()
    assert statuses == [200] * len(tokens)
    assert (authority.hits["discovery"], authority.hits["jwks"]) == (1, 1)


def test_the_environment_configures_the_validator_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CCFLOW_TENANT_ID", "not a tenant!")
    monkeypatch.setenv("CCFLOW_AUDIENCE", "api://calc")
    with pytest.raises(ConfigurationError, match="CCFLOW_TENANT_ID"):
        RequireRoleWSGI(Flask(__name__).wsgi_app, "invokeRole")


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((), {}, "at least one role"),
        (("",), {}, "non-empty strings"),
        (("invokeRole",), {"match": "some"}, "match"),
        (("invokeRole",), {"exempt": ["healthz"]}, "start with '/'"),
        (("invokeRole",), {"exempt": ["/*"]}, "every path"),
        (("invokeRole",), {"validator": TokenValidator}, "instance"),
        (("invokeRole",), {"validator": object()}, "validate_sync"),
        (("invokeRole",), {"or_scopes": ["Calc Read"]}, "without spaces"),
        (("invokeRole",), {"on_refusal": "metrics"}, "on_refusal"),
    ],
)
def test_bad_arguments_are_refused_at_construction(
    args: tuple[str, ...], options: dict[str, Any], message: str
) -> None:
    options.setdefault("validator", make_validator(Authority()))
    with pytest.raises(ConfigurationError, match=message):
        RequireRoleWSGI(Flask(__name__).wsgi_app, *args, **options)


def test_or_scopes_alone_need_no_role() -> None:
    wrapped = RequireRoleWSGI(
        Flask(__name__).wsgi_app, or_scopes="Calc.Read", validator=make_validator(Authority())
    )
    assert wrapped.rule.scopes == ("Calc.Read",)
    assert repr(wrapped) == "RequireRoleWSGI('Calc.Read', match='any')"


def test_require_scope_wsgi_needs_a_scope() -> None:
    with pytest.raises(ConfigurationError, match="at least one scope"):
        RequireScopeWSGI(Flask(__name__).wsgi_app, validator=make_validator(Authority()))


def test_require_scope_wsgi_hands_every_option_to_require_role_wsgi() -> None:
    def hook(refusal: Any) -> None:
        pass

    app = Flask(__name__).wsgi_app
    options: dict[str, Any] = {
        "validator": make_validator(Authority()),
        "match": "all",
        "exempt": ["/healthz"],
        "allow_preflight": True,
        "on_refusal": hook,
    }
    scoped = RequireScopeWSGI(app, "A", "B", or_roles=["r"], **options)
    plain = RequireRoleWSGI(app, "r", or_scopes=["A", "B"], **options)

    def state(face: RequireRoleWSGI) -> dict[str, Any]:
        exempt = [path in face.exempt for path in ("/healthz", "/other")]  # Paths: no __eq__
        return {**vars(face), "exempt": exempt}

    assert state(scoped) == state(plain)
    assert scoped.rule.scopes == ("A", "B")


def test_the_options_require_scope_wsgi_forwards_are_every_other_keyword() -> None:
    parameters = inspect.signature(RequireRoleWSGI).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(RequireRoleWSGIOptions.__annotations__) == keywords - {"or_scopes"}


@pytest.mark.parametrize("keyword", ["or_scopes", "per_route", "unknown"])
def test_require_scope_wsgi_refuses_a_keyword_it_does_not_take(keyword: str) -> None:
    validator = make_validator(Authority())
    with pytest.raises(TypeError):
        RequireScopeWSGI(Flask(__name__).wsgi_app, "A", validator=validator, **{keyword: ["x"]})


# -- the refusals every face answers alike -------------------------------------------------


def guarded_app(validator: TokenValidator, kind: str, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.get("/who")
    def who() -> Any:
        caller = request.environ[PRINCIPAL_KEY]
        return jsonify(client=caller.client_id, scopes=list(caller.scopes), oid=caller.object_id)

    if kind == "role":
        guard = RequireRoleWSGI(
            app.wsgi_app, "invokeRole", or_scopes=["Calc.Read"], validator=validator, **options
        )
    else:
        guard = RequireScopeWSGI(
            app.wsgi_app, "Calc.Read", or_roles=["invokeRole"], validator=validator, **options
        )
    app.wsgi_app = guard  # type: ignore[method-assign]
    return app


@pytest.fixture
def faces() -> Iterator[tuple[TokenFactory, TokenValidator]]:
    authority = Authority(clock=lambda: float(NOW))
    validator = make_validator(authority)
    yield TokenFactory(authority), validator
    validator.close()


@pytest.mark.parametrize("kind", ["role", "scope"])
@pytest.mark.parametrize(("case", "status", "challenge"), FACE_CASES)
def test_every_face_answers_the_same(
    faces: tuple[TokenFactory, TokenValidator],
    kind: str,
    case: str,
    status: int,
    challenge: str | None,
) -> None:
    tokens, validator = faces
    raw = face_token(case, tokens)
    headers = {"Authorization": f"Bearer {raw}"} if raw else {}
    response = guarded_app(validator, kind).test_client().get("/who", headers=headers)
    assert response.status_code == status, response.text
    assert face_challenge_ok(case, response.headers.get("www-authenticate"), challenge)


def test_the_principal_is_fastapis(faces: tuple[TokenFactory, TokenValidator]) -> None:
    tokens, validator = faces
    raw = tokens.user_token(scopes=["Calc.Read"])
    response = (
        guarded_app(validator, "role")
        .test_client()
        .get("/who", headers={"Authorization": f"Bearer {raw}"})
    )
    assert response.json == {
        "client": tokens.authority.client("calc-client").client_id,
        "scopes": ["Calc.Read"],
        "oid": TEST_USER_OID,
    }


def test_refusals_are_logged_and_reported_as_the_asgi_faces_do(
    faces: tuple[TokenFactory, TokenValidator], caplog: pytest.LogCaptureFixture
) -> None:
    tokens, validator = faces
    seen: list[Refusal] = []
    client = guarded_app(validator, "role", on_refusal=seen.append).test_client()
    token = tokens.no_roles()
    with caplog.at_level(logging.INFO, logger="ccflow.api"):
        assert client.get("/who", headers={"Authorization": f"Bearer {token}"}).status_code == 403
        assert client.get("/who").status_code == 401
    assert [(r.status, r.reason, r.method, r.path) for r in seen] == [
        (403, "role_or_scope", "GET", "/who"),
        (401, "no_token", "GET", "/who"),
    ]
    assert seen[0].client_id == tokens.authority.client("calc-client").client_id
    assert seen[0].tenant_id == tokens.authority.tenant_id
    records = [r for r in caplog.records if r.name == "ccflow.api"]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert records[0].ccflow_reason == "role_or_scope"  # type: ignore[attr-defined]
    assert token.split(".")[2] not in caplog.text


def test_a_hook_that_raises_never_turns_a_refusal_into_a_500(
    faces: tuple[TokenFactory, TokenValidator],
) -> None:
    def broken(refusal: Refusal) -> None:
        raise ZeroDivisionError

    client = guarded_app(faces[1], "role", on_refusal=broken).test_client()
    assert client.get("/who").status_code == 401


def test_threads_sharing_a_small_verdict_cache_never_fail() -> None:
    # WSGI threads evicting and storing at once in the verdict cache must still each get
    # their verdict.
    authority = Authority(clock=lambda: float(NOW))
    validator = calc_validator(authority, sync=True, cache_size=4)
    tokens = [authority.mint(now=NOW, claims={"n": i}) for i in range(40)]
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def hammer(offset: int) -> None:
        start.wait()
        for i in range(400):
            try:
                validator.validate_sync(tokens[(i * 7 + offset) % len(tokens)])
            except BaseException as exc:  # any failure is the finding
                failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert failures == []


def test_authenticate_sync_reads_an_environ_and_checks_the_roles_it_is_given(
    bed: FlaskBed,
) -> None:
    good = {"HTTP_AUTHORIZATION": f"Bearer {bed.mint()}"}
    assert authenticate_sync({}, bed.validator) is None
    verdict = authenticate_sync(good, bed.validator, ["invokeRole"])
    assert verdict is not None
    assert verdict.client_id == bed.authority.client("calc-client").client_id
    with pytest.raises(InsufficientScopeError):
        authenticate_sync(good, bed.validator, ["adminRole"])
    with pytest.raises(InsufficientScopeError):
        authenticate_sync(good, bed.validator, rule=AccessRule(scopes=("Calc.Read",)))
