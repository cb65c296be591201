"""AccessRule: roles, else delegated scopes; any-of or all-of; what a refusal names."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ccflow._core.claims import AccessRule
from ccflow.errors import ConfigurationError, InsufficientScopeError


@dataclass(frozen=True)
class Held:
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()


@pytest.mark.parametrize(
    ("rule", "held", "ok"),
    [
        (AccessRule(), Held(), True),
        (AccessRule(roles=("r",)), Held(roles=("r",)), True),
        (AccessRule(roles=("r",)), Held(scopes=("r",)), False),
        (AccessRule(scopes=("s",)), Held(roles=("s",)), False),
        (AccessRule(scopes=("s",)), Held(scopes=("s", "t")), True),
        (AccessRule(roles=("r",), scopes=("s",)), Held(scopes=("s",)), True),
        (AccessRule(roles=("r",), scopes=("s",)), Held(roles=("r",)), True),
        (AccessRule(roles=("a", "b"), match="all"), Held(roles=("a",)), False),
        (AccessRule(scopes=("a", "b"), match="all"), Held(scopes=("b", "a")), True),
        (AccessRule(roles=("R",)), Held(roles=("r",)), False),
    ],
)
def test_a_rule_passes_when_roles_or_scopes_are_held(
    rule: AccessRule, held: Held, ok: bool
) -> None:
    if ok:
        rule.check(held)
    else:
        with pytest.raises(InsufficientScopeError):
            rule.check(held)


@pytest.mark.parametrize(
    ("rule", "message", "reason"),
    [
        (AccessRule(roles=("r",)), "the caller lacks the role(s): r", "role"),
        (AccessRule(roles=("a", "b")), "the caller lacks one of the roles: a, b", "role"),
        (AccessRule(scopes=("s",)), "the caller lacks the scope(s): s", "scope"),
        (
            AccessRule(roles=("r",), scopes=("s",)),
            "the caller holds neither the role(s): r nor the scope(s): s",
            "role_or_scope",
        ),
    ],
)
def test_a_refusal_names_what_would_do(rule: AccessRule, message: str, reason: str) -> None:
    with pytest.raises(InsufficientScopeError) as caught:
        rule.check(Held())
    assert str(caught.value) == message
    assert caught.value.reason == reason
    assert caught.value.required == rule.roles + rule.scopes


@pytest.mark.parametrize(
    "options",
    [{"roles": ("",)}, {"scopes": "s"}, {"roles": ["r"]}, {"match": "some"}],
)
def test_a_bad_rule_fails_at_construction(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        AccessRule(**options)  # type: ignore[arg-type]
