"""Findings of a review of the API side, each pinned by the test that showed it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from tests.support import FakeValidator

from ccflow import RequireRole, TokenValidator
from ccflow.errors import ConfigurationError
from ccflow.fastapi import BearerClaims
from ccflow.starlette import BearerAuthBackend


def test_a_generic_issuer_holding_the_tenant_template_is_refused() -> None:
    # IssuerRule fills "{tenantid}" with the token's own tid: as a generic issuer (with a
    # jwks_uri, so no discovery could object) it accepted every tenant's tokens, with no
    # allowed_tenants to limit them.
    with pytest.raises(ConfigurationError, match="multi-tenant template") as info:
        TokenValidator(
            issuer="https://login.microsoftonline.com/{tenantid}/v2.0",
            jwks_uri="https://login.microsoftonline.com/common/discovery/v2.0/keys",
            audience="api://calc",
        )
    assert info.value.setting == "issuer"


def test_from_env_names_the_variable_for_a_templated_issuer() -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenValidator.from_env(
            {
                "CCFLOW_ISSUER": "https://login.microsoftonline.com/{tenantid}/v2.0",
                "CCFLOW_AUDIENCE": "api://calc",
            }
        )
    assert info.value.setting == "CCFLOW_ISSUER"
    assert "CCFLOW_TENANT_ID" in str(info.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("jwks_uri", "https://xn--zz.example/keys"),
        ("issuer", "https://xn--zz.example/realms/a"),
        ("authority_host", "https://xn--zz.example"),
        ("jwks_uri", "https://\ufb00.example/keys"),
    ],
    ids=["jwks_uri invalid A-label", "issuer invalid A-label", "host invalid A-label", "ffi"],
)
def test_a_url_whose_host_httpx_cannot_encode_fails_at_configuration(
    setting: str, value: str
) -> None:
    # It passed configuration, then every request failed to fetch (a 503 for ever).
    options: dict[str, Any] = {"audience": "api://calc", setting: value}
    if setting != "issuer":
        options["tenant_id"] = "contoso.onmicrosoft.com"
    with pytest.raises(ConfigurationError) as info:
        TokenValidator(**options)
    assert info.value.setting == setting


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
