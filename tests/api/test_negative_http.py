"""Bad tokens and bad conditions over HTTP: the calc API on the local authority.

Each row is one way a request can be wrong; each asserts the status and the exact
``WWW-Authenticate`` challenge (error code, and which check the description names). The
validator and the authority share a fixed clock, so the leeway edges are exact.
"""

# The case table reads best one row per line.
# ruff: noqa: E501

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from examples.calc_api.app import create_app
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.support import BAD_REQUESTS, LEEWAY, NOW, ON_BAD_REQUESTS, Builder, Minter, authorization

from ccflow import TokenValidator
from ccflow.authority import Authority, Fault
from ccflow.testing import TokenFactory


@dataclass
class Bed(Minter):
    """The authority, its token factory, the validator and the calc API on them."""

    validator: TokenValidator
    client: TestClient
    clock: list[float]

    @property
    def realm(self) -> str:
        return self.validator.realm


def make_bed(**validator_options: Any) -> Bed:
    clock = [float(NOW)]
    authority = Authority(clock=lambda: clock[0])
    api = authority.api("calc-api")
    allowed = [authority.client("calc-client").client_id]
    allowed.append(authority.client("reader-client").client_id)
    validator = TokenValidator(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        allowed_clients=allowed,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=lambda: clock[0],
        leeway=LEEWAY,
        **validator_options,
    )
    client = TestClient(create_app(validator))
    return Bed(authority, TokenFactory(authority), validator, client, clock)


@pytest.fixture
def bed() -> Iterator[Bed]:
    bed = make_bed()
    with bed.client:
        yield bed


def challenge_ok(bed: Bed, header: str | None, error: str | None, fragment: str) -> bool:
    realm = f'Bearer realm="{bed.realm}"'
    if error is None:
        return header == realm
    assert header is not None
    prefix = f'{realm}, error="{error}", error_description="'
    return header.startswith(prefix) and fragment in header[len(prefix) :]


CASES = BAD_REQUESTS


@ON_BAD_REQUESTS
def test_bad_request_is_refused(bed: Bed, builder: Builder, status: int, error: str | None, fragment: str) -> None:  # fmt: skip
    response = bed.client.get("/calc/v1/add/2/3", headers=authorization(builder(bed)))
    assert response.status_code == status
    assert challenge_ok(bed, response.headers.get("www-authenticate"), error, fragment), (
        response.headers.get("www-authenticate")
    )
    assert response.json()["error"] == (error or "unauthorized")


def test_case_ids_are_distinct_and_many() -> None:
    ids = [c[0] for c in CASES]
    assert len(set(ids)) == len(ids) >= 40


# --- good tokens at the edges -------------------------------------------------------------

GOOD: list[tuple[str, Callable[[Bed], str]]] = [
    ("plain", lambda bed: bed.mint()),
    ("exp-inside-leeway", lambda bed: bed.mint(claims={"exp": NOW - LEEWAY + 1})),
    ("nbf-inside-leeway", lambda bed: bed.mint(claims={"nbf": NOW + LEEWAY})),
    ("aud-app-id-uri", lambda bed: bed.mint(claims={"aud": bed.authority.api("calc-api").identifier_uri})),
    ("lowercase-scheme", lambda bed: bed.mint()),
]  # fmt: skip


@pytest.mark.parametrize("make", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_token_is_served(bed: Bed, make: Callable[[Bed], str]) -> None:
    response = bed.client.get("/calc/v1/add/2/3", headers={"Authorization": f"bearer {make(bed)}"})
    assert response.status_code == 200
    assert response.json() == {"result": 5, "caller": bed.authority.client("calc-client").client_id}


# --- keys: rotation and outages -----------------------------------------------------------


def get(bed: Bed, token: str) -> httpx.Response:
    return bed.client.get("/calc/v1/add/2/3", headers={"Authorization": f"Bearer {token}"})


def test_rotated_key_is_picked_up_with_one_refetch(bed: Bed) -> None:
    assert get(bed, bed.mint()).status_code == 200
    bed.authority.rotate_keys()
    bed.clock[0] += 31  # past the unknown-kid refetch cooldown (30 s)
    assert get(bed, bed.mint()).status_code == 200
    assert bed.authority.hits["jwks"] == 2


def test_unknown_kid_inside_the_cooldown_is_refused_without_a_refetch(bed: Bed) -> None:
    assert get(bed, bed.mint()).status_code == 200
    for _ in range(5):
        response = get(bed, bed.tokens.unknown_kid())
        assert response.status_code == 401
    assert bed.authority.hits["jwks"] == 1


def test_token_signed_by_retired_key_is_refused_on_a_cold_cache(bed: Bed) -> None:
    old = bed.authority.signing_kid
    token = bed.mint()
    bed.authority.rotate_keys()
    bed.authority.retire_key(old)
    response = get(bed, token)
    assert response.status_code == 401
    assert challenge_ok(bed, response.headers["www-authenticate"], "invalid_token", "kid")


@pytest.mark.parametrize("endpoint", ["jwks", "discovery"])
def test_outage_on_a_cold_cache_is_503_with_retry_after(bed: Bed, endpoint: str) -> None:
    bed.authority.set_fault(endpoint, Fault(status=503))
    response = get(bed, bed.mint())
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("fault", [Fault(status=503), Fault(drop=True), Fault(body=b"<html>")])
def test_outage_on_a_warm_cache_serves_known_keys(bed: Bed, fault: Fault) -> None:
    assert get(bed, bed.mint()).status_code == 200
    bed.authority.set_fault("jwks", fault)
    bed.authority.set_fault("discovery", fault)
    assert get(bed, bed.mint(claims={"uti": "another"})).status_code == 200


@pytest.mark.anyio
async def test_hundred_concurrent_requests_on_a_cold_cache_fetch_keys_once() -> None:
    bed = make_bed()
    transport = httpx.ASGITransport(app=create_app(bed.validator))
    tokens = [bed.mint(claims={"uti": f"u{i}"}) for i in range(100)]
    async with httpx.AsyncClient(transport=transport, base_url="http://calc") as http:
        responses = await asyncio.gather(
            *(
                http.get("/calc/v1/add/1/1", headers={"Authorization": f"Bearer {t}"})
                for t in tokens
            )
        )
    assert [r.status_code for r in responses] == [200] * 100
    assert (bed.authority.hits["discovery"], bed.authority.hits["jwks"]) == (1, 1)


# --- WebSocket ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda bed: None,
        lambda bed: bed.tokens.expired(),
        lambda bed: bed.mint(client="reader-client"),
    ],
    ids=["no-token", "expired", "no-role"],
)
def test_websocket_with_bad_token_is_closed_1008_before_accept(bed: Bed, make: Callable[[Bed], str | None]) -> None:  # fmt: skip
    token = make(bed)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with pytest.raises(WebSocketDisconnect) as info, bed.client.websocket_connect("/calc/v1/ws", headers=headers):  # fmt: skip
        pass  # pragma: no cover - the handshake is refused
    assert info.value.code == 1008
