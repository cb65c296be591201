"""Flask behind RequireRoleWSGI: the bad-request suite, the environ verdict, threads on a cold
cache, exemptions and configuration errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from tests.support import BAD_REQUESTS, LEEWAY, NOW, Builder, Minter

from ccflow import TokenValidator
from ccflow.authority import Authority, Fault
from ccflow.errors import ConfigurationError
from ccflow.testing import TokenFactory
from ccflow.wsgi import ENVIRON_KEY, RequireRoleWSGI


@dataclass
class FlaskBed(Minter):
    validator: TokenValidator
    client: FlaskClient


def make_validator(authority: Authority, **options: Any) -> TokenValidator:
    api = authority.api("calc-api")
    return TokenValidator(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        allowed_clients=[
            authority.client("calc-client").client_id,
            authority.client("reader-client").client_id,
        ],
        sync_http_client=httpx.Client(transport=authority.transport()),
        clock=lambda: float(NOW),
        leeway=LEEWAY,
        **options,
    )


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


def headers_for(value: str | list[str] | None) -> list[tuple[str, str]]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [("Authorization", v) for v in values]


def challenge_ok(realm: str, header: str | None, error: str | None, fragment: str) -> bool:
    start = f'Bearer realm="{realm}"'
    if error is None:
        return header == start
    prefix = f'{start}, error="{error}", error_description="'
    return header is not None and header.startswith(prefix) and fragment in header[len(prefix) :]


@pytest.mark.parametrize(
    ("builder", "status", "error", "fragment"),
    [c[1:] for c in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_bad_request_is_refused_as_require_role_refuses_it(
    bed: FlaskBed, builder: Builder, status: int, error: str | None, fragment: str
) -> None:
    response = bed.client.get("/calc/v1/add/2/3", headers=headers_for(builder(bed)))
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
    start = threading.Barrier(len(tokens))
    statuses: list[int] = []

    def call(token: str) -> None:
        start.wait(timeout=10)
        response = app.test_client().get(
            "/calc/v1/add/1/1", headers={"Authorization": f"Bearer {token}"}
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=call, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
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
    ],
)
def test_bad_arguments_are_refused_at_construction(
    args: tuple[str, ...], options: dict[str, Any], message: str
) -> None:
    options.setdefault("validator", make_validator(Authority()))
    with pytest.raises(ConfigurationError, match=message):
        RequireRoleWSGI(Flask(__name__).wsgi_app, *args, **options)
