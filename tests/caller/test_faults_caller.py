"""Caller side under token endpoint faults: timeouts, drops, 5xx, 429 + Retry-After, garbage,
HTML, slow answers.

- With a valid cached token, callers keep getting it while the endpoint fails, and the
  endpoint is asked again at most once per back-off period (30 s, or its Retry-After).
- With none, every concurrent caller gets the same documented error after the documented
  number of attempts, with the documented waits (recorded through ``sleep=``, never slept).
- Throughout, at most one POST per cache key is in flight (counted by the transport).

The clock is a fake; POSTs are held with a condition until the other callers have joined.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import pytest
from tests.support import client_settings, run_in_threads

from ccflow import AccessToken, AuthorityUnreachableError, TokenRequestError
from ccflow.authority import Authority, AuthorityServer, Fault

if TYPE_CHECKING:
    from tests.caller.conftest import AsyncClientFactory, ClientFactory, Sleeps
    from tests.conftest import FakeClock


N = 16
TIMEOUT = 10.0
RETRIES = 2


class Counting:
    """A transport handler onto the authority that counts POSTs in flight (and can hold them)."""

    def __init__(self, authority: Authority, clock: FakeClock) -> None:
        self.authority = authority
        self.clock = clock
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold_until_calls: int | None = None
        self.held: list[bool] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold_until_calls is not None:
                target, self.hold_until_calls = self.hold_until_calls, None
                self.held.append(self.clock.wait_calls(target, TIMEOUT))
            return self.authority.handle(request)
        finally:
            with self.lock:
                self.in_flight -= 1


# (id, fault, error type, message fragment, retried?, recorded waits when retried)
FAULTS: list[tuple[str, Fault, type[Exception], str, bool, list[float] | None]] = [
    ("timeout", Fault(timeout=True), AuthorityUnreachableError, "timed out", True, None),
    ("drop", Fault(drop=True), AuthorityUnreachableError, "could not connect", True, None),
    ("503", Fault(status=503), TokenRequestError, "HTTP 503", True, None),
    ("500-empty", Fault(status=500, body=b""), TokenRequestError, "empty body", True, None),
    (
        "429-retry-after",
        Fault(status=429, retry_after="7"),
        TokenRequestError,
        "HTTP 429",
        True,
        [7.0, 7.0],
    ),
    (
        "429-huge-retry-after",
        Fault(status=429, retry_after="86400"),
        TokenRequestError,
        "HTTP 429",
        True,
        [30.0, 30.0],
    ),
    (
        "502-html",
        Fault(status=502, body=b"<html><h1>Bad gateway</h1></html>"),
        TokenRequestError,
        "HTML page",
        True,
        None,
    ),
    (
        "200-garbage",
        Fault(body=b"\x00\xffnot json"),
        AuthorityUnreachableError,
        "without a usable token",
        False,
        None,
    ),
    (
        "200-html",
        Fault(body=b"<!doctype html><p>login</p>"),
        AuthorityUnreachableError,
        "without a usable token",
        False,
        None,
    ),
    ("400-garbage", Fault(status=400, body=b"oops"), TokenRequestError, "not JSON", False, None),
]


class FaultCase(NamedTuple):
    """One row of FAULTS, without its id."""

    fault: Fault
    error: type[Exception]
    fragment: str
    retried: bool
    waits: list[float] | None


ON_FAULTS = pytest.mark.parametrize(
    "case", [pytest.param(FaultCase(*f[1:]), id=f[0]) for f in FAULTS]
)


@ON_FAULTS
def test_cold_threads_share_one_documented_error(
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    case: FaultCase,
) -> None:
    fault, error, fragment, retried, waits = case
    counting = Counting(authority, clock)
    # Hold the first POST until all N callers hold the flight (leader 2 reads, others 1).
    counting.hold_until_calls = 2 + (N - 1)
    tc, sleeps = sync_client(transport=httpx.MockTransport(counting), max_retries=RETRIES)
    authority.set_fault("token", fault)
    scope = authority.api("calc-api").default_scope
    results: list[Any] = []
    barrier = threading.Barrier(N, timeout=TIMEOUT)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(tc.get_token(scope))
        except Exception as exc:
            results.append(exc)

    run_in_threads(worker, N, TIMEOUT)
    assert counting.held == [True]
    attempts = RETRIES + 1 if retried else 1
    assert authority.hits["token"] == attempts
    assert counting.max_in_flight == 1
    assert len(results) == N
    assert all(isinstance(r, error) for r in results)
    # One error, shared: each thread raises its own copy of it (one object raised in many
    # threads would collect every thread's frames in its traceback).
    assert len({(type(r), str(r), getattr(r, "status_code", None)) for r in results}) == 1
    assert fragment in str(results[0])
    assert len(sleeps) == attempts - 1
    if waits is not None:
        assert sleeps == waits
    else:
        assert all(0.25 <= s <= 8.0 for s in sleeps)  # 0.5 * 2**n, equal jitter


@pytest.mark.anyio
@ON_FAULTS
async def test_cold_tasks_share_one_documented_error(
    async_client: AsyncClientFactory,
    authority: Authority,
    clock: FakeClock,
    case: FaultCase,
) -> None:
    fault, error, fragment, retried, waits = case
    counting = Counting(authority, clock)
    tc, sleeps = async_client(transport=httpx.MockTransport(counting), max_retries=RETRIES)
    authority.set_fault("token", fault)
    scope = authority.api("calc-api").default_scope
    async with tc:
        results = await asyncio.gather(
            *(tc.get_token(scope) for _ in range(N)), return_exceptions=True
        )
    attempts = RETRIES + 1 if retried else 1
    assert authority.hits["token"] == attempts
    assert counting.max_in_flight == 1
    assert all(isinstance(r, error) for r in results)
    assert fragment in str(results[0])
    assert len(sleeps) == attempts - 1
    if waits is not None:
        assert sleeps == waits


@ON_FAULTS
def test_a_valid_cached_token_keeps_being_served_through_the_outage(
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    case: FaultCase,
) -> None:
    fault, error, fragment, retried, _ = case
    counting = Counting(authority, clock)
    tc, sleeps = sync_client(transport=httpx.MockTransport(counting), max_retries=RETRIES)
    scope = authority.api("calc-api").default_scope
    first = tc.get_token(scope)
    authority.set_fault("token", fault)
    clock.advance(3300)  # refresh due (margin 300 s), 299 s of validity left
    served = 0
    while clock.now < first.expires_on:
        assert tc.get_token(scope) is first
        served += 1
        clock.advance(5)
    assert served == 60
    # One attempt each time the refresh comes due again: 30 s on, or the server's Retry-After.
    back_off = {"7": 7.0, "86400": 86400.0}.get(fault.retry_after or "", 30.0)
    assert 1 <= authority.hits["token"] - 1 <= 300 / back_off + 1
    assert sleeps == []  # nobody waited through a back-off for a token they already had
    # Expired now: the documented error, after the documented attempts.
    before = authority.hits["token"]
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        tc.get_token(scope)
    assert authority.hits["token"] - before == (RETRIES + 1 if retried else 1)
    # The endpoint comes back: the next call gets a new token, no restart needed.
    authority.clear_fault("token")
    fresh = tc.get_token(scope)
    assert isinstance(fresh, AccessToken)
    assert fresh is not first
    assert counting.max_in_flight == 1


@pytest.mark.parametrize(
    ("retry_after", "quiet_steps", "last_step"),
    [
        # The server asked for 120 s: not asked again before.
        pytest.param("120", [119], 1, id="a-long-retry-after-postpones-the-next-attempt"),
        # 429 + "Retry-After: 7" while the cached token has 299 s left: the server's 7 s is a
        # minimum, so the next attempt comes after the usual 30 s, not every 7 s.
        pytest.param("7", [7, 7, 7, 7], 2, id="a-short-retry-after-is-no-more-frequent"),
    ],
)
def test_429_retry_after_spaces_refresh_attempts(
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    retry_after: str,
    quiet_steps: list[int],
    last_step: int,
) -> None:
    tc, sleeps = sync_client()
    scope = authority.api("calc-api").default_scope
    first = tc.get_token(scope)
    authority.set_fault("token", Fault(status=429, retry_after=retry_after))
    clock.advance(3300)
    assert tc.get_token(scope) is first
    assert authority.hits["token"] == 2
    for step in quiet_steps:
        clock.advance(step)
        assert tc.get_token(scope) is first
    assert authority.hits["token"] == 2  # not asked again yet
    clock.advance(last_step)
    assert tc.get_token(scope) is first
    assert authority.hits["token"] == 3
    assert sleeps == []


def test_a_slow_server_is_a_timeout_error_after_the_retries(sleeps: Sleeps) -> None:
    # The real server answers only after `delay` seconds; the client gives up after 0.05 s.
    with AuthorityServer() as server:
        authority = server.authority
        authority.set_fault("token", Fault(timeout=True, delay=0.5))
        from ccflow import TokenClient

        with (
            TokenClient(
                **client_settings(authority), max_retries=1, timeout=0.05, sleep=sleeps
            ) as tc,
            pytest.raises(AuthorityUnreachableError, match="timed out"),
        ):
            tc.get_token(authority.api("calc-api").default_scope)
        assert len(sleeps) == 1
        assert authority.hits["token"] == 2


def _retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ccflow" and r.getMessage().startswith("retrying")
    ]


def test_each_retry_wait_is_announced_at_info_with_its_cause(
    sync_client: ClientFactory, authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    # A slow authority was silent for the whole backoff (the line was at DEBUG, without cause).
    tc, sleeps = sync_client(max_retries=2)
    authority.set_fault("token", Fault(status=503))
    with caplog.at_level(logging.INFO, logger="ccflow"), pytest.raises(TokenRequestError):
        tc.get_token(authority.api("calc-api").default_scope)
    assert len(sleeps) == 2
    assert _retry_lines(caplog) == [f"retrying in {s:.2g} s after 503" for s in sleeps]


@pytest.mark.anyio
async def test_each_async_retry_wait_is_announced_too(
    async_client: AsyncClientFactory, authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    tc, sleeps = async_client(max_retries=1)
    authority.set_fault("token", Fault(status=429, retry_after="3"))
    async with tc:
        with caplog.at_level(logging.INFO, logger="ccflow"), pytest.raises(TokenRequestError):
            await tc.get_token(authority.api("calc-api").default_scope)
    assert sleeps == [3.0]
    assert _retry_lines(caplog) == ["retrying in 3 s after 429"]
