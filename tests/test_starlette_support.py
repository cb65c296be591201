"""For the Starlette and FastAPI tests: a stand-in with TokenValidator's interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
