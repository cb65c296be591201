"""For the Starlette and FastAPI tests: a stand-in with TokenValidator's interface, and real
TokenValidators (over the local authority) that add a revocation check of their own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ccflow import TokenValidator, ValidatedToken
from ccflow.authority import Authority
from ccflow.errors import InsufficientScopeError, InvalidTokenError

REALM = "api://calc-api"


@dataclass(frozen=True)
class FakeVerdict:
    """A ValidatedToken look-alike."""

    client_id: str | None = "client-1"
    tenant_id: str | None = "tenant-1"
    roles: tuple[str, ...] = ("invokeRole",)
    claims: Mapping[str, Any] = field(default_factory=dict)

    def require_roles(self, roles: Sequence[str], *, match: str = "any") -> None:
        held = set(self.roles)
        ok = any(r in held for r in roles) if match == "any" else all(r in held for r in roles)
        if not ok:
            raise InsufficientScopeError(
                f"the token lacks the required role ({', '.join(roles)})",
                reason="role",
                required=roles,
            )


@dataclass
class FakeValidator:
    """Maps token strings to a verdict or to the error ``validate`` raises."""

    answers: dict[str, FakeVerdict | Exception] = field(default_factory=dict)
    realm: str = REALM
    closed: bool = False
    seen: list[str] = field(default_factory=list)

    async def validate(self, token: str) -> FakeVerdict:
        self.seen.append(token)
        answer = self.answers.get(token)
        if answer is None:
            raise InvalidTokenError("signature verification failed", reason="signature")
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        self.closed = True


# --- real validators ----------------------------------------------------------------------


def calc_validator(authority: Authority, kind: type[TokenValidator] = TokenValidator) -> Any:
    """A validator for the authority's calc-api, on the authority's clock."""
    api = authority.api("calc-api")
    return kind(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=authority.clock,
        leeway=0,
    )


REVOKED = "the token was revoked"


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


def revoking_validator(authority: Authority, how: str) -> Any:
    """A calc-api validator that refuses a token the second time, the check added ``how``:
    ``"subclass"``, ``"wrapper"`` (delegating through __getattr__) or ``"attribute"``
    (``validator.validate = ...`` on the instance)."""
    if how == "subclass":
        return calc_validator(authority, RevokingSubclass)
    plain = calc_validator(authority)
    if how == "wrapper":
        return RevokingWrapper(plain)
    plain.validate = _revoke_after_first_use(plain.validate, set())
    return plain


REVOKING = ["subclass", "wrapper", "attribute"]
