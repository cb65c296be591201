"""Helpers for the caller-side tests: a counting fake clock and clients on the local authority."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from ccflow import AsyncTokenClient, TokenClient
from ccflow.authority import Authority

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    """Unix seconds that move only when told; counts reads so tests know who got how far."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.calls = 0
        self.cond = threading.Condition()

    def __call__(self) -> float:
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def wait_calls(self, count: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.calls >= count, timeout=timeout)


class Sleeps(list[float]):
    """Records backoff waits instead of sleeping (sync and async)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)


def sync_client(
    authority: Authority,
    clock: FakeClock,
    *,
    transport: httpx.BaseTransport | None = None,
    client: str = "calc-client",
    **options: Any,
) -> tuple[TokenClient, Sleeps]:
    app = authority.client(client)
    options.setdefault("client_secret", app.secret)
    sleeps = Sleeps()
    tc = TokenClient(
        client_id=app.client_id,
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        http_client=httpx.Client(transport=transport or authority.transport()),
        clock=clock,
        sleep=sleeps,
        **options,
    )
    return tc, sleeps


def async_client(
    authority: Authority,
    clock: FakeClock,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    client: str = "calc-client",
    **options: Any,
) -> tuple[AsyncTokenClient, Sleeps]:
    app = authority.client(client)
    options.setdefault("client_secret", app.secret)
    sleeps = Sleeps()
    tc = AsyncTokenClient(
        client_id=app.client_id,
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        http_client=httpx.AsyncClient(transport=transport or authority.transport()),
        clock=clock,
        sleep=sleeps.asleep,
        **options,
    )
    return tc, sleeps
