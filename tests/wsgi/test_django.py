"""Django with BearerTokenMiddleware and @require_role: the bad-request suite, request.ccflow,
settings, and the decorator's own refusals. Django is configured in a fixture, no project."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import django
import httpx
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from tests.support import BAD_REQUESTS, LEEWAY, NOW, Builder, Minter

from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.django import require_role
from ccflow.errors import ConfigurationError
from ccflow.testing import TokenFactory

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


urlpatterns = [
    path("calc/v1/add/<int:a>/<int:b>", add),
    path("whoami", whoami),
    path("admin", admin),
]


def make_validator(authority: Authority) -> TokenValidator:
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
    )


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


@pytest.mark.parametrize(
    ("builder", "status", "error", "fragment"),
    [c[1:] for c in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
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
    start = threading.Barrier(len(tokens))
    statuses: list[int] = []

    def call(token: str) -> None:
        environ = RequestFactory()._base_environ(  # the environ a server would pass
            PATH_INFO="/calc/v1/add/1/1", REQUEST_METHOD="GET", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        start.wait(timeout=10)
        response = handler(environ, lambda status, headers: None)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=call, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * len(tokens)
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


def test_the_decorator_needs_roles() -> None:
    with pytest.raises(ConfigurationError, match="at least one role"):
        require_role()
    with pytest.raises(ConfigurationError, match="takes roles"):
        require_role(add)  # type: ignore[arg-type]
