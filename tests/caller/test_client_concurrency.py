"""Single flight: 64 threads or 64 tasks, one POST; the result or the error reaches everyone.

The POST is held open by a transport wrapper until every other caller has piled up. Callers
read the (counting) fake clock under the client's lock when they join a flight, so "the clock
was read N times" means "N callers hold the flight". All waits are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.support import run_in_threads

from ccflow import AccessToken, CacheEntry, MemoryTokenCache, TokenClient, TokenKey
from ccflow.authority import Authority
from ccflow.errors import TokenRequestError

if TYPE_CHECKING:
    from tests.caller.conftest import AsyncClientFactory, ClientFactory
    from tests.conftest import FakeClock


N = 64
TIMEOUT = 10.0


class Gate:
    """Holds each token POST until ``ready()`` is true (or the timeout passes)."""

    def __init__(
        self,
        authority: Authority,
        ready: Callable[[], bool],
        cond: threading.Condition | None = None,
    ) -> None:
        self.authority = authority
        self.ready = ready
        self.held_until_ready: list[bool] = []
        # Notified whenever ready() may have changed (the fake clock notifies on each read).
        self.cond = cond or threading.Condition()

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def sync_handler(self, request: httpx.Request) -> httpx.Response:
        with self.cond:
            self.held_until_ready.append(self.cond.wait_for(self.ready, timeout=TIMEOUT))
        return self.authority.handle(request)

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        for _ in range(10_000):  # bounded: each round lets every other task run once
            if self.ready():
                break
            await asyncio.sleep(0)
        self.held_until_ready.append(self.ready())
        await request.aread()
        return self.authority.handle(request)


def run_threads(client: TokenClient, scope: str, gate: Gate | None = None) -> list[Any]:
    results: list[Any] = []
    lock = threading.Lock()
    barrier = threading.Barrier(N, timeout=TIMEOUT)

    def worker() -> None:
        barrier.wait()
        try:
            outcome: Any = client.get_token(scope)
        except Exception as exc:
            outcome = exc
        with lock:
            results.append(outcome)
        if gate is not None:
            gate.notify()

    run_in_threads(worker, N, TIMEOUT)
    return results


def test_threads_on_a_cold_cache_make_one_post(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # Leader: one read joining, one for the credential; each other thread: one read joining.
    gate = Gate(authority, lambda: clock.calls >= 2 + (N - 1), clock.cond)
    tc, _ = sync_client(transport=httpx.MockTransport(gate.sync_handler))
    results = run_threads(tc, scope)
    assert gate.held_until_ready == [True]
    assert authority.hits["token"] == 1
    assert len(results) == N
    assert all(isinstance(r, AccessToken) for r in results)
    assert len({id(r) for r in results}) == 1


def test_an_error_in_the_post_reaches_every_waiter(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    gate = Gate(authority, lambda: clock.calls >= 2 + (N - 1), clock.cond)
    tc, _ = sync_client(transport=httpx.MockTransport(gate.sync_handler), client_secret="wrong")
    results = run_threads(tc, scope)
    assert gate.held_until_ready == [True]
    assert authority.hits["token"] == 1
    assert len(results) == N
    assert all(isinstance(r, TokenRequestError) for r in results)
    assert {r.aadsts_code for r in results} == {7000215}


def test_a_failure_storing_the_token_reaches_every_waiter_and_frees_the_flight(
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Storing can fail only in odd ways (a user's cache raising); the waiters must get that
    # error, not wait for a flight nobody finishes.
    class BrokenCache(MemoryTokenCache):
        broken = True

        def put(self, key: TokenKey, entry: CacheEntry, now: float) -> None:
            if self.broken:
                raise RuntimeError("the cache broke")
            super().put(key, entry, now)

    cache = BrokenCache()
    gate = Gate(authority, lambda: clock.calls >= 2 + (N - 1), clock.cond)
    tc, _ = sync_client(transport=httpx.MockTransport(gate.sync_handler), cache=cache)
    results = run_threads(tc, scope)
    assert len(results) == N
    assert all(isinstance(r, RuntimeError) for r in results)
    cache.broken = False
    gate.ready = lambda: True
    assert isinstance(tc.get_token(scope), AccessToken)  # the key is not stuck in flight


def test_threads_after_expiry_make_one_post(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    gate = Gate(authority, lambda: True, clock.cond)
    tc, _ = sync_client(transport=httpx.MockTransport(gate.sync_handler))
    old = tc.get_token(scope)
    clock.advance(3599)
    base = clock.calls
    # Now every thread also reads the clock on the fast path before it falls through.
    gate.ready = lambda: clock.calls >= base + 3 + 2 * (N - 1)
    results = run_threads(tc, scope)
    assert gate.held_until_ready == [True, True]
    assert authority.hits["token"] == 2
    assert len({id(r) for r in results}) == 1
    assert results[0] is not old


def test_threads_at_refresh_time_make_one_post_and_nobody_waits(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    results: list[Any] = []
    gate = Gate(authority, lambda: True)
    tc, _ = sync_client(transport=httpx.MockTransport(gate.sync_handler))
    old = tc.get_token(scope)
    clock.advance(3300)  # stale: past the margin, still valid
    # Hold the refresh until the other threads have all been answered with the valid token.
    gate.ready = lambda: len(results) >= N - 1
    run_threads_collecting(tc, scope, gate, results)
    served = [r for r in results if isinstance(r, AccessToken)]
    assert gate.held_until_ready == [True, True]
    assert authority.hits["token"] == 2
    assert len(served) == N
    assert sum(r is old for r in served) == N - 1
    assert tc.get_token(scope) is not old


def run_threads_collecting(client: TokenClient, scope: str, gate: Gate, results: list[Any]) -> None:
    barrier = threading.Barrier(N, timeout=TIMEOUT)

    def worker() -> None:
        barrier.wait()
        outcome: Any = client.get_token(scope)
        with gate.cond:
            results.append(outcome)
            gate.cond.notify_all()

    run_in_threads(worker, N, TIMEOUT)


def test_different_keys_do_not_block_each_other(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    release = threading.Event()
    held = threading.Event()
    other_scope = authority.api("calc-api").client_id + "/.default"

    def handler(request: httpx.Request) -> httpx.Response:
        if b"scope=api" in request.content:  # the App ID URI scope is held, the other is not
            held.set()
            assert release.wait(TIMEOUT)
        return authority.handle(request)

    tc, _ = sync_client(transport=httpx.MockTransport(handler))
    slow: list[AccessToken] = []
    t = threading.Thread(target=lambda: slow.append(tc.get_token(scope)))
    t.start()
    try:
        assert held.wait(TIMEOUT)
        assert tc.get_token(other_scope).scopes == (other_scope,)  # while the first is held
        assert not slow
    finally:
        release.set()
        t.join(TIMEOUT)
    assert len(slow) == 1
    assert slow[0].scopes == (scope,)


# -- asyncio tasks --


@pytest.mark.anyio
async def test_tasks_on_a_cold_cache_make_one_post(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    gate = Gate(authority, lambda: clock.calls >= 2 + (N - 1), clock.cond)
    tc, _ = async_client(transport=httpx.MockTransport(gate.async_handler))
    async with tc:
        results = await asyncio.gather(*(tc.get_token(scope) for _ in range(N)))
    assert gate.held_until_ready == [True]
    assert authority.hits["token"] == 1
    assert len({id(r) for r in results}) == 1


@pytest.mark.anyio
async def test_an_error_reaches_every_task(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    gate = Gate(authority, lambda: clock.calls >= 2 + (N - 1), clock.cond)
    tc, _ = async_client(transport=httpx.MockTransport(gate.async_handler), client_secret="bad")
    results = await asyncio.gather(*(tc.get_token(scope) for _ in range(N)), return_exceptions=True)
    assert gate.held_until_ready == [True]
    assert authority.hits["token"] == 1
    assert all(isinstance(r, TokenRequestError) for r in results)


@pytest.mark.anyio
async def test_tasks_after_expiry_make_one_post(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    gate = Gate(authority, lambda: True)
    tc, _ = async_client(transport=httpx.MockTransport(gate.async_handler))
    old = await tc.get_token(scope)
    clock.advance(3599)
    base = clock.calls
    gate.ready = lambda: clock.calls >= base + 2 + (N - 1)
    results = await asyncio.gather(*(tc.get_token(scope) for _ in range(N)))
    assert gate.held_until_ready == [True, True]
    assert authority.hits["token"] == 2
    assert len({id(r) for r in results}) == 1
    assert results[0] is not old


@pytest.mark.anyio
async def test_tasks_at_refresh_time_make_one_post_and_nobody_waits(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    done: list[AccessToken] = []
    gate = Gate(authority, lambda: True)
    tc, _ = async_client(transport=httpx.MockTransport(gate.async_handler))
    old = await tc.get_token(scope)
    clock.advance(3300)
    gate.ready = lambda: len(done) >= N - 1

    async def one() -> None:
        done.append(await tc.get_token(scope))

    await asyncio.gather(*(one() for _ in range(N)))
    assert gate.held_until_ready == [True, True]
    assert authority.hits["token"] == 2
    assert sum(r is old for r in done) == N - 1
    assert await tc.get_token(scope) is not old


@pytest.mark.anyio
async def test_a_cancelled_caller_does_not_cancel_the_fetch_for_others(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await release.wait()
        await request.aread()
        return authority.handle(request)

    tc, _ = async_client(transport=httpx.MockTransport(handler))
    first = asyncio.ensure_future(tc.get_token(scope))
    second = asyncio.ensure_future(tc.get_token(scope))
    for _ in range(10):
        await asyncio.sleep(0)
    first.cancel()
    release.set()
    token = await asyncio.wait_for(second, TIMEOUT)
    assert first.cancelled()
    assert token.scopes == (scope,)
    assert authority.hits["token"] == 1


def test_each_thread_gets_the_error_with_a_traceback_of_its_own(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # Raising one exception object in 64 threads prepends every thread's frames to the same
    # traceback: a waiter's log showed hundreds of frames from the other threads.
    gate = Gate(authority, lambda: clock.calls >= 2 + (N - 1), clock.cond)
    tc, _ = sync_client(transport=httpx.MockTransport(gate.sync_handler), client_secret="wrong")
    results = run_threads(tc, scope)
    assert all(isinstance(r, TokenRequestError) for r in results)
    assert {str(r) for r in results} == {str(results[0])}
    frames = [len(traceback.extract_tb(r.__traceback__)) for r in results]
    assert max(frames) < 20, frames


@pytest.mark.anyio
async def test_a_fetch_cancelled_before_it_started_does_not_poison_the_scopes(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # A shutdown handler cancelling every task can cancel the fetch task before its first
    # step: its cleanup never ran, and every later get_token() for these scopes awaited the
    # cancelled task again and raised CancelledError, forever.
    tc, _ = async_client()
    async with tc:
        before = asyncio.all_tasks()
        waiter = asyncio.ensure_future(tc.get_token(scope))
        await asyncio.sleep(0)  # the waiter registered the fetch task, which has not run yet
        (fetch,) = asyncio.all_tasks() - before - {waiter}
        fetch.cancel()  # as a shutdown handler cancelling every task would
        with pytest.raises(asyncio.CancelledError):
            await waiter
        token = await tc.get_token(scope)
        assert token.scopes == (scope,)
    assert authority.hits["token"] == 1


@pytest.mark.anyio
async def test_a_waiter_does_not_put_back_a_token_dropped_while_it_was_waking(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = async_client()
    async with tc:

        async def first() -> str:
            # Its API answers 401 at once (an in-process app): the token is dropped before
            # the other caller of the same fetch has resumed.
            token = await tc.get_token(scope)
            tc.invalidate(token, scope)
            return token.token

        async def second() -> str:
            return (await tc.get_token(scope)).token

        dropped, shared = await asyncio.wait_for(asyncio.gather(first(), second()), TIMEOUT)
        assert shared == dropped
        again = await asyncio.wait_for(tc.get_token(scope), TIMEOUT)
        assert again.token != dropped
        assert authority.hits["token"] == 2


def test_the_leader_does_not_put_back_a_token_dropped_right_after_it_was_stored(
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    scope: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tc, _ = sync_client()
    dropped: list[str] = []

    def refused_by_its_api() -> None:
        token = tc.get_token(scope)
        dropped.append(token.token)
        tc.invalidate(token, scope)

    class Racing(logging.Handler):
        """Runs in the leader on its "fetched token" line: after storing, before returning."""

        def emit(self, record: logging.LogRecord) -> None:
            if not dropped and record.getMessage().startswith("fetched token"):
                # Another thread got the just-stored token from the cache, its API answered
                # 401, and it invalidates the token: all before the leader has returned it.
                other = threading.Thread(target=refused_by_its_api)
                other.start()
                other.join(TIMEOUT)
                assert not other.is_alive()

    logger = logging.getLogger("ccflow")
    racing = Racing()
    logger.addHandler(racing)
    try:
        with caplog.at_level(logging.INFO, logger="ccflow"), tc:
            first = tc.get_token(scope)
            assert dropped == [first.token]
            assert tc.get_token(scope).token != first.token
            assert authority.hits["token"] == 2
    finally:
        logger.removeHandler(racing)
