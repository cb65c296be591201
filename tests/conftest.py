"""Fixtures and options shared by every test: the fake clock, the local authority, the
calc-api scope, a client certificate, a transport that interleaves, a real redis-server,
Hypothesis profiles and the ``slow`` marker.

Hypothesis: ``--hypothesis-profile=ci`` runs thousands of examples per property (CI);
the default profile keeps local runs quick. ``--run-slow`` runs ``@pytest.mark.slow`` tests.
``redis_server``: in CI (``CI=true``) a missing ``redis-server`` fails the test; elsewhere it
is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import settings
from tests.support import START, RedisServer

from ccflow.authority import Authority
from ccflow.testing import CertificateMaterial, client_certificate

settings.register_profile("default", max_examples=150)
settings.register_profile("ci", max_examples=2000)
settings.load_profile("default")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", help="also run tests marked @pytest.mark.slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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
        """Move time forward."""
        self.now += seconds

    def wait_calls(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until the clock has been read ``count`` times in all."""
        with self.cond:
            return self.cond.wait_for(lambda: self.calls >= count, timeout=timeout)


class YieldingTransport(httpx.AsyncBaseTransport):
    """Hands each request to ``handler`` after yielding to the event loop a few times, so
    concurrent requests really interleave (the authority's own transport never yields)."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(5):
            await asyncio.sleep(0)
        await request.aread()
        return self.handler(request)


@pytest.fixture(autouse=True)
def _no_imds(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches Azure's IMDS: a ManagedIdentity that would use the default host (no
    AZURE_POD_IDENTITY_AUTHORITY_HOST, no IDENTITY_ENDPOINT) fails at once instead."""

    def refuse() -> str:
        raise AssertionError(
            "this test would reach IMDS at 169.254.169.254: point ManagedIdentity at the local "
            "authority (authority.identity_environ())"
        )

    monkeypatch.setattr("ccflow._managed_identity._default_imds_host", refuse)


@pytest.fixture(autouse=True)
def _own_token_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ccflow token`` caches tokens under $XDG_CACHE_HOME: each test gets its own, never
    the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (``@pytest.mark.anyio``)."""
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    """The test's clock, at ``START`` (2026-01-01T00:00:00Z) until advanced."""
    return FakeClock()


@pytest.fixture
def authority(clock: FakeClock) -> Authority:
    """The local authority on the test's clock; it reads the time without counting, so
    ``clock.calls`` counts only the code under test."""
    return Authority(clock=lambda: clock.now)


@pytest.fixture(scope="module")
def cert() -> CertificateMaterial:
    """A client certificate with its private key (one per module: generation is slow)."""
    return client_certificate()


@pytest.fixture
def scope(authority: Authority) -> str:
    """The calc-api's ``.default`` scope."""
    return authority.api("calc-api").default_scope


@pytest.fixture
def yielding_transport() -> type[YieldingTransport]:
    """The transport class that yields to the event loop before answering."""
    return YieldingTransport


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server, stopped after the test."""
    executable = shutil.which("redis-server")
    if executable is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run installs it", pytrace=False)
        pytest.skip(reason)
    server = RedisServer(executable, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
