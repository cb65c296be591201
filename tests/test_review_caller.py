"""Caller side and CLI: behaviours found in review, each pinned by the test that found it."""

from __future__ import annotations

import asyncio

import pytest
from tests._caller import FakeClock, async_client

from ccflow.authority import Authority


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authority(clock: FakeClock) -> Authority:
    return Authority(clock=clock)


@pytest.fixture
def scope(authority: Authority) -> str:
    return authority.api("calc-api").default_scope


@pytest.mark.anyio
async def test_a_fetch_cancelled_before_it_started_does_not_poison_the_scopes(
    authority: Authority, clock: FakeClock, scope: str
) -> None:
    # A shutdown handler cancelling every task can cancel the fetch task before its first
    # step: its cleanup never ran, and every later get_token() for these scopes awaited the
    # cancelled task again and raised CancelledError, forever.
    tc, _ = async_client(authority, clock)
    async with tc:
        waiter = asyncio.ensure_future(tc.get_token(scope))
        await asyncio.sleep(0)  # the waiter registered the fetch task, which has not run yet
        (fetch,) = tc._flights.values()
        fetch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        token = await tc.get_token(scope)
        assert token.scopes == (scope,)
    assert authority.hits["token"] == 1
