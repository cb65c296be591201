"""API-side fixtures: a TokenValidator factory on the local authority, and validators that
add a revocation check of their own (a subclass, a wrapper, an instance attribute)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.support import REVOKED

from ccflow import TokenValidator, ValidatedToken
from ccflow.authority import Authority
from ccflow.errors import InvalidTokenError

ValidatorFactory = Callable[..., Any]


@pytest.fixture
def validator_for(authority: Authority, clock: Any) -> ValidatorFactory:
    """Makes a validator for the calc-api of the local authority (or of the authority given
    first), on the test's clock; keyword arguments override the settings, ``kind=`` picks a
    TokenValidator subclass."""

    def make(
        on: Authority | None = None, *, kind: type[TokenValidator] = TokenValidator, **options: Any
    ) -> Any:
        source = on or authority
        api = source.api("calc-api")
        settings: dict[str, Any] = {
            "tenant_id": source.tenant_id,
            "authority_host": source.host,
            "audience": [api.client_id, api.identifier_uri],
            "http_client": httpx.AsyncClient(transport=source.transport()),
            "clock": clock,
        }
        settings.update(options)
        return kind(**settings)

    return make


def _revoke_after_first_use(validate: Callable[[str], Any], used: set[str]) -> Callable[[str], Any]:
    """``validate``, then a refusal for a token it accepted before (a revocation list)."""

    async def revoking(token: str) -> ValidatedToken:
        verdict: ValidatedToken = await validate(token)
        if token in used:
            raise InvalidTokenError(REVOKED, reason="revoked")
        used.add(token)
        return verdict

    return revoking


class RevokingSubclass(TokenValidator):
    """A subclass whose validate() refuses every token the second time."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.used: set[str] = set()

    async def validate(self, token: str) -> ValidatedToken:
        return await _revoke_after_first_use(super().validate, self.used)(token)  # type: ignore[no-any-return]


class RevokingWrapper:
    """A wrapper that adds the same check and delegates everything else through __getattr__."""

    def __init__(self, inner: TokenValidator) -> None:
        self.inner = inner
        self.used: set[str] = set()

    async def validate(self, token: str) -> ValidatedToken:
        return await _revoke_after_first_use(self.inner.validate, self.used)(token)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def revoking_validator(validator_for: ValidatorFactory) -> Callable[[str], Any]:
    """Makes a calc-api validator that refuses a token the second time, the check added
    ``how``: ``"subclass"``, ``"wrapper"`` (delegating through __getattr__) or
    ``"attribute"`` (``validator.validate = ...`` on the instance); see ``support.REVOKING``."""

    def make(how: str, on: Authority | None = None) -> Any:
        if how == "subclass":
            return validator_for(on, kind=RevokingSubclass, leeway=0)
        plain = validator_for(on, leeway=0)
        if how == "wrapper":
            return RevokingWrapper(plain)
        plain.validate = _revoke_after_first_use(plain.validate, set())
        return plain

    return make
