"""API side under key-source faults, with concurrent traffic through the calc API.

- JWKS/discovery outage with a warm cache: no valid request fails, however long it lasts
  (within ``max_stale``), and refetch attempts stay bounded.
- Cold start during an outage: 503 + ``Retry-After``; once the authority is back and that
  time has passed, the API serves again by itself.
- Key rotation during traffic: tokens of the old and the new key are all served, with
  exactly one extra JWKS fetch.
- A storm of random ``kid`` values: every one refused, JWKS fetches bounded by the cooldown,
  and a real rotation in the middle of it is picked up within one cooldown.

One fake clock drives the authority and the validator; requests go over ASGI in-process.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from examples.calc_api.app import create_app
from tests.support import START, validator_settings

from ccflow import TokenValidator
from ccflow.authority import Authority, Fault
from ccflow.testing import TokenFactory

BURST = 40
COOLDOWN = 30.0


@dataclass
class Bed:
    authority: Authority
    tokens: TokenFactory
    validator: TokenValidator
    http: httpx.AsyncClient
    clock: list[float]

    def advance(self, seconds: float) -> None:
        self.clock[0] += seconds

    def mint(self, **options: object) -> str:
        # A distinct token each time, so the verified-token cache never answers for it.
        return self.authority.mint(claims={"uti": secrets.token_hex(8)}, **options)  # type: ignore[arg-type]

    async def statuses(self, tokens: list[str]) -> list[int]:
        responses = await asyncio.gather(
            *(
                self.http.get("/calc/v1/add/1/2", headers={"Authorization": f"Bearer {t}"})
                for t in tokens
            )
        )
        return [r.status_code for r in responses]

    async def burst(self, **options: object) -> list[int]:
        return await self.statuses([self.mint(**options) for _ in range(BURST)])


@pytest.fixture
async def bed() -> AsyncIterator[Bed]:
    clock = [START]
    authority = Authority(clock=lambda: clock[0])
    validator = TokenValidator(
        **validator_settings(authority), clock=lambda: clock[0], jwks_cooldown=COOLDOWN
    )
    transport = httpx.ASGITransport(app=create_app(validator))
    async with httpx.AsyncClient(transport=transport, base_url="http://calc") as http:
        yield Bed(authority, TokenFactory(authority), validator, http, clock)
    await validator.aclose()


OUTAGES = [
    Fault(status=503, retry_after="10"),
    Fault(drop=True),
    Fault(timeout=True),
    Fault(status=200, body=b"<html>maintenance</html>"),
    Fault(status=200, body=b'{"keys": []}'),
]
OUTAGE_IDS = ["503", "drop", "timeout", "html", "no-keys"]


@pytest.mark.anyio
@pytest.mark.parametrize("fault", OUTAGES, ids=OUTAGE_IDS)
async def test_outage_with_a_warm_cache_fails_no_valid_request(bed: Bed, fault: Fault) -> None:
    assert await bed.burst() == [200] * BURST
    bed.authority.set_fault("jwks", fault)
    bed.authority.set_fault("discovery", fault)
    rounds = 12
    for _ in range(rounds):
        bed.advance(600)  # 2 hours in all: past the 1 h TTL, refreshes are attempted and fail
        assert await bed.burst() == [200] * BURST
    # Attempts are single flight and backed off: at most one per round here.
    assert 2 <= bed.authority.hits["jwks"] <= 1 + rounds
    bed.authority.clear_fault()
    bed.advance(600)
    before = bed.authority.hits["jwks"]
    assert await bed.burst() == [200] * BURST
    assert bed.authority.hits["jwks"] == before + 1  # back to fresh keys, fetched once


@pytest.mark.anyio
@pytest.mark.parametrize("endpoint", ["jwks", "discovery"])
async def test_cold_start_during_an_outage_is_503_then_recovers_by_itself(
    bed: Bed, endpoint: str
) -> None:
    bed.authority.set_fault(endpoint, Fault(status=503, retry_after="20"))
    responses = await asyncio.gather(
        *(
            bed.http.get("/calc/v1/add/1/2", headers={"Authorization": f"Bearer {bed.mint()}"})
            for _ in range(BURST)
        )
    )
    assert [r.status_code for r in responses] == [503] * BURST
    assert {r.headers["retry-after"] for r in responses} == {"20"}
    assert all("www-authenticate" not in r.headers for r in responses)
    assert bed.authority.hits[endpoint] == 1  # one attempt for the whole burst
    # The authority comes back; before Retry-After has passed nobody hammers it.
    bed.authority.clear_fault()
    bed.advance(10)
    assert await bed.burst() == [503] * BURST
    assert bed.authority.hits[endpoint] == 1
    bed.advance(10)
    assert await bed.burst() == [200] * BURST
    other = "discovery" if endpoint == "jwks" else "jwks"
    assert (bed.authority.hits[endpoint], bed.authority.hits[other]) == (2, 1)


@pytest.mark.anyio
async def test_key_rotation_during_traffic_costs_one_refresh_and_no_failure(bed: Bed) -> None:
    assert await bed.burst() == [200] * BURST
    old = bed.authority.signing_kid
    bed.advance(COOLDOWN + 1)
    new = bed.authority.rotate_keys()
    mixed = [bed.mint(kid=old if i % 2 else new) for i in range(4 * BURST)]
    assert await bed.statuses(mixed) == [200] * (4 * BURST)
    assert bed.authority.hits["jwks"] == 2
    bed.authority.retire_key(old)
    bed.advance(1)
    assert await bed.burst() == [200] * BURST
    assert bed.authority.hits["jwks"] == 2


@pytest.mark.anyio
async def test_unknown_kid_storm_is_bounded_and_a_real_rotation_gets_through(bed: Bed) -> None:
    assert await bed.burst() == [200] * BURST
    seconds = 300
    rotate_at = 100
    new_kid: str | None = None
    first_new_ok: int | None = None
    for second in range(seconds):
        bed.advance(1)
        if second == rotate_at:
            new_kid = bed.authority.rotate_keys()
        storm = [bed.mint(kid=None, headers={"kid": secrets.token_urlsafe(12)}) for _ in range(5)]
        good = [bed.mint(kid=bed.authority.kids[0])]
        statuses = await bed.statuses(storm + good)
        assert statuses[:5] == [401] * 5
        assert statuses[5] == 200  # the old key keeps working throughout
        if (
            new_kid is not None
            and first_new_ok is None
            and await bed.statuses([bed.mint()]) == [200]
        ):
            first_new_ok = second
    # At most one fetch per cooldown, however many made-up kids arrive (5 a second here).
    assert bed.authority.hits["jwks"] <= 1 + seconds / COOLDOWN
    assert first_new_ok is not None
    assert first_new_ok - rotate_at <= COOLDOWN
