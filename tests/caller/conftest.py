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


def _settings(
    authority: Authority, client: str, clock: Any, options: dict[str, Any]
) -> dict[str, Any]:
    """The constructor keywords both token clients get for ``client`` of ``authority``."""
    app = authority.client(client)
    options.setdefault("client_secret", app.secret)
    return {
        "client_id": app.client_id,
        "tenant_id": authority.tenant_id,
        "authority_host": authority.host,
        "clock": clock,
        **options,
    }


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
        source = on or authority
        sleeps = Sleeps()
        http = httpx.Client(transport=transport or source.transport())
        tc = TokenClient(
            http_client=http, sleep=sleeps, **_settings(source, client, clock, options)
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
        source = on or authority
        sleeps = Sleeps()
        http = httpx.AsyncClient(transport=transport or source.transport())
        settings = _settings(source, client, clock, options)
        tc = AsyncTokenClient(http_client=http, sleep=sleeps.asleep, **settings)
        return tc, sleeps

    return make
