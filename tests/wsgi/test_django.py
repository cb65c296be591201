"""Django with BearerTokenMiddleware, @require_role and @require_scope: the bad-request suite,
the refusals every face answers alike, request.ccflow (a Principal), the refusal log and hook,
settings, and the decorators' own refusals. Django is configured here, no project."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import django
import httpx
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from tests.support import (
    FACE_CASES,
    NOW,
    ON_BAD_REQUESTS,
    Builder,
    Minter,
    calc_validator,
    face_challenge_ok,
    face_token,
    statuses_at_once,
)

from ccflow import TokenValidator
from ccflow._bearer import Principal
from ccflow.authority import Authority
from ccflow.django import require_role, require_scope
from ccflow.errors import ConfigurationError
from ccflow.starlette import Refusal
from ccflow.testing import TEST_USER_OID, TokenFactory

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["ccflow.django.BearerTokenMiddleware"],
        INSTALLED_APPS=[],
        SECRET_KEY="not-a-secret",
        USE_TZ=True,
    )
    django.setup()


@require_role("invokeRole")
def add(request: HttpRequest, a: int, b: int) -> HttpResponse:
    return JsonResponse({"result": a + b, "caller": request.ccflow.client_id})  # type: ignore[attr-defined]


def whoami(request: HttpRequest) -> HttpResponse:
    verdict = request.ccflow  # type: ignore[attr-defined]
    return JsonResponse({"caller": None if verdict is None else verdict.client_id})


@require_role("invokeRole", "adminRole", match="all")
def admin(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


@require_role("invokeRole", or_scopes=["Calc.Read"])
def who_by_role(request: HttpRequest) -> HttpResponse:
    return _who(request)


@require_scope("Calc.Read", or_roles=["invokeRole"])
def who_by_scope(request: HttpRequest) -> HttpResponse:
    return _who(request)


def _who(request: HttpRequest) -> HttpResponse:
    caller: Principal = request.ccflow  # type: ignore[attr-defined]
    assert isinstance(caller, Principal)
    return JsonResponse(
        {"client": caller.client_id, "scopes": list(caller.scopes), "oid": caller.object_id}
    )


urlpatterns = [
    path("calc/v1/add/<int:a>/<int:b>", add),
    path("whoami", whoami),
    path("admin", admin),
    path("who/role", who_by_role),
    path("who/scope", who_by_scope),
]


def make_validator(authority: Authority) -> TokenValidator:
    validator: TokenValidator = calc_validator(authority, sync=True)
    return validator


@pytest.fixture
def bed() -> Iterator[Minter]:
    authority = Authority(clock=lambda: float(NOW))
    validator = make_validator(authority)
    with override_settings(CCFLOW_VALIDATOR=validator):
        yield Minter(authority, TokenFactory(authority))
    validator.close()


def get(url: str, value: str | list[str] | None = None) -> Any:
    if isinstance(value, list):  # Django's test client sends one header per name: joined
        value = ", ".join(value)
    headers = {} if value is None else {"Authorization": value}
    return Client().get(url, headers=headers)


@ON_BAD_REQUESTS
def test_bad_request_is_refused_as_require_role_refuses_it(
    bed: Minter, builder: Builder, status: int, error: str | None, fragment: str
) -> None:
    response = get("/calc/v1/add/2/3", builder(bed))
    assert response.status_code == status
    realm = f'Bearer realm="{bed.authority.api("calc-api").client_id}"'
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith(realm)
    if error is not None:
        assert f'error="{error}"' in challenge
        assert fragment in challenge
    assert response.json()["error"] == (error or "unauthorized")


def test_good_token_reaches_the_view_with_request_ccflow(bed: Minter) -> None:
    response = get("/calc/v1/add/2/3", f"Bearer {bed.mint()}")
    assert response.status_code == 200
    assert response.json() == {"result": 5, "caller": bed.authority.client("calc-client").client_id}


def test_a_view_without_the_decorator_sees_none_without_a_token(bed: Minter) -> None:
    assert get("/whoami").json() == {"caller": None}


def test_match_all_needs_every_role(bed: Minter) -> None:
    response = get("/admin", f"Bearer {bed.mint()}")
    assert response.status_code == 403
    assert 'scope="invokeRole adminRole"' in response.headers["www-authenticate"]


def test_threads_on_a_cold_cache_fetch_the_keys_once(bed: Minter) -> None:
    tokens = [bed.mint(claims={"uti": f"u{i}"}) for i in range(16)]
    # One middleware instance (one validator) for every thread, as one Django process has.
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.client import RequestFactory

    handler = WSGIHandler()
    factory = RequestFactory()
    # The environ a server would pass, made before the threads start together.
    environs = {
        token: factory._base_environ(
            PATH_INFO="/calc/v1/add/1/1", REQUEST_METHOD="GET", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        for token in tokens
    }

    def call(token: str) -> int:
        return int(handler(environs[token], lambda status, headers: None).status_code)

    assert statuses_at_once(tokens, call) == [200] * len(tokens)
    assert (bed.authority.hits["discovery"], bed.authority.hits["jwks"]) == (1, 1)


def test_settings_dict_builds_the_validator() -> None:
    authority = Authority(clock=lambda: float(NOW))
    api = authority.api("calc-api")
    options = {
        "tenant_id": authority.tenant_id,
        "authority_host": authority.host,
        "audience": [api.client_id],
        "sync_http_client": httpx.Client(transport=authority.transport()),
        "clock": lambda: float(NOW),
    }
    with override_settings(CCFLOW_VALIDATOR=options):
        response = get("/calc/v1/add/1/2", f"Bearer {authority.mint(now=NOW)}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("value", "message"),
    [({"tenant": "x"}, "CCFLOW_VALIDATOR"), (object(), "validate_sync")],
)
def test_bad_settings_are_a_configuration_error(value: object, message: str) -> None:
    with (
        override_settings(CCFLOW_VALIDATOR=value),
        pytest.raises(ConfigurationError, match=message),
    ):
        get("/whoami")


def test_the_decorator_without_the_middleware_is_a_configuration_error() -> None:
    with override_settings(MIDDLEWARE=[]), pytest.raises(ConfigurationError, match="MIDDLEWARE"):
        get("/calc/v1/add/1/2")


def test_the_decorators_need_roles_or_scopes() -> None:
    with pytest.raises(ConfigurationError, match="at least one role"):
        require_role()
    with pytest.raises(ConfigurationError, match="takes roles"):
        require_role(add)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="at least one scope"):
        require_scope(or_roles=["invokeRole"])
    with pytest.raises(ConfigurationError, match="takes scopes"):
        require_scope(add)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="without spaces"):
        require_scope("Calc Read")
    assert require_role(or_scopes=["Calc.Read"]) is not None  # a scope alone will do


# -- the refusals every face answers alike -------------------------------------------------


@pytest.mark.parametrize("view", ["role", "scope"])
@pytest.mark.parametrize(("case", "status", "challenge"), FACE_CASES)
def test_every_face_answers_the_same(
    bed: Minter, view: str, case: str, status: int, challenge: str | None
) -> None:
    raw = face_token(case, bed.tokens)
    response = get(f"/who/{view}", f"Bearer {raw}" if raw else None)
    assert response.status_code == status, response.content
    assert face_challenge_ok(case, response.headers.get("www-authenticate"), challenge)


def test_request_ccflow_is_the_principal_fastapi_returns(bed: Minter) -> None:
    response = get("/who/scope", f"Bearer {bed.tokens.user_token(scopes=['Calc.Read'])}")
    assert response.json() == {
        "client": bed.authority.client("calc-client").client_id,
        "scopes": ["Calc.Read"],
        "oid": TEST_USER_OID,
    }


SEEN: list[Refusal] = []


def record_refusal(refusal: Refusal) -> None:
    """CCFLOW_ON_REFUSAL by dotted path."""
    SEEN.append(refusal)


@pytest.mark.parametrize("hook", [f"{__name__}.record_refusal", record_refusal])
def test_refusals_are_logged_and_reported_as_the_asgi_faces_do(
    bed: Minter, hook: object, caplog: pytest.LogCaptureFixture
) -> None:
    SEEN.clear()
    token = bed.tokens.no_roles()
    with (
        override_settings(CCFLOW_ON_REFUSAL=hook),
        caplog.at_level(logging.INFO, logger="ccflow.api"),
    ):
        assert get("/who/role", f"Bearer {token}").status_code == 403  # the decorator
        assert get("/who/role").status_code == 401
        assert get("/whoami", f"Bearer {bed.tokens.tampered()}").status_code == 401  # middleware
    assert [(r.status, r.reason, r.method, r.path) for r in SEEN] == [
        (403, "role_or_scope", "GET", "/who/role"),
        (401, "no_token", "GET", "/who/role"),
        (401, "signature", "GET", "/whoami"),
    ]
    assert SEEN[0].client_id == bed.authority.client("calc-client").client_id
    assert SEEN[2].client_id is None
    records = [r for r in caplog.records if r.name == "ccflow.api"]
    assert [r.levelno for r in records] == [logging.INFO] * 3
    assert token.split(".")[2] not in caplog.text


@pytest.mark.parametrize(
    ("value", "message"), [("nowhere.hook", "cannot import"), (42, "on_refusal")]
)
def test_a_bad_refusal_hook_setting_is_a_configuration_error(
    bed: Minter, value: object, message: str
) -> None:
    with (
        override_settings(CCFLOW_ON_REFUSAL=value),
        pytest.raises(ConfigurationError, match=message),
    ):
        get("/whoami")
