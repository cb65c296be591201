"""Caller-side fixtures: recorded backoff sleeps and token clients on the local authority."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ccflow import AsyncTokenClient, TokenClient
from ccflow.authority import Authority


class Sleeps(list[float]):
    """Records backoff waits instead of sleeping (sync and async)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


ClientFactory = Callable[..., tuple[TokenClient, "Sleeps"]]
AsyncClientFactory = Callable[..., tuple[AsyncTokenClient, "Sleeps"]]


@pytest.fixture
def sleeps() -> Sleeps:
    """Records the waits of code given ``sleep=sleeps`` (or ``sleep=sleeps.asleep``)."""
    return Sleeps()


@pytest.fixture
def sync_client(authority: Authority, clock: Any) -> ClientFactory:
    """Makes a TokenClient for a client of the local authority (``calc-client`` unless
    ``client=``; another authority as first argument), on the test's clock, and the list of
    the sleeps it asked for."""

    def make(
        on: Authority | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        client: str = "calc-client",
        **options: Any,
    ) -> tuple[TokenClient, Sleeps]:
        authority_ = on or authority
        app = authority_.client(client)
        options.setdefault("client_secret", app.secret)
        sleeps = Sleeps()
        tc = TokenClient(
            client_id=app.client_id,
            tenant_id=authority_.tenant_id,
            authority_host=authority_.host,
            http_client=httpx.Client(transport=transport or authority_.transport()),
            clock=clock,
            sleep=sleeps,
            **options,
        )
        return tc, sleeps

    return make


@pytest.fixture
def async_client(authority: Authority, clock: Any) -> AsyncClientFactory:
    """The AsyncTokenClient twin of ``sync_client``."""

    def make(
        on: Authority | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        client: str = "calc-client",
        **options: Any,
    ) -> tuple[AsyncTokenClient, Sleeps]:
        authority_ = on or authority
        app = authority_.client(client)
        options.setdefault("client_secret", app.secret)
        sleeps = Sleeps()
        tc = AsyncTokenClient(
            client_id=app.client_id,
            tenant_id=authority_.tenant_id,
            authority_host=authority_.host,
            http_client=httpx.AsyncClient(transport=transport or authority_.transport()),
            clock=clock,
            sleep=sleeps.asleep,
            **options,
        )
        return tc, sleeps

    return make
