"""The verified-token cache inside TokenValidator.validate(): a repeated token is not verified
again; an entry never outlives its token's exp or the key that verified it; refusals are never
cached; the cache is bounded and keyed by a SHA-256 digest, never the token."""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any

import pytest

from ccflow.authority import Authority
from ccflow.errors import InvalidTokenError

if TYPE_CHECKING:
    from tests.api.conftest import ValidatorFactory
    from tests.conftest import FakeClock


pytestmark = pytest.mark.anyio


@pytest.fixture
def validator_for(validator_for: ValidatorFactory) -> ValidatorFactory:
    """The shared factory with no leeway and no JWKS cooldown."""
    return functools.partial(validator_for, leeway=0, jwks_cooldown=0)


async def test_a_repeated_token_is_verified_once(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
) -> None:
    validator = validator_for()
    token = authority.mint()
    first = await validator.validate(token)
    assert await validator.validate(token) is first
    assert validator.cache_info()[:2] == (1, 1)  # hits, misses


async def test_with_the_cache_disabled_every_validation_verifies(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
) -> None:
    validator = validator_for(cache_size=0)
    token = authority.mint()
    for _ in range(3):
        await validator.validate(token)
    assert validator.cache_info() == (0, 3, 0, 0)


async def test_a_cached_token_is_refused_once_past_its_exp(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for()
    token = authority.mint(lifetime=100)
    await validator.validate(token)
    clock.advance(100)
    with pytest.raises(InvalidTokenError) as caught:
        await validator.validate(token)
    assert caught.value.reason == "expired"


async def test_a_refused_token_is_never_cached(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
) -> None:
    validator = validator_for()
    token = authority.mint(claims={"aud": "api://someone-else"})
    for _ in range(2):
        with pytest.raises(InvalidTokenError, match="another audience"):
            await validator.validate(token)
    info = validator.cache_info()
    assert (info.hits, info.misses, info.currsize) == (0, 2, 0)


async def test_a_tampered_copy_of_a_cached_token_is_verified_and_refused(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for()
    token = authority.mint()
    await validator.validate(token)
    head, body, signature = token.split(".")
    tampered = (
        f"{head}.{body}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    )
    with pytest.raises(InvalidTokenError):
        await validator.validate(tampered)


async def test_a_cached_token_is_verified_again_once_its_key_leaves_the_jwks(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for()
    old_kid = authority.signing_kid
    token = authority.mint()
    await validator.validate(token)
    authority.rotate_keys()
    authority.retire_key(old_kid)
    # A token signed with the new key makes the validator fetch the keys again.
    await validator.validate(authority.mint())
    with pytest.raises(InvalidTokenError) as caught:
        await validator.validate(token)
    assert caught.value.reason == "key"


async def test_a_cached_token_is_served_while_its_key_is_still_published(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
) -> None:
    validator = validator_for()
    token = authority.mint()
    await validator.validate(token)
    authority.rotate_keys()  # the old key stays published
    await validator.validate(authority.mint())
    await validator.validate(token)
    assert validator.cache_info()[:2] == (1, 2)


async def test_the_cache_is_bounded(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
) -> None:
    validator = validator_for(cache_size=3)
    tokens = [authority.mint(claims={"uti": f"t{i}"}) for i in range(10)]
    for token in tokens:
        await validator.validate(token)
    assert validator.cache_info() == (0, 10, 3, 3)
    for token in tokens[-3:]:
        await validator.validate(token)
    assert validator.cache_info() == (3, 10, 3, 3)
    await validator.validate(tokens[0])
    assert validator.cache_info() == (3, 11, 3, 3)


async def test_the_least_recently_used_verdict_is_the_one_evicted(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for(cache_size=2)
    a, b, c = (authority.mint(claims={"uti": name}) for name in "abc")
    for token in (a, b, a, c):  # a used again after b: c's arrival evicts b
        await validator.validate(token)
    assert validator.cache_info()[:2] == (1, 3)
    await validator.validate(a)
    assert validator.cache_info()[:2] == (2, 3)
    await validator.validate(b)
    assert validator.cache_info()[:2] == (2, 4)


async def test_the_cache_is_keyed_by_the_sha256_digest_not_the_token(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for()
    token = authority.mint()
    references = sys.getrefcount(token)
    await validator.validate(token)
    assert validator.cache_info().currsize == 1
    assert sys.getrefcount(token) == references  # nothing kept holds the token
    assert (await validator.validate("".join(token))).client_id  # an equal copy: a hit
    assert validator.cache_info().hits == 1


async def test_a_token_accepted_only_within_the_leeway_does_not_evict_a_live_entry(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
) -> None:
    validator = validator_for(leeway=60, cache_size=1)
    live = authority.mint(lifetime=3600)
    await validator.validate(live)
    late = authority.mint(lifetime=100)
    clock.advance(130)  # past its exp, inside the leeway: valid, but nothing to cache
    assert (await validator.validate(late)).client_id
    before = validator.cache_info()
    await validator.validate(live)
    assert validator.cache_info().hits == before.hits + 1


async def test_one_requests_change_to_the_claims_is_not_seen_by_the_next(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for()
    token = authority.mint()
    verdict = await validator.validate(token)
    with pytest.raises((TypeError, AttributeError)):
        verdict.claims["roles"].append("admin")
    assert "admin" not in (await validator.validate(token)).claims["roles"]


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
async def test_require_typ_accepts_the_type_in_any_spelling(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock, typ: str
) -> None:
    validator = validator_for(require_typ="at+jwt")
    token = authority.mint(headers={"typ": typ})
    assert (await validator.validate(token)).client_id


@pytest.mark.parametrize("header", [{"typ": "JWT"}, {"typ": 1}, {"typ": None}])
async def test_require_typ_refuses_another_type(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock, header: dict[str, Any]
) -> None:
    validator = validator_for(require_typ="at+jwt")
    token = authority.mint(headers=header)
    with pytest.raises(InvalidTokenError, match="typ header is not at\\+jwt") as caught:
        await validator.validate(token)
    assert caught.value.reason == "type"
